"""The run pipeline: stages, the manifest, skipping, resuming, rerunning what a changed setting touches; the
plan a run config becomes; ``safealign run`` end to end on a tiny real model."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.errors import SafealignError
from safealign.generate import GenParams, HFEngine, generate_to_file, read_generations
from safealign.pipeline import Manifest, RunConfig, Stage, input_hashes, plan, run_lock, run_stages
from safealign.records import EvalPrompt

PROMPTS = [EvalPrompt(f"p{i}", f"Question {i}: how do I make bread?", "t", "comply") for i in range(4)]


class Study:
    """Three real stages: two generate with a tiny model (gen/a, gen/c); count/b reads gen/a's output."""

    def __init__(self, run_dir: Path, engine: HFEngine):
        self.run_dir, self.engine, self.calls = run_dir, engine, []
        self.tokens_a, self.cut_after = 3, None

    def gen(self, name: str, tokens: int):
        def action(out: Path) -> None:
            self.calls.append(name)
            todo = PROMPTS if self.cut_after is None or name != "gen/a" else PROMPTS[:self.cut_after]
            generate_to_file(self.engine, todo, GenParams(max_new_tokens=tokens, batch_size=2), out / "gen.jsonl")
            if todo is not PROMPTS:
                raise KeyboardInterrupt  # killed halfway
        return action

    def count(self, out: Path) -> None:
        self.calls.append("count/b")
        out.mkdir(parents=True, exist_ok=True)
        n = len(read_generations(self.run_dir / "gen" / "a" / "gen.jsonl"))
        (out / "count.json").write_text(json.dumps({"n": n}))

    def stages(self) -> list[Stage]:
        r = self.run_dir
        return [Stage("gen/a", {"tokens": self.tokens_a}, self.gen("gen/a", self.tokens_a), r / "gen" / "a"),
                Stage("count/b", {}, self.count, r / "count" / "b", ["gen/a"]),
                Stage("gen/c", {"tokens": 2}, self.gen("gen/c", 2), r / "gen" / "c")]

    def run(self) -> Manifest:
        self.calls = []
        return run_stages(self.stages(), self.run_dir, log=lambda m: None)


def test_skip_resume_and_rerun_only_downstream(tmp_path, tiny_lm_dir):
    study = Study(tmp_path / "run", HFEngine(str(tiny_lm_dir), show_progress=False))
    m = study.run()
    assert study.calls == ["gen/a", "count/b", "gen/c"]
    assert {s["status"] for s in m.stages.values()} == {"done"}
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk["stages"]["count/b"]["outputs"] == ["count/b"] and on_disk["stages"]["gen/a"]["seconds"] > 0

    study.run()  # nothing changed: everything is skipped
    assert study.calls == []

    study.tokens_a = 5  # a changed setting reruns gen/a (its old output removed first) and what depends on it
    m = study.run()
    assert study.calls == ["gen/a", "count/b"]
    assert {g.params["max_new_tokens"] for g in read_generations(tmp_path / "run" / "gen" / "a" / "gen.jsonl")} == {5}

    study.tokens_a, study.cut_after = 6, 2  # killed halfway through gen/a
    with pytest.raises(KeyboardInterrupt):
        study.run()
    m = Manifest(tmp_path / "run" / "manifest.json")
    assert m.stages["gen/a"]["status"] == "failed" and "KeyboardInterrupt" in m.stages["gen/a"]["error"]
    first = (tmp_path / "run" / "gen" / "a" / "gen.jsonl").read_text()
    assert len(first.splitlines()) == 2
    study.cut_after = None
    m = study.run()  # resumes in the same dir: the two finished prompts are kept, not redone
    assert study.calls == ["gen/a", "count/b"]
    assert (tmp_path / "run" / "gen" / "a" / "gen.jsonl").read_text().startswith(first)
    assert json.loads((tmp_path / "run" / "count" / "b" / "count.json").read_text()) == {"n": 4}
    assert m.stages["gen/a"]["attempts"] == 2 and m.stages["gen/a"]["status"] == "done"

    (tmp_path / "run" / "gen" / "c" / "gen.jsonl").unlink()
    (tmp_path / "run" / "gen" / "c").rmdir()  # outputs gone: the stage runs again
    study.run()
    assert study.calls == ["gen/c"]
    shutil.rmtree(tmp_path / "run" / "gen" / "a")  # redone with the same settings: what used it is redone too
    study.run()
    assert study.calls == ["gen/a", "count/b"]
    study.run()
    assert study.calls == []


def test_one_run_per_dir(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(SafealignError, match="in use by another safealign process"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass


def write_cfg(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plan_stages_refs_and_hashes(tmp_path, tiny_lm_dir):
    cfg_path = write_cfg(tmp_path / "c.yaml", f"""
model: {tiny_lm_dir}
judge: keywords
helpful_scorer: rm:@rm
benchmarks: harm,xstest
limit: 2
methods:
  rm: {{limit: 8, eval_limit: 0}}
  raft: {{ranker: rm, T: 1, B: 2, K: 2, independent_judge: keywords}}
""")
    cfg = load_config(RunConfig, cfg_path)
    stages = plan(cfg, tmp_path / "run", str(cfg_path))
    names = [s.name for s in stages]
    assert names == ["train/rm", "train/raft", "eval/rm", "eval/base", "eval/raft", "analyze/base-vs-raft",
                     "analyze/raft", "report"]
    by = {s.name: s for s in stages}
    assert by["train/raft"].deps == ["train/rm"] and by["eval/base"].deps == ["train/rm"]  # rm:@rm scores helpfulness
    assert by["eval/raft"].deps == ["train/raft", "train/rm"]
    rm_dir = str((tmp_path / "run" / "train" / "rm").resolve())
    assert by["train/raft"].action.__closure__  # the recipe config is built (validated) at plan time
    raft_cfg = next(c.cell_contents for c in by["train/raft"].action.__closure__ if hasattr(c.cell_contents, "ranker"))
    assert raft_cfg.ranker == f"rm:{rm_dir}" and raft_cfg.model == str(tiny_lm_dir) and raft_cfg.seed == 0

    def changed(*overrides: str) -> set[str]:
        other = plan(load_config(RunConfig, cfg_path, list(overrides)), tmp_path / "run", str(cfg_path))
        a, b = input_hashes(stages), input_hashes(other)
        return {n for n in a if a[n] != b.get(n)}

    assert changed() == set()
    assert changed("methods.raft.K=3") == {"train/raft", "eval/raft", "analyze/base-vs-raft", "analyze/raft", "report"}
    assert changed("reward_eval.limit=5") == {"eval/rm", "report"}
    assert changed("methods.rm.limit=9") == set(names)  # everything uses the RM: ranker and helpfulness scorer
    assert changed("generation.max_new_tokens=7") == {"eval/base", "eval/raft", "analyze/base-vs-raft", "report"}


@pytest.mark.parametrize("overrides,field,message", [
    (["methods.rm.bogus=1"], "methods.rm.bogus", "unknown config key"),
    (["helpful_scorer=rm:@rm"], "helpful_scorer", "not a model trained in this run"),
    (["methods.raft.ranker=rm"], "methods.raft.ranker", "needs methods.rm"),
    (["methods.nope={}"], "methods.nope", "unknown config key"),
    (["methods.rm=3"], "methods.rm", "expected a mapping"),
    (["compare.judge=keywords", "compare.pairs=[[base, zzz]]"], "compare.pairs[0]", "a pair names two of"),
])
def test_plan_errors_name_the_key(tmp_path, overrides, field, message):
    cfg_path = write_cfg(tmp_path / "c.yaml", "judge: keywords\nbenchmarks: harm\n")
    with pytest.raises(SafealignError, match=message) as e:
        plan(load_config(RunConfig, cfg_path, overrides), tmp_path / "run", str(cfg_path))
    assert e.value.field == field and e.value.file == str(cfg_path)


def test_run_cli_errors_and_dry_run(tmp_path, tiny_lm_dir):
    cfg_path = write_cfg(tmp_path / "c.yaml", f"model: {tiny_lm_dir}\njudge: keywords\nbenchmarks: harm\n"
                                              "methods:\n  rm: {limit: 4, eval_limit: 0}\n")
    cmd = [sys.executable, "-m", "safealign", "run", str(cfg_path), "--out", str(tmp_path / "run")]
    bad = subprocess.run(cmd + ["methods.rm.lr=1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "methods.rm.lr" in bad.stderr and str(cfg_path) in bad.stderr
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    stages = [ln for ln in dry.stdout.splitlines() if ln.startswith("[")]
    assert stages == ["[1/4] train/rm: would run (new)", "[2/4] eval/rm: would run (new)",
                      "[3/4] eval/base: would run (new)", "[4/4] report: would run (new)"]
    assert "    data     4 pairs of 3,457 (pku-safe-pairs:train" in dry.stdout  # what each stage trains on
    assert "    data     i-cona 178" in dry.stdout and "i-controversial 40" in dry.stdout
    assert not (tmp_path / "run" / "manifest.json").exists()


TINY_TRAIN = "train: {max_steps: 1, batch_size: 2, max_length: 64, save_steps: 0}, lora: {r: 4, alpha: 8}"


def tiny_study(tmp_path: Path, model: Path) -> Path:
    return write_cfg(tmp_path / "study.yaml", f"""
model: {model}
judge: keywords
helpful_scorer: rm:@rm
benchmarks: i-cona,xstest,helpful
limit: 2
generation: {{max_new_tokens: 4, batch_size: 8}}
methods:
  sit: {{n_safety: [2, 4], helpful_limit: 4, {TINY_TRAIN}}}
  rm: {{limit: 4, eval_limit: 0, {TINY_TRAIN}}}
  raft: {{ranker: rm, independent_judge: keywords, T: 1, B: 2, K: 2, max_new_tokens: 4, {TINY_TRAIN}}}
  dpo: {{limit: 4, {TINY_TRAIN}}}
compare: {{judge: "{model}", limit: 2, pairs: [[base, dpo]]}}
reward_eval: {{datasets: [pku-safe-pairs:test], limit: 4}}
report: {{examples: 2}}
""")


def safealign_run(cfg: Path, out: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "safealign", "run", str(cfg), "--out", str(out), *overrides],
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\[\d+/\d+\] (\S+)(?: \.\.\.|: settings changed|: resuming)", proc.stderr, re.M)]


def test_study_end_to_end_resume_and_rerun(tmp_path, tiny_lm_dir, data_dir):
    cfg, out = tiny_study(tmp_path, tiny_lm_dir), tmp_path / "run"
    # killed (SIGKILL) while a training stage runs, then resumed by the same command
    proc = subprocess.Popen([sys.executable, "-m", "safealign", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        m = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
        if m.get("stages", {}).get("train/sit-n4", {}).get("status") == "running":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = safealign_run(cfg, out)
    assert "train/sit-n2: up to date" in first.stderr and "train/sit-n4: resuming" in first.stderr
    stages = ["train/sit-n2", "train/sit-n4", "train/rm", "train/raft", "train/dpo", "eval/rm", "eval/base",
              "eval/sit-n2", "eval/sit-n4", "eval/raft", "eval/dpo", "compare/base-vs-dpo", "analyze/base-vs-sit-n2",
              "analyze/base-vs-sit-n4", "analyze/base-vs-raft", "analyze/base-vs-dpo", "analyze/raft", "report"]
    assert ran(first) == stages[1:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan"] == stages and {s["status"] for s in manifest["stages"].values()} == {"done"}
    assert manifest["stages"]["train/sit-n4"]["attempts"] == 2
    assert first.stdout.strip() == str(out / "report.html")

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["base", "sit-n2", "sit-n4", "raft", "dpo"] and summary["judge"] == "keywords"
    assert summary["models"]["dpo"]["benchmarks"]["xstest"]["n"] == 4
    assert summary["models"]["base"]["helpful"]["reward"] is not None  # scored by the RM trained in the run
    assert summary["config"]["methods"]["dpo"]["limit"] == 4 and summary["reward_model"]["pku-safe-pairs:test"]["n"] == 4
    assert summary["compare"]["base-vs-dpo"]["n"] == 2
    md = (out / "report.md").read_text()
    for title in ("Safe % per benchmark", "Helpfulness per model", "Reward-model pairwise accuracy",
                  "RAFT per iteration", "Position-swapped pairwise comparison", "How long each stage took"):
        assert title in md
    assert {p.name for p in (out / "plots").iterdir()} == {"safety_vs_samples.png", "raft_iterations.png",
                                                           "tradeoff.png"}

    again = safealign_run(cfg, out)  # nothing changed: nothing runs
    assert ran(again) == [] and again.stderr.count("up to date") == len(stages)
    # a stage failing in a child process (jobs=2): one error line naming the stage and its log; the rest is kept
    bad = safealign_run(cfg, out, "methods.dpo.data=" + str(tmp_path / "missing.jsonl"), "jobs=2", check=False)
    assert bad.returncode == 2 and "stage train/dpo failed" in bad.stderr and "logs/train/dpo.log" in bad.stderr
    assert "train/sit-n2: up to date" in bad.stderr
    # changing DPO's beta reruns only what depends on DPO (jobs changes no result, so no hash); 2 stages at once
    beta = safealign_run(cfg, out, "methods.dpo.beta=0.2", "jobs=2")
    assert sorted(ran(beta)) == sorted(["train/dpo", "eval/dpo", "compare/base-vs-dpo", "analyze/base-vs-dpo",
                                        "report"])
    assert (out / "logs" / "eval" / "dpo.log").exists() and "up to 2 at once" in beta.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["eval/dpo"]["cpu_seconds"] > 0 and manifest["stages"]["train/dpo"]["status"] == "done"
    assert json.loads((out / "summary.json").read_text())["config"]["methods"]["dpo"]["beta"] == 0.2


def test_the_embedded_judge_is_a_stage_and_its_hash_is_in_what_uses_it(tmp_path, tiny_lm_dir, data_dir):
    from safealign.judges import embedded

    cfg_path = write_cfg(tmp_path / "c.yaml", f"""
model: {tiny_lm_dir}
judge: embedded
benchmarks: harm
methods:
  rm: {{limit: 8, eval_limit: 0}}
  raft: {{ranker: rm, T: 1, B: 2, K: 2, independent_judge: embedded}}
""")
    stages = plan(load_config(RunConfig, cfg_path), tmp_path / "run", str(cfg_path))
    by = {s.name: s for s in stages}
    assert stages[0].name == "judge/embedded" and stages[0].deps == []  # first: it trains beside the first method
    h = embedded.training_hash()
    assert by["judge/embedded"].settings["training_hash"] == h
    # a retrained judge redoes the evals and RAFT (judged by it), not the RM
    assert by["eval/base"].settings["embedded_judge"] == h and by["train/raft"].settings["embedded_judge"] == h
    assert "embedded_judge" not in by["train/rm"].settings
    keywords_only = plan(load_config(RunConfig, cfg_path, ["judge=keywords", "methods.raft.independent_judge=keywords"]),
                         tmp_path / "run", str(cfg_path))
    assert "judge/embedded" not in [s.name for s in keywords_only]
    assert not any("embedded_judge" in s.settings for s in keywords_only)


def test_the_guard_judge_is_a_stage_and_its_weights_are_in_what_uses_them(tmp_path, tiny_lm_dir, data_dir):
    from safealign.judges import guard

    cfg_path = write_cfg(tmp_path / "c.yaml", f"""
model: {tiny_lm_dir}
judge: guard
benchmarks: harm
methods:
  rm: {{limit: 8, eval_limit: 0}}
  raft: {{ranker: rm, T: 1, B: 2, K: 2}}
""")  # RAFT's default independent judge is guard
    stages = plan(load_config(RunConfig, cfg_path), tmp_path / "run", str(cfg_path))
    by = {s.name: s for s in stages}
    wid = guard.weights_id()
    assert stages[0].name == "judge/guard" and by["judge/guard"].settings["weights"] == wid != "guard@missing"
    assert by["eval/base"].settings["guard_judge"] == wid and by["train/raft"].settings["guard_judge"] == wid
    assert "guard_judge" not in by["train/rm"].settings and "judge/embedded" not in by and "judge/union" not in by


def test_a_union_judge_redoes_what_it_judged_when_a_members_weights_change(tmp_path, tiny_lm_dir, data_dir):
    from safealign.judges import embedded, guard

    cfg_path = write_cfg(tmp_path / "c.yaml", f"""
model: {tiny_lm_dir}
second_judge: keywords
benchmarks: harm
""")  # the default judge: union.DEFAULT
    from safealign.judges import union

    stages = plan(load_config(RunConfig, cfg_path), tmp_path / "run", str(cfg_path))
    by = {s.name: s for s in stages}
    assert by["eval/base"].settings["judge"] == union.DEFAULT
    assert {"judge/guard", "judge/embedded"} <= set(by)  # each member's stage: the report shows its card
    assert stages[0].name == "judge/union" and by["judge/union"].settings == {  # and the union's own, first
        "judge": union.DEFAULT, "guard": guard.weights_id(), "embedded": embedded.judge_hash(),
        "cards": union.cards_hash()}
    both = plan(load_config(RunConfig, cfg_path, ["second_judge=union:guard+keywords"]), tmp_path / "run",
                str(cfg_path))
    assert [s.name for s in both][:2] == ["judge/union", "judge/union2"]
    assert both[1].settings["judge"] == "union:guard+keywords" and both[1].settings["embedded"] is None
    for name in ("eval/base", "recheck/base"):
        assert by[name].settings["guard_judge"] == guard.weights_id()
    assert by["eval/base"].settings["embedded_judge"] == embedded.judge_hash()
    with pytest.raises(SafealignError, match="at least two judges"):
        plan(load_config(RunConfig, cfg_path, ["judge=union:guard"]), tmp_path / "run", str(cfg_path))


@pytest.mark.parametrize("name", ["quickstart", "study", "sweep", "contrast", "paper"])
def test_shipped_run_configs_plan_cleanly(name, tmp_path, data_dir):
    """Every recipe section of the shipped run configs validates (nothing runs, no model is loaded)."""
    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    stages = plan(load_config(RunConfig, path), tmp_path / "run", str(path))
    names = [s.name for s in stages]
    assert names[-1] == "report" and "eval/base" in names and any(n.startswith("train/") for n in names)
    assert ("judge/guard" in names) == (name in ("quickstart", "study"))  # a member of the default judge
    assert ("judge/union" in names) == (name == "quickstart")  # the default judge (study: its figures' guard)
    # sweep and contrast: their figures were measured with it; quickstart, study: a member of their judge
    assert ("judge/embedded" in names) == (name in ("sweep", "contrast", "study", "quickstart"))


def test_second_judge_rechecks_answers_and_the_report_shows_each_methods_effect(tmp_path, tiny_lm_dir, data_dir,
                                                                               monkeypatch):
    """``second_judge`` re-reads every eval's answers without generating again; on-policy DPO and RAFT with
    ``rank: expected`` run inside a pipeline; the report's effect tables name each method under both judges."""
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    cfg = write_cfg(tmp_path / "c.yaml", f"""
model: {tiny_lm_dir}
judge: keywords
second_judge: keywords
benchmarks: i-cona,xstest
limit: 2
generation: {{max_new_tokens: 4, batch_size: 8}}
methods:
  raft: {{ranker: keywords, rank: expected, independent_judge: keywords, T: 1, B: 2, K: 2, max_new_tokens: 4,
          {TINY_TRAIN}}}
  dpo: {{data: on-policy, on_policy: {{n_harmful: 2, n_benign: 2, max_new_tokens: 4, benign: alpaca-test:train}},
         {TINY_TRAIN}}}
""")
    out = tmp_path / "run"
    safealign_run(cfg, out)  # the tiny model's random answers are no refusals: kept on benign prompts
    for name in ("base", "dpo"):
        assert (out / "recheck" / name / "generations.jsonl").read_bytes() == \
            (out / "eval" / name / "generations.jsonl").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"recheck/base", "recheck/dpo", "analyze2/base-vs-dpo"} <= set(manifest["plan"])
    dpo_meta = json.loads((out / "train" / "dpo" / "safealign.json").read_text())
    assert dpo_meta["data"]["source"] == "on-policy" and dpo_meta["data"]["benign_pairs"] == 2
    md = (out / "report.md").read_text()
    assert "Effect of each method vs base (judge)" in md and "Effect of each method vs base (second judge)" in md
    assert "RAFT was ranked by this judge (keywords)" in md
    analysis = json.loads((out / "analyze" / "base-vs-dpo" / "analysis.json").read_text())
    assert analysis["benchmarks"]["harmful"]["safe"]["n"] == 2  # i-cona's two prompts, pooled
