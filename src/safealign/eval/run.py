"""The safety evaluation driver behind ``safealign eval``: generate → judge → rates.

    evaluate("smollm2-135m-instruct", "harm,xstest", "embedded", "results/base", limit=20)

writes into ``out_dir``:

- ``generations.jsonl`` — every response, appended as batches finish (``generate.generate_to_file``); a rerun
  skips what is there, so a killed evaluation resumes without regenerating;
- ``verdicts.jsonl`` — the judge's verdicts, appended per batch and keyed by (id, sample, judge id, a hash of
  prompt and response); a rerun reuses them, and another judge (or a retrained embedded judge, whose id
  changes) adds its own lines instead of mixing with them;
- ``responses.jsonl`` — one line per response: id, sample, benchmark, expected, category, prompt, response,
  model, judge, judge_id, safe, refusal, score, verdict_category;
- ``summary.json`` — ``{"model", "model_id", "judge", "judge_id", "limit", "params", "seconds",
  "benchmarks": {name: entry}}`` with the entries of ``safety.benchmark_summary`` (and ``"helpful"`` when the
  ``helpful`` benchmark was evaluated);
- ``summary.md`` — the same as tables.

Generation defaults to greedy decoding with 128 new tokens (``GenParams()``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.generate import Engine, GenParams, generate_to_file
from safealign.records import Generation, Verdict


class LazyHFEngine:
    """An ``HFEngine`` whose model is loaded only when something is left to generate (a finished eval
    rerun never loads it). ``name`` is the model fingerprint, as ``HFEngine`` would write it."""

    def __init__(self, model: str):
        from safealign import models

        self.model = model
        self.name = models.fingerprint(model)
        self._engine: Any = None

    def precision_for(self, params: GenParams) -> str:
        from safealign.models import inference_precision

        return inference_precision(params.precision)

    def generate(self, prompts, params, on_batch=None):
        from safealign.generate import HFEngine

        if self._engine is None:
            self._engine = HFEngine(self.model, name=self.name)
        return self._engine.generate(prompts, params, on_batch=on_batch)


def _pair_hash(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()[:16]


def _read_verdicts(path: Path, judge_id: str) -> dict[tuple[str, str], Verdict]:
    """Cached verdicts of ``judge_id``: {(key, pair hash): Verdict}. A line cut by a kill is skipped."""
    out: dict[tuple[str, str], Verdict] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                o = json.loads(line)
                if o["judge_id"] == judge_id:
                    out[(o["key"], o["h"])] = Verdict(bool(o["safe"]), bool(o["refusal"]), float(o["score"]),
                                                      o.get("category"))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def judge_generations(judge: Any, gens: list[Generation], path: Path, batch_size: int = 32) -> list[Verdict]:
    """Verdicts for ``gens``, reusing those cached in ``path`` and appending new ones per batch."""
    from safealign.progress import progress_bar

    judge_id = getattr(judge, "id", judge.name)
    cached = _read_verdicts(path, judge_id)
    hashes = [_pair_hash(g.prompt, g.response) for g in gens]
    todo = [i for i, g in enumerate(gens) if (g.key, hashes[i]) not in cached]
    if todo:
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with open(path, "ab") as f:
                f.write(b"\n")  # a line cut by a kill stays on its own line
        with progress_bar() as bar, open(path, "a", encoding="utf-8") as f:
            task = bar.add_task(f"judging ({judge.name})", total=len(gens), completed=len(gens) - len(todo))
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                verdicts = judge.judge([gens[i].prompt for i in idx], [gens[i].response for i in idx])
                if len(verdicts) != len(idx):
                    raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(idx)} pairs")
                lines = []
                for i, v in zip(idx, verdicts):
                    cached[(gens[i].key, hashes[i])] = v
                    lines.append(json.dumps({"key": gens[i].key, "h": hashes[i], "judge_id": judge_id,
                                             "safe": bool(v.safe), "refusal": bool(v.refusal),
                                             "score": float(v.score), "category": v.category}) + "\n")
                f.write("".join(lines))
                f.flush()
                bar.advance(task, len(idx))
    return [cached[(g.key, hashes[i])] for i, g in enumerate(gens)]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(model: str, benchmarks: str | list[str], judge: Any, out_dir: str | Path, limit: int | None = None,
             params: GenParams | None = None, engine: Engine | None = None,
             helpful_scorer: str | None = None) -> dict:
    """Generate (resumably) on each benchmark, judge every response, write and return the summary."""
    from safealign.data import registry
    from safealign.eval import safety
    from safealign.judges import get_judge

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = params or GenParams()
    names = registry.expand_benchmarks(benchmarks)
    records = [r for name in names for r in registry.load_eval(name, limit)]
    if not records:
        raise SafealignError("the benchmarks have no prompts", field="benchmarks")
    judge_obj = get_judge(judge) if isinstance(judge, str) else judge  # fail on a bad judge before generating
    engine = engine or LazyHFEngine(model)
    gens = generate_to_file(engine, records, params, out / "generations.jsonl")
    verdicts = judge_generations(judge_obj, gens, out / "verdicts.jsonl")
    judge_id = getattr(judge_obj, "id", judge_obj.name)

    rows = []
    for g, v in zip(gens, verdicts):
        rows.append(json.dumps({
            "id": g.id, "sample": g.sample, "benchmark": g.benchmark, "expected": g.expected, "category": g.category,
            "prompt": g.prompt, "response": g.response, "model": g.model, "judge": judge_obj.name,
            "judge_id": judge_id, "safe": bool(v.safe), "refusal": bool(v.refusal), "score": float(v.score),
            "verdict_category": v.category}, ensure_ascii=False) + "\n")
    write_atomic(out / "responses.jsonl", "".join(rows))

    summary: dict[str, Any] = {
        "model": model, "model_id": engine.name, "judge": judge_obj.name, "judge_id": judge_id, "limit": limit,
        "params": params.as_dict(), "benchmarks": safety.summarize(gens, verdicts),
    }
    helpful = [g for g in gens if g.benchmark == "helpful"]
    if helpful:
        from safealign.eval import helpfulness

        summary["helpful"] = helpfulness.evaluate(helpful, scorer=helpful_scorer, out_dir=out)
    summary["seconds"] = round(time.time() - t0, 1)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False))
    write_atomic(out / "summary.md", safety.to_markdown(summary))
    return summary
