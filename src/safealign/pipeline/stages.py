"""What each stage does: one call into the module that does the work (nothing is reimplemented here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safealign import io
from safealign.pipeline.config import CompareConfig, RewardEval, RunConfig


def train_action(module: Any, recipe_cfg: Any) -> Callable[[Path], Any]:
    def action(out: Path) -> Path:
        return module.run(recipe_cfg, out, overwrite=False)  # an unfinished dir resumes

    return action


def judge_action(spec: str) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.judges import get_judge

        j = get_judge(spec)  # trains and caches the embedded judge if this machine has not yet
        info = {"judge": spec, "id": getattr(j, "id", spec), "path": str(getattr(j, "path", "")),
                "meta": getattr(j, "meta", {})}
        io.write_json(out / "judge.json", info)
        return info

    return action


def eval_action(model: str, cfg: RunConfig, judge: str, scorer: str | None) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.eval.run import evaluate

        return evaluate(model, cfg.benchmarks, judge, out, limit=cfg.limit, params=cfg.generation,
                        helpful_scorer=scorer)

    return action


def recheck_action(eval_dir: Path, model: str, cfg: RunConfig, judge: str) -> Callable[[Path], Any]:
    """The second judge's verdicts on an eval's answers: its generations are copied, never generated again."""
    def action(out: Path) -> dict:
        from safealign.eval.run import evaluate

        out.mkdir(parents=True, exist_ok=True)
        io.write_bytes(out / "generations.jsonl", (eval_dir / "generations.jsonl").read_bytes())
        safety = ",".join(b for b in cfg.benchmarks.split(",") if b.strip() and b.strip() != "helpful")
        return evaluate(model, safety, judge, out, limit=cfg.limit, params=cfg.generation)

    return action


def raft_iters_action(raft_dir: Path, cfg: RunConfig, judge: str, scorer: str | None) -> Callable[[Path], Any]:
    def action(out: Path) -> None:
        from safealign.eval.run import evaluate

        rows = io.read_jsonl(raft_dir / "raft_log.jsonl", missing_ok=True)
        for row in rows[:-1]:  # the last iteration is the RAFT model itself, evaluated by eval/raft
            if row.get("model_dir"):
                model_dir = Path(row["model_dir"])
                model_dir = model_dir if model_dir.is_absolute() else raft_dir / model_dir
                evaluate(str(model_dir), cfg.benchmarks, judge, out / f"iter_{row['iteration']}", limit=cfg.limit,
                         params=cfg.generation, helpful_scorer=scorer)

    return action


def rm_eval_action(rm_dir: Path, re_: RewardEval) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.recipes.rm import evaluate

        result = evaluate(str(rm_dir), datasets=list(re_.datasets), limit=re_.limit)
        io.write_json(out / "summary.json", {"model": str(rm_dir), "datasets": result})
        return result

    return action


def compare_action(a: Path, b: Path, judge: str, cc: CompareConfig) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/compare.json
        from safealign.eval.compare import compare

        return compare(a, b, judge, out, limit=cc.limit, base_url=cc.base_url, api_key_env=cc.api_key_env)

    return action


def analyze_action(a: Path, b: Path) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/analysis.json
        from safealign.eval.analyze import analyze

        return analyze(a, b, out)

    return action


def analyze_raft_action(raft_dir: Path) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:  # writes out/raft_analysis.json
        from safealign.eval.analyze import analyze_raft

        return analyze_raft(raft_dir, out)

    return action


def report_action(run_dir: Path, cfg: RunConfig) -> Callable[[Path], Any]:
    def action(out: Path) -> dict:
        from safealign.report.build import build_report

        return build_report(run_dir, examples=cfg.report.examples, title=cfg.report.title)

    return action
