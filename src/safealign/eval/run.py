"""The safety evaluation driver behind ``safealign eval``: generate → judge → rates.

    evaluate("smollm2-135m-instruct", "harm,xstest", "embedded", "results/base", limit=20)

writes into ``out_dir``:

- ``generations.jsonl`` — every response, appended as batches finish (``generate.generate_to_file``); a rerun
  skips what is there, so a killed evaluation resumes without regenerating;
- ``verdicts.jsonl`` — the judge's verdicts, appended per batch and keyed by (id, sample, judge id, a hash of
  prompt and response); a rerun reuses them, and another judge (or a retrained embedded judge, whose id
  changes) adds its own lines instead of mixing with them. Read and appended under ``safealign.io``'s JSONL rule:
  a line cut by a kill is skipped, and cut off before new lines are appended;
- ``responses.jsonl`` — one ``records.JudgedResponse`` per response (``eval/responses.py`` writes and reads it):
  id, sample, benchmark, expected, category, prompt, response, model, judge, judge_id, safe, refusal, score,
  verdict_category;
- ``summary.json`` — ``{"model", "model_id", "judge", "judge_id", "limit", "params", "precision", "seconds",
  "benchmarks": {name: entry}}`` (``precision``: what the answers were computed in, ``generated_in``) with the
  entries of ``safety.benchmark_summary`` (and ``"helpful"`` when the ``helpful`` benchmark was evaluated);
- ``summary.md`` — the same as tables.

Generation defaults to greedy decoding with 128 new tokens (``GenParams()``).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.eval.responses import write_responses
from safealign.generate import Engine, GenParams, generate_to_file
from safealign.io import append_jsonl, iter_jsonl, repair_jsonl, write_json, write_text
from safealign.records import Generation, JudgedResponse, Verdict


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

    def prepare(self) -> None:
        """Load the model now (``generate_to_file`` calls it before its progress bar, when work is left)."""
        from safealign.generate import HFEngine

        if self._engine is None:
            self._engine = HFEngine(self.model, name=self.name)

    def generate(self, prompts, params, on_batch=None):
        self.prepare()
        return self._engine.generate(prompts, params, on_batch=on_batch)


def _pair_hash(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()[:16]


def _read_verdicts(path: Path, judge_id: str) -> dict[tuple[str, str], Verdict]:
    """Cached verdicts of ``judge_id``: {(key, pair hash): Verdict}. A last line cut by a kill is skipped
    (``io.iter_jsonl``); a line that is JSON but not a verdict is skipped too (it is judged again)."""
    out: dict[tuple[str, str], Verdict] = {}
    if not path.exists():
        return out
    try:
        for _, o in iter_jsonl(path, field="verdicts"):
            try:
                if o["judge_id"] == judge_id:
                    out[(o["key"], o["h"])] = Verdict(bool(o["safe"]), bool(o["refusal"]), float(o["score"]),
                                                      o.get("category"))
            except (ValueError, KeyError, TypeError):
                continue
    except SafealignError as e:  # e.g. a line cut by a kill under an older safealign, with lines after it
        raise SafealignError(f"{e.message} (a cache of verdicts: delete that line, or the file, and rerun)",
                             file=e.file, line=e.line, field=e.field) from None
    return out


def judge_generations(judge: Any, gens: list[Generation], path: Path, batch_size: int = 32) -> list[Verdict]:
    """Verdicts for ``gens``, reusing those cached in ``path`` and appending new ones per batch."""
    from safealign.progress import progress_bar

    judge_id = getattr(judge, "id", judge.name)
    cached = _read_verdicts(path, judge_id)
    hashes = [_pair_hash(g.prompt, g.response) for g in gens]
    todo = [i for i, g in enumerate(gens) if (g.key, hashes[i]) not in cached]
    if todo:
        repair_jsonl(path)  # a line cut by a kill is removed before new lines follow it
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
                    lines.append({"key": gens[i].key, "h": hashes[i], "judge_id": judge_id, "safe": bool(v.safe),
                                  "refusal": bool(v.refusal), "score": float(v.score), "category": v.category})
                append_jsonl(f, lines)
                bar.advance(task, len(idx))
    return [cached[(g.key, hashes[i])] for i, g in enumerate(gens)]




def generated_in(gens) -> str | None:
    """The precision(s) the answers were computed in, as the engine wrote it on each line ("bf16"; "bf16, fp32"
    where a resumed run mixed them); None where no line says (an engine that does not report it)."""
    found = sorted({str(g.params["precision"]) for g in gens if g.params.get("precision")})
    return ", ".join(found) or None


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

    write_responses(out, [JudgedResponse.from_parts(g, v, judge_obj.name, judge_id) for g, v in zip(gens, verdicts)])

    summary: dict[str, Any] = {
        "model": model, "model_id": engine.name, "judge": judge_obj.name, "judge_id": judge_id, "limit": limit,
        "params": params.as_dict(), "precision": generated_in(gens), "benchmarks": safety.summarize(gens, verdicts),
    }
    helpful = [g for g in gens if g.benchmark == "helpful"]
    if helpful:
        from safealign.eval import helpfulness

        summary["helpful"] = helpfulness.evaluate(helpful, scorer=helpful_scorer, out_dir=out)
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", safety.to_markdown(summary))
    return summary
