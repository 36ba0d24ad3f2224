"""``safealign run CONFIG --out DIR``: a whole study like the paper's, from one experiment file, into one report.

The run config (``RunConfig`` below; ``configs/quickstart.yaml`` and ``configs/paper.yaml`` are examples) names the
base model, the methods and their settings, the benchmarks, the judges and the seeds. It becomes a list of stages,
each one call into the pieces that do the work (nothing is reimplemented here):

    judge/guard        safealign.judges.get_judge        the shipped guard judge, when the run judges with it:
                                                         writes judge.json (its weights id and held-out accuracy)
    judge/embedded     safealign.judges.get_judge        trains (once per machine) and caches the embedded judge,
                                                         when the run judges with it; writes judge.json (accuracy)
    judge/union        safealign.judges.get_judge        a union judge (the default, union:guard+embedded@0.3+
                                                         refusal=all) or second judge: judge.json with its card
                                                         (union.measure)
    train/sit-n<N>     safealign.recipes.sit.run         one per N in methods.sit.n_safety (the SIT sweep)
    train/rm           safealign.recipes.rm.run
    train/raft         safealign.recipes.raft.run        ranker "rm" = the reward model trained in this run
    train/dpo          safealign.recipes.dpo.run
    eval/rm            safealign.recipes.rm.evaluate     pairwise accuracy of the reward model
    eval/<model>       safealign.eval.run.evaluate       base and every trained generator, every benchmark
    eval/raft-iters    the same, for each intermediate RAFT iteration (methods.raft.eval_iterations: true)
    recheck/<model>    the same answers judged by ``second_judge`` (when set; nothing is generated again)
    compare/<a>-vs-<b> safealign.eval.compare.compare    only when compare.judge is set
    analyze/<a>-vs-<b> safealign.eval.analyze.analyze    and analyze/raft: analyze_raft; analyze2/<a>-vs-<b>:
                                                         the same on the recheck/ dirs (the second judge)
    report             safealign.report.build.build_report

A string ``@<name>`` anywhere in a method section, in ``judge`` or in ``helpful_scorer`` means the model dir of the
stage ``train/<name>`` of this run (``helpful_scorer: rm:@rm``, ``methods.dpo.model: "@sit-n300"``) and makes the
stage depend on it.

Resumable: ``DIR/manifest.json`` (written atomically) maps each stage to {input_hash, status, outputs, seconds}.
The input hash covers the stage's resolved settings and the hashes of the stages it depends on, so a rerun skips
what is done, resumes what was cut (recipes and ``evaluate`` continue in the same dir), and a changed setting
reruns only the stages downstream of it (their old outputs are removed first); a stage redone for any reason
(its outputs deleted, say) makes the stages that used it redo too.

``jobs: 2`` runs two stages at once, each in its own process (``safealign run --stage NAME --out DIR``) with
cores/jobs CPU threads, as soon as what they depend on is done: on a small CPU two single-threaded processes get
more done than one process using both cores. Their output goes to ``DIR/logs/<stage>.log``.

Where each part lives: ``config`` (the run config), ``plan`` (config → stages), ``stages`` (what each stage calls),
``manifest`` (stages and the manifest), ``scheduler`` (running them), ``runner`` (``run`` and ``run_one_stage``);
``safealign.dryrun`` prints a plan.
"""

from safealign.pipeline.config import (METHODS, PIPELINE_VERSION, CompareConfig, Methods, ReportConfig, RewardEval,
                                       RunConfig, load_run_config)
from safealign.pipeline.manifest import Manifest, Stage, input_hashes, stable_hash
from safealign.pipeline.plan import models_of, plan
from safealign.pipeline.runner import run, run_one_stage
from safealign.pipeline.scheduler import run_lock, run_stages, stage_state

__all__ = ["METHODS", "PIPELINE_VERSION", "CompareConfig", "Manifest", "Methods", "ReportConfig", "RewardEval",
           "RunConfig", "Stage", "input_hashes", "load_run_config", "models_of", "plan", "run", "run_lock",
           "run_one_stage", "run_stages", "stable_hash", "stage_state"]
