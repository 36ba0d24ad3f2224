"""``safealign run CONFIG --out DIR``: a whole study like the paper's, from one experiment file, into one report.

The run config (``RunConfig`` below; ``configs/quickstart.yaml`` and ``configs/paper.yaml`` are examples) names the
base model, the methods and their settings, the benchmarks, the judges and the seeds. It becomes a list of stages,
each one call into the pieces that do the work (nothing is reimplemented here):

    judge/guard        safealign.judges.get_judge        the shipped guard judge, when the run judges with it:
                                                         writes judge.json (its weights id and held-out accuracy)
    judge/embedded     safealign.judges.get_judge        trains (once per machine) and caches the embedded judge,
                                                         when the run judges with it; writes judge.json (accuracy)
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safealign import dryrun
from safealign.config import from_dict, option, to_dict
from safealign.errors import SafealignError
from safealign.generate import GenParams
from safealign.models import inference_precision

PIPELINE_VERSION = 1  # part of every input hash; bump when a stage's meaning changes
METHODS = ("sit", "rm", "raft", "dpo")  # the order they train in, unless references say otherwise
PIPELINE_KEYS = {"enabled", "eval_iterations"}  # keys of a method section the pipeline reads, not the recipe


@dataclass
class Methods:
    sit: dict[str, Any] | None = option(None, "SIT (safealign.recipes.sit.Config); n_safety may be a list: one model "
                                              "per value (the sweep). enabled: false skips it")
    rm: dict[str, Any] | None = option(None, "reward model (safealign.recipes.rm.Config)")
    raft: dict[str, Any] | None = option(None, "RAFT (safealign.recipes.raft.Config); ranker: rm = the reward model "
                                               "of this run; eval_iterations: true evaluates every iteration")
    dpo: dict[str, Any] | None = option(None, "DPO (safealign.recipes.dpo.Config)")


@dataclass
class CompareConfig:
    judge: str | None = option(None, "pairwise judge (a judge model, e.g. openai:<model>); unset: no compare stages")
    pairs: list[list[str]] | None = option(None, "model pairs [a, b]; default: base vs every trained model")
    limit: int | None = option(None, "compare at most N prompts per pair")
    base_url: str | None = option(None, "OpenAI-compatible server for an openai:<model> judge")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding that server's API key")


@dataclass
class RewardEval:
    datasets: list[str] = option(["pku-safe-pairs:test", "hh-harmless"], "preference sets for the RM's accuracy")
    limit: int | None = option(None, "first N pairs of each set")


@dataclass
class ReportConfig:
    examples: int = option(5, "prompts shown side by side (base vs each method)")
    title: str | None = option(None, "report title (default: the config file's name)")


@dataclass
class RunConfig:
    model: str = option("smollm2-135m-instruct", "base model: embedded name, HF id, model dir or .gguf")
    seed: int = option(0, "seed for every method and for sampling, unless a section sets its own")
    judge: str = option("guard", "safety judge for every eval: guard (shipped), embedded, keywords, hf-classifier:M, "
                        "llama-guard:M, openai:M or rm:DIR (src/safealign/judges/)")
    second_judge: str | None = option(None, "a second safety judge that re-reads every eval's answers (nothing is "
                                            "generated again); the report shows each method's effect under both, so "
                                            "that a method trained against `judge` (RAFT ranked by it) is also seen "
                                            "by a judge it was not trained against")
    helpful_scorer: str | None = option(None, "reward scorer for helpfulness, e.g. rm:@rm (the RM of this run)")
    benchmarks: str = option("harm,xstest,benign,helpful", "benchmarks and groups to evaluate every model on")
    limit: int | None = option(None, "first N prompts of each benchmark (XSTest: N of each half)")
    generation: GenParams = field(default_factory=GenParams, metadata={"help": "generation settings for evals"})
    methods: Methods = field(default_factory=Methods, metadata={"help": "methods to train"})
    compare: CompareConfig = field(default_factory=CompareConfig, metadata={"help": "pairwise comparisons"})
    analyze: bool = option(True, "write confusion tables / flips for base vs every method, and RAFT's iterations")
    reward_eval: RewardEval = field(default_factory=RewardEval, metadata={"help": "reward-model accuracy"})
    report: ReportConfig = field(default_factory=ReportConfig, metadata={"help": "report settings"})
    jobs: int = option(1, "stages run at once, each in its own process with cores/jobs threads (on a small CPU, 2 "
                          "finishes a run sooner than 1 process using both cores); logs go to DIR/logs/")


@dataclass
class Stage:
    """One step of a run: ``action(out)`` writes into ``out``; ``settings`` (+ deps' hashes) is its input hash."""

    name: str
    settings: dict[str, Any]
    action: Callable[[Path], Any]
    out: Path
    deps: list[str] = field(default_factory=list)
    describe: Callable[[], dict[str, str]] | None = None  # what `run --dry-run` prints of it (safealign.dryrun)


# --------------------------------------------------------------------------------------------------- the manifest

class Manifest:
    """``DIR/manifest.json``, rewritten atomically on every change::

        {"version", "source" (the config file), "config" (resolved), "plan": [stage, ...] (this run's, in order),
         "models": {name: {"method", "train" (stage or null), "eval" (stage), "n_safety"}},
         "stages": {stage: {"input_hash", "status": running|failed|done, "outputs": [paths in DIR], "seconds",
                            "cpu_seconds", "attempts", "started", "finished", "error",
                            "inputs": {dependency: its "finished" when this stage started}}}}
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"version": PIPELINE_VERSION, "stages": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError:
                raise SafealignError("corrupt run manifest; remove it to start over", file=str(path)) from None
            self.data.setdefault("stages", {})

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def update(self, stage: str | None = None, **fields: Any) -> None:
        if stage is None:
            self.data.update(fields)
        else:
            self.stages.setdefault(stage, {}).update(fields)
        write_json(self.path, self.data)


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temp file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, default=str))


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_hashes(stages: list[Stage]) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for st in stages:
        missing = [d for d in st.deps if d not in hashes]
        if missing:
            raise ValueError(f"stage {st.name} depends on {missing}, which do not come before it")
        hashes[st.name] = stable_hash({"v": PIPELINE_VERSION, "stage": st.name, "settings": st.settings,
                                       "deps": {d: hashes[d] for d in st.deps}})
    return hashes


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One ``safealign run`` per run dir at a time (an OS lock, released if the process dies)."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SafealignError("another `safealign run` is using this run dir", file=str(run_dir), field="out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stage_state(stages: list[Stage], manifest: Manifest) -> dict[str, str]:
    """For each stage: ``done`` (skip it), ``resume`` (cut before the end, same inputs: continue in place),
    ``changed`` (its settings changed), ``stale`` (a stage it depends on is redone, or was redone after it) or
    ``new``; changed and stale stages start over."""
    hashes = input_hashes(stages)
    state: dict[str, str] = {}
    for st in stages:
        rec = manifest.stages.get(st.name)
        if rec is None:
            state[st.name] = "new"
        elif rec.get("input_hash") != hashes[st.name]:
            state[st.name] = "changed"
        elif any(state[d] != "done" or (rec.get("inputs") or {}).get(d) != manifest.stages[d].get("finished")
                 for d in st.deps):
            state[st.name] = "stale"
        elif rec.get("status") == "done" and st.out.exists():
            state[st.name] = "done"
        else:
            state[st.name] = "resume"
    return state


def run_stages(stages: list[Stage], run_dir: Path, manifest: Manifest | None = None,
               log: Callable[[str], None] = _log, jobs: int = 1,
               spawn: Callable[[Stage, Path], subprocess.Popen] | None = None) -> Manifest:
    """Run ``stages``, skipping the finished ones whose input hash is unchanged.

    ``jobs`` > 1 (with ``spawn``, which starts one stage in a child process writing to the given log file) runs up
    to ``jobs`` stages at once as soon as the stages they depend on are done; otherwise they run here, in order.
    """
    manifest = manifest or Manifest(run_dir / "manifest.json")
    hashes = input_hashes(stages)
    state = stage_state(stages, manifest)
    number = {st.name: i for i, st in enumerate(stages, 1)}
    t_run = time.time()

    def head(st: Stage) -> str:
        return f"[{number[st.name]}/{len(stages)}] {st.name}"

    def begin(st: Stage) -> dict[str, Any]:
        rec = dict(manifest.stages.get(st.name, {}))
        if state[st.name] in ("changed", "stale"):
            log(f"{head(st)}: " + ("settings changed" if state[st.name] == "changed" else "an input was redone")
                + ", redoing it")
            _remove(st.out, run_dir)
            rec = {}
        elif state[st.name] == "resume":
            log(f"{head(st)}: resuming")
        else:
            log(f"{head(st)} ...")
        manifest.update(st.name, input_hash=hashes[st.name], status="running", started=time.time(), error=None,
                        outputs=[_rel(st.out, run_dir)], seconds=float(rec.get("seconds", 0.0)),
                        attempts=int(rec.get("attempts", 0)) + 1,
                        inputs={d: manifest.stages[d].get("finished") for d in st.deps})
        return rec

    def end(st: Stage, rec: dict[str, Any], t0: float, cpu: float, error: str | None = None) -> None:
        fields: dict[str, Any] = {"seconds": float(rec.get("seconds", 0.0)) + time.time() - t0}
        if error is None:
            fields.update(status="done", finished=time.time(), cpu_seconds=float(rec.get("cpu_seconds", 0.0)) + cpu)
            log(f"{head(st)}: done in {_fmt_seconds(time.time() - t0)}")
        else:
            fields.update(status="failed", error=error)
        manifest.update(st.name, **fields)

    done = set()
    for st in stages:
        if state[st.name] == "done":
            log(f"{head(st)}: up to date ({manifest.stages[st.name].get('seconds', 0):.1f} s before), skipped")
            done.add(st.name)
    todo = [st for st in stages if st.name not in done]

    if jobs <= 1 or spawn is None:
        for st in todo:
            rec, t0, c0 = begin(st), time.time(), _cpu_seconds()
            try:
                st.action(st.out)
            except BaseException as e:
                end(st, rec, t0, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                raise
            end(st, rec, t0, _cpu_seconds() - c0)
    else:
        _run_parallel(todo, done, run_dir, jobs, spawn, begin, end, log)
    log(f"all {len(stages)} stages finished; this run took {_fmt_seconds(time.time() - t_run)}")
    return manifest


def stage_log(run_dir: Path, name: str) -> Path:
    return run_dir / "logs" / f"{name}.log"


def _run_parallel(todo: list[Stage], done: set[str], run_dir: Path, jobs: int,
                  spawn: Callable[[Stage, Path], subprocess.Popen], begin: Callable, end: Callable,
                  log: Callable[[str], None]) -> None:
    """Up to ``jobs`` child processes at once; a stage starts when every stage it depends on is done."""
    running: dict[int, tuple[Stage, dict[str, Any], float, subprocess.Popen]] = {}
    failure: str | None = None
    last_beat = time.time()
    try:
        while todo or running:
            if failure is None:
                for st in list(todo):
                    if len(running) >= jobs:
                        break
                    if all(d in done for d in st.deps):
                        todo.remove(st)
                        rec = begin(st)
                        path = stage_log(run_dir, st.name)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        proc = spawn(st, path)
                        running[proc.pid] = (st, rec, time.time(), proc)
            if not running:
                break  # what is left waits on a failed stage
            time.sleep(0.2)
            for pid in list(running):
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got == 0:
                    continue
                st, rec, t0, proc = running.pop(pid)
                proc.returncode = code = os.waitstatus_to_exitcode(status)
                if code == 0:
                    end(st, rec, t0, usage.ru_utime + usage.ru_stime)
                    done.add(st.name)
                    continue
                last = _last_line(stage_log(run_dir, st.name))
                end(st, rec, t0, 0.0, f"exit {code}: {last}")
                failure = failure or f"stage {st.name} failed ({last}); its log: {stage_log(run_dir, st.name)}"
                for other in list(running):  # stop the others; a rerun resumes them
                    running[other][3].terminate()
            if running and time.time() - last_beat > 60:
                last_beat = time.time()
                log("  running: " + ", ".join(f"{st.name} ({_fmt_seconds(time.time() - t0)})"
                                              for st, _, t0, _ in running.values()))
    except BaseException:
        for st, rec, t0, proc in running.values():
            proc.terminate()
        for st, rec, t0, proc in running.values():
            proc.wait()
            end(st, rec, t0, 0.0, "interrupted")
        raise
    if failure:
        raise SafealignError(failure)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), to tell work from waiting."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60)} s"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _remove(path: Path, run_dir: Path) -> None:
    """Remove a stage's old outputs, never anything outside the run dir."""
    p, root = path.resolve(), run_dir.resolve()
    if p == root or root not in p.parents:
        raise ValueError(f"refusing to remove {p}: not inside {root}")
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


# ------------------------------------------------------------------------------------------------------ the plan

_REF = re.compile(r"@([a-z0-9][a-z0-9._-]*)")


def _refs(obj: Any) -> set[str]:
    if isinstance(obj, str):
        return set(_REF.findall(obj))
    if isinstance(obj, dict):
        return set().union(*(_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    return set()


def _resolve(obj: Any, dirs: dict[str, Path]) -> Any:
    """Replace ``@name`` by the model dir of ``train/name`` (names not trained in this run are left alone)."""
    if isinstance(obj, str):
        return _REF.sub(lambda m: str(dirs[m.group(1)]) if m.group(1) in dirs else m.group(0), obj)
    if isinstance(obj, dict):
        return {k: _resolve(v, dirs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, dirs) for v in obj]
    return obj


@dataclass
class TrainSpec:
    name: str  # sit-n300, rm, raft, dpo
    method: str
    section: dict[str, Any]  # the recipe's section as written (with @refs), pipeline keys removed
    extra: dict[str, Any]  # pipeline keys (eval_iterations, ...)
    generator: bool  # evaluated as a model (everything but the reward model)


def _method_sections(cfg: RunConfig, source: str) -> list[TrainSpec]:
    specs: list[TrainSpec] = []
    for method in METHODS:
        sec = getattr(cfg.methods, method)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise SafealignError("expected a mapping of the recipe's settings", file=source, field=f"methods.{method}")
        sec = dict(sec)
        extra = {k: sec.pop(k) for k in list(sec) if k in PIPELINE_KEYS}
        if extra.get("enabled", True) is False:
            continue
        if method == "raft" and sec.get("ranker") == "rm":
            sec["ranker"] = "rm:@rm"
        if method == "sit" and isinstance(sec.get("n_safety"), list):
            if not sec["n_safety"] or len(set(sec["n_safety"])) != len(sec["n_safety"]):
                raise SafealignError("a sweep needs distinct values", file=source, field="methods.sit.n_safety")
            for n in sec["n_safety"]:
                specs.append(TrainSpec(f"sit-n{n}", method, {**sec, "n_safety": n}, extra, True))
        elif method == "sit" and "n_safety" in sec:
            specs.append(TrainSpec(f"sit-n{sec['n_safety']}", method, sec, extra, True))
        else:
            specs.append(TrainSpec(method, method, sec, extra, method != "rm"))
    return specs


def _recipe(method: str):
    try:
        return importlib.import_module(f"safealign.recipes.{method}")
    except ModuleNotFoundError as e:
        if e.name == f"safealign.recipes.{method}":
            raise SafealignError(f"this safealign has no '{method}' recipe", field=f"methods.{method}") from None
        raise


def _recipe_config(method: str, section: dict[str, Any], cfg: RunConfig, source: str, prefix: str) -> Any:
    module = _recipe(method)
    names = {f.name for f in dataclasses.fields(module.Config)}
    section = dict(section)
    if "model" in names:
        section.setdefault("model", cfg.model)
    if "seed" in names:
        section.setdefault("seed", cfg.seed)
    return from_dict(module.Config, section, source=source, prefix=prefix)


def _toposort(specs: list[TrainSpec], source: str) -> list[TrainSpec]:
    names = {s.name for s in specs}
    deps = {s.name: _refs(s.section) & names for s in specs}
    for s in specs:
        if s.name in deps[s.name]:
            raise SafealignError(f"'{s.name}' refers to itself", file=source, field=f"methods.{s.method}")
    out: list[TrainSpec] = []
    done: set[str] = set()
    while len(out) < len(specs):
        ready = [s for s in specs if s.name not in done and deps[s.name] <= done]
        if not ready:
            left = sorted(names - done)
            raise SafealignError(f"methods refer to each other in a cycle: {', '.join(left)}", file=source,
                                 field="methods")
        out.append(ready[0])
        done.add(ready[0].name)
    return out


def models_of(cfg: RunConfig, source: str = "<config>") -> dict[str, dict[str, Any]]:
    """The models a run evaluates: {name: {"method", "train" (stage or None), "settings"}} — ``base`` first."""
    models = {"base": {"method": "base", "train": None, "settings": {"model": cfg.model}}}
    for s in _toposort(_method_sections(cfg, source), source):
        if s.generator:
            models[s.name] = {"method": s.method, "train": f"train/{s.name}", "settings": s.section}
    return models


def plan(cfg: RunConfig, run_dir: str | Path, source: str = "<config>") -> list[Stage]:
    """The stages of a run, in order. Every recipe section is validated here, before anything runs."""
    run_dir = Path(run_dir)
    specs = _toposort(_method_sections(cfg, source), source)
    trained = {s.name: s for s in specs}
    dirs = {name: (run_dir / "train" / name).resolve() for name in trained}
    stages: list[Stage] = []

    def deps_of(*objs: Any) -> list[str]:
        return [f"train/{r}" for r in sorted(set().union(*(_refs(o) for o in objs)) & set(trained))]

    for r in sorted(set().union(_refs(cfg.judge), _refs(cfg.helpful_scorer or "")) - set(trained)):
        raise SafealignError(f"'@{r}' is not a model trained in this run (methods: {', '.join(trained) or 'none'})",
                             file=source, field="helpful_scorer" if r in (cfg.helpful_scorer or "") else "judge")

    # The embedded judge trains once per machine (then cached): a stage of its own, first, so that with jobs > 1 it
    # trains while the first method does. Stages that judge do not wait for it: an eval generates first and only
    # then takes the judge (blocking on its lock if it is still training). Their input hash holds the judge's
    # training hash, so a retrained judge redoes them.
    def uses_embedded(spec: Any) -> bool:
        return str(spec or "").strip() == "embedded"

    def raft_judges(s: Any) -> set[str]:  # a RAFT section's ranker and independent judge (default: guard)
        return {str(s.section.get("ranker") or "").strip(), str(s.section.get("independent_judge", "guard")).strip()}

    raft_with_embedded = {f"train/{s.name}" for s in specs if s.method == "raft" and "embedded" in raft_judges(s)}
    raft_with_guard = {f"train/{s.name}" for s in specs if s.method == "raft" and "guard" in raft_judges(s)}
    needs_judge_stage = uses_embedded(cfg.judge) or uses_embedded(cfg.second_judge) or bool(raft_with_embedded)

    # train
    for s in specs:
        if s.method == "raft" and s.section.get("ranker") == "rm:@rm" and "rm" not in trained:
            raise SafealignError("ranker 'rm' needs methods.rm (the reward model trained in this run)", file=source,
                                 field="methods.raft.ranker")
        for r in sorted(_refs(s.section) - set(trained)):
            if r in METHODS or r.startswith("sit"):
                raise SafealignError(f"'@{r}' is not a model trained in this run (methods: "
                                     f"{', '.join(trained)})", file=source, field=f"methods.{s.method}")
        recipe_cfg = _recipe_config(s.method, _resolve(s.section, dirs), cfg, source, f"methods.{s.method}.")
        module = _recipe(s.method)
        as_written = _recipe_config(s.method, s.section, cfg, source, f"methods.{s.method}.")  # @refs kept: for show
        stages.append(Stage(f"train/{s.name}", {"method": s.method, "section": s.section, "model": cfg.model,
                                                "seed": cfg.seed}, _train_action(module, recipe_cfg),
                            dirs[s.name], deps_of(s.section),
                            describe=(lambda m=module, c=as_written: m.describe(c)) if hasattr(module, "describe")
                            else None))

    guard_id = None
    judges_with_guard = "guard" in (str(cfg.judge or "").strip(), str(cfg.second_judge or "").strip())
    if judges_with_guard or raft_with_guard:
        # the shipped judge: nothing to train; its stage records which weights made the numbers
        from safealign.judges import guard

        guard_id = guard.weights_id()
        for st in stages:
            if st.name in raft_with_guard:
                st.settings["guard_judge"] = guard_id  # new weights redo what they judged
        stages.insert(0, Stage("judge/guard", {"judge": "guard", "weights": guard_id},
                               _judge_action("guard"), run_dir / "judge" / "guard", []))
    judge_hash = None
    if needs_judge_stage:  # after the recipe configs are validated: the hash reads the judge's training data
        from safealign.judges import embedded

        judge_hash = embedded.training_hash()
        for st in stages:
            if st.name in raft_with_embedded:
                st.settings["embedded_judge"] = judge_hash
        stages.insert(0, Stage("judge/embedded", {"judge": "embedded", "training_hash": judge_hash},
                               _judge_action("embedded"), run_dir / "judge" / "embedded", []))

    # evaluate: the reward model's accuracy, then every generator on every benchmark
    if "rm" in trained:
        re_ = cfg.reward_eval
        stages.append(Stage("eval/rm", {"datasets": re_.datasets, "limit": re_.limit},
                            _rm_eval_action(dirs["rm"], re_), run_dir / "eval" / "rm", ["train/rm"]))
    eval_settings = {"benchmarks": cfg.benchmarks, "judge": cfg.judge, "limit": cfg.limit,
                     "generation": to_dict(cfg.generation), "helpful_scorer": cfg.helpful_scorer}
    eval_settings["generation"]["precision"] = inference_precision(cfg.generation.precision)  # auto: by machine
    if uses_embedded(cfg.judge):
        eval_settings["embedded_judge"] = judge_hash
    if judges_with_guard:
        eval_settings["guard_judge"] = guard_id
    eval_deps = deps_of(cfg.judge, cfg.helpful_scorer or "")
    judge, scorer = _resolve(cfg.judge, dirs), _resolve(cfg.helpful_scorer, dirs)
    eval_dirs: dict[str, Path] = {}
    models = ["base"] + [s.name for s in specs if s.generator]
    model_path = {name: cfg.model if name == "base" else str(dirs[name]) for name in models}
    model_ref = {name: cfg.model if name == "base" else f"@{name}" for name in models}  # in the settings hash
    for name in models:
        eval_dirs[name] = run_dir / "eval" / name
        deps = eval_deps + ([] if name == "base" else [f"train/{name}"])
        stages.append(Stage(f"eval/{name}", {**eval_settings, "model": model_ref[name]},
                            _eval_action(model_path[name], cfg, judge, scorer), eval_dirs[name], sorted(set(deps)),
                            describe=lambda m=model_ref[name]: dryrun.eval_description(m, cfg)))
    second: dict[str, Path] = {}
    if cfg.second_judge:
        settings2 = {**eval_settings, "judge": cfg.second_judge}
        if uses_embedded(cfg.second_judge):
            settings2["embedded_judge"] = judge_hash
        judge2 = _resolve(cfg.second_judge, dirs)
        for name in models:
            second[name] = run_dir / "recheck" / name
            stages.append(Stage(f"recheck/{name}", {**settings2, "model": model_ref[name]},
                                _recheck_action(eval_dirs[name], model_path[name], cfg, judge2),
                                second[name], sorted(set([f"eval/{name}"] + deps_of(cfg.second_judge)))))
    if "raft" in trained and trained["raft"].extra.get("eval_iterations"):
        stages.append(Stage("eval/raft-iters", eval_settings, _raft_iters_action(dirs["raft"], cfg, judge, scorer),
                            run_dir / "eval" / "raft-iters", sorted(set(eval_deps + ["train/raft"]))))

    # compare (needs a judge model) and analyze
    default_pairs = [["base", m] for m in models if m != "base"]
    if cfg.compare.judge:
        pairs = cfg.compare.pairs or default_pairs
        for k, pair in enumerate(pairs):
            if len(pair) != 2 or any(m not in eval_dirs for m in pair):
                raise SafealignError(f"a pair names two of: {', '.join(models)}", file=source,
                                     field=f"compare.pairs[{k}]")
        cjudge = _resolve(cfg.compare.judge, dirs)
        for a, b in pairs:
            stages.append(Stage(f"compare/{a}-vs-{b}", {"judge": cfg.compare.judge, "limit": cfg.compare.limit,
                                                        "base_url": cfg.compare.base_url},
                                _compare_action(eval_dirs[a], eval_dirs[b], cjudge, cfg.compare),
                                run_dir / "compare" / f"{a}-vs-{b}",
                                sorted(set([f"eval/{a}", f"eval/{b}"] + deps_of(cfg.compare.judge)))))
    if cfg.analyze:
        for a, b in default_pairs:
            stages.append(Stage(f"analyze/{a}-vs-{b}", {}, _analyze_action(eval_dirs[a], eval_dirs[b]),
                                run_dir / "analyze" / f"{a}-vs-{b}", [f"eval/{a}", f"eval/{b}"]))
        for a, b in default_pairs if second else []:
            stages.append(Stage(f"analyze2/{a}-vs-{b}", {"judge": cfg.second_judge},
                                _analyze_action(second[a], second[b]), run_dir / "analyze2" / f"{a}-vs-{b}",
                                [f"recheck/{a}", f"recheck/{b}"]))
        if "raft" in trained:
            stages.append(Stage("analyze/raft", {}, _analyze_raft_action(dirs["raft"]), run_dir / "analyze" / "raft",
                                ["train/raft"]))

    stages.append(Stage("report", {"report": to_dict(cfg.report), "judge": cfg.judge}, _report_action(run_dir, cfg),
                        run_dir / "report.html", [s.name for s in stages]))
    return stages


# ------------------------------------------------------------------------------------------------- stage actions

def _train_action(module: Any, recipe_cfg: Any) -> Callable[[Path], Any]:
    def action(out: Path) -> Path:
        return module.run(recipe_cfg, out, overwrite=False)  # an unfinished dir resumes

    return action


def _judge_action(spec: str) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.judges import get_judge

        j = get_judge(spec)  # trains and caches the embedded judge if this machine has not yet
        info = {"judge": spec, "id": getattr(j, "id", spec), "path": str(getattr(j, "path", "")),
                "meta": getattr(j, "meta", {})}
        write_text(out / "judge.json", json.dumps(info, indent=1))
        return info

    return action


def _eval_action(model: str, cfg: RunConfig, judge: str, scorer: str | None) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.eval.run import evaluate

        return evaluate(model, cfg.benchmarks, judge, out, limit=cfg.limit, params=cfg.generation,
                        helpful_scorer=scorer)

    return action


def _recheck_action(eval_dir: Path, model: str, cfg: RunConfig, judge: str) -> Callable[[Path], Any]:
    """The second judge's verdicts on an eval's answers: its generations are copied, never generated again."""
    def action(out: Path) -> dict:
        from safealign.eval.run import evaluate

        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "generations.jsonl.tmp"
        shutil.copyfile(eval_dir / "generations.jsonl", tmp)
        os.replace(tmp, out / "generations.jsonl")
        safety = ",".join(b for b in cfg.benchmarks.split(",") if b.strip() and b.strip() != "helpful")
        return evaluate(model, safety, judge, out, limit=cfg.limit, params=cfg.generation)

    return action


def _raft_iters_action(raft_dir: Path, cfg: RunConfig, judge: str, scorer: str | None) -> Callable[[Path], Any]:
    def action(out: Path) -> None:
        from safealign.eval.run import evaluate

        rows = read_jsonl(raft_dir / "raft_log.jsonl")
        for row in rows[:-1]:  # the last iteration is the RAFT model itself, evaluated by eval/raft
            if row.get("model_dir"):
                model_dir = Path(row["model_dir"])
                model_dir = model_dir if model_dir.is_absolute() else raft_dir / model_dir
                evaluate(str(model_dir), cfg.benchmarks, judge, out / f"iter_{row['iteration']}", limit=cfg.limit,
                         params=cfg.generation, helpful_scorer=scorer)

    return action


def _rm_eval_action(rm_dir: Path, re_: RewardEval) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.recipes.rm import evaluate

        result = evaluate(str(rm_dir), datasets=list(re_.datasets), limit=re_.limit)
        write_json(out / "summary.json", {"model": str(rm_dir), "datasets": result})
        return result

    return action


def _compare_action(a: Path, b: Path, judge: str, cc: CompareConfig) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/compare.json
        from safealign.eval.compare import compare

        return compare(a, b, judge, out, limit=cc.limit, base_url=cc.base_url, api_key_env=cc.api_key_env)

    return action


def _analyze_action(a: Path, b: Path) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/analysis.json
        from safealign.eval.analyze import analyze

        return analyze(a, b, out)

    return action


def _analyze_raft_action(raft_dir: Path) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/raft_analysis.json
        from safealign.eval.analyze import analyze_raft

        return analyze_raft(raft_dir, out)

    return action


def _report_action(run_dir: Path, cfg: RunConfig) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.report.build import build_report

        return build_report(run_dir, examples=cfg.report.examples, title=cfg.report.title)

    return action


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill: the writer repairs it on its next run
    return rows


# ----------------------------------------------------------------------------------------------------- the run

def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    from safealign.config import load_config

    return load_config(RunConfig, path, overrides)


def run(cfg: RunConfig, out_dir: str | Path, source: str = "<config>", dry_run: bool = False) -> Path:
    """Run (or resume) the study described by ``cfg`` into ``out_dir``; returns the report's path."""
    run_dir = Path(out_dir)
    stages = plan(cfg, run_dir, source)  # validates everything before any work
    if cfg.jobs < 1:
        raise SafealignError("must be >= 1", file=source, field="jobs")
    if dry_run:
        dryrun.print_plan(stages, stage_state(stages, Manifest(run_dir / "manifest.json")), source, run_dir)  # stdout
        return run_dir / "report.html"
    with run_lock(run_dir):
        manifest = Manifest(run_dir / "manifest.json")
        cfg_dict = to_dict(cfg)
        write_text(run_dir / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
        models = models_of(cfg, source)
        manifest.update(None, version=PIPELINE_VERSION, source=source, plan=[s.name for s in stages],
                        config=cfg_dict,
                        models={name: {"method": m["method"], "train": m["train"], "eval": f"eval/{name}",
                                       "n_safety": m["settings"].get("n_safety") if m["method"] == "sit" else None}
                                for name, m in models.items()})
        hashes = input_hashes(stages)
        threads = max(1, _cpu_count() // cfg.jobs)

        def spawn(st: Stage, log_path: Path) -> subprocess.Popen:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd = [sys.executable, "-m", "safealign", "run", "--stage", st.name, "--expect-hash", hashes[st.name],
                   "--out", str(run_dir)]
            with open(log_path, "a") as fh:
                fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
                fh.flush()
                return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

        if cfg.jobs > 1:
            _log(f"{len(stages)} stages, up to {cfg.jobs} at once ({threads} thread(s) each); logs in {run_dir / 'logs'}")
        run_stages(stages, run_dir, manifest, jobs=cfg.jobs, spawn=spawn)
    return run_dir / "report.html"


def run_one_stage(run_dir: str | Path, name: str, expect_hash: str | None = None) -> None:
    """Run stage ``name`` of an existing run dir (its config.yaml), here; what ``jobs`` > 1 starts per stage."""
    run_dir = Path(run_dir)
    manifest = Manifest(run_dir / "manifest.json")
    source = manifest.data.get("source") or str(run_dir / "config.yaml")
    from safealign.config import load_config

    cfg = load_config(RunConfig, run_dir / "config.yaml")
    stages = plan(cfg, run_dir, source)
    by_name = {st.name: st for st in stages}
    if name not in by_name:
        raise SafealignError(f"no stage '{name}' in this run (stages: {', '.join(by_name)})", field="stage")
    if expect_hash and input_hashes(stages)[name] != expect_hash:
        raise SafealignError(f"the run's config.yaml changed under stage '{name}'", file=str(run_dir), field="stage")
    by_name[name].action(by_name[name].out)


def _die_with_parent() -> None:
    """In a stage's child process (Linux): get SIGTERM if the run is killed, so no orphan writes on."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
