"""Pairwise win rate of two models' responses to the same prompts, judged in both orders.

A judge sees the prompt and two answers labelled "A" and "B" and names the better one. Every pair is asked
twice, once in each order. Model a *wins* only when the judge prefers its answer in both orders; model b
likewise; anything else is a *tie*. The *order-flip rate* is the share of pairs where the verdict followed the
position (the judge named the same letter in both orders) — the positional bias that made the paper drop win
rate. Rates come with Wilson 95% intervals.

Judges (``--judge``) are the pairwise judges of ``safealign.judges.pairwise`` (``get_pairwise_judge``):
``hf:<model spec>`` or just ``<model spec>``, a local causal LM read by the logits of "A" vs "B"; ``openai:<model>``
with ``base_url`` (or ``OPENAI_BASE_URL``), any OpenAI-compatible server.

Result dirs are those ``safealign eval --out DIR`` writes (``DIR/responses.jsonl``, read by
``eval.responses.read_responses``); responses are matched by ``id`` (sample 0). Writes ``OUT/compare_items.jsonl``
(appended as pairs finish, under ``safealign.io``'s JSONL rule; rerun to resume), ``OUT/compare.json`` and
``OUT/compare.md``.

    safealign compare --a results/base --b results/dpo --judge hf:smollm2-135m-instruct --out results/cmp
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.eval.responses import read_responses
from safealign.io import append_jsonl, read_jsonl, repair_jsonl, write_json, write_text
from safealign.judges.pairwise import build_prompt, get_pairwise_judge
from safealign.records import JudgedResponse
from safealign.stats import rate_ci

__all__ = ["build_prompt", "compare", "pair_up", "read_responses", "summarize", "to_markdown"]


def pair_up(rows_a: list[JudgedResponse], rows_b: list[JudgedResponse],
            limit: int | None = None) -> list[tuple[JudgedResponse, JudgedResponse]]:
    """Sample-0 responses of both dirs matched by id, in the order of ``rows_a``."""
    b_by_id = {r.id: r for r in rows_b if r.sample == 0}
    pairs = []
    for r in rows_a:
        if r.sample != 0 or r.id not in b_by_id:
            continue
        rb = b_by_id[r.id]
        if rb.prompt != r.prompt:
            raise SafealignError(f"id '{r.id}' has different prompts in the two dirs", field="id")
        pairs.append((r, rb))
    if limit:
        pairs = pairs[:limit]
    return pairs


def _outcome(pick_ab: str | None, pick_ba: str | None) -> tuple[str, bool | None]:
    """(winner a|b|tie, followed_position) from the letters picked with a first, then with b first."""
    if pick_ab is None or pick_ba is None:
        return "tie", None
    model_ab = "a" if pick_ab == "A" else "b"
    model_ba = "b" if pick_ba == "A" else "a"
    return (model_ab if model_ab == model_ba else "tie"), pick_ab == pick_ba


def compare(dir_a: str | Path, dir_b: str | Path, judge: str, out_dir: str | Path, limit: int | None = None,
            base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", batch_size: int = 8,
            timeout: float | None = None) -> dict:
    """Judge every matched pair in both orders; write and return the summary (see the module docstring).
    ``timeout``: seconds an ``openai:`` judge waits for each answer (its default when None)."""
    from safealign.progress import progress_bar

    rows_a, rows_b = read_responses(dir_a), read_responses(dir_b)
    pairs = pair_up(rows_a, rows_b, limit)
    if not pairs:
        raise SafealignError("the two result dirs share no prompt id", file=str(dir_b), field="id")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items_path = out / "compare_items.jsonl"
    done = _read_done(items_path, judge)
    todo = [(ra, rb) for ra, rb in pairs if ra.id not in done]
    if todo:
        pj = get_pairwise_judge(judge, base_url=base_url, api_key_env=api_key_env, timeout=timeout,
                                batch_size=batch_size)
        with progress_bar() as bar, open(items_path, "a", encoding="utf-8") as f:
            task = bar.add_task(f"comparing ({pj.name})", total=len(pairs), completed=len(pairs) - len(todo))
            for start in range(0, len(todo), pj.batch_size):
                chunk = todo[start:start + pj.batch_size]
                texts = [build_prompt(ra.prompt, ra.response, rb.response) for ra, rb in chunk]
                texts += [build_prompt(ra.prompt, rb.response, ra.response) for ra, rb in chunk]
                picks = pj.prefer(texts)
                lines = []
                for j, (ra, rb) in enumerate(chunk):
                    (pick_ab, p_ab), (pick_ba, p_ba) = picks[j], picks[len(chunk) + j]
                    winner, followed = _outcome(pick_ab, pick_ba)
                    lines.append({
                        "id": ra.id, "benchmark": ra.benchmark, "prompt": ra.prompt,
                        "response_a": ra.response, "response_b": rb.response,
                        "pick_ab": pick_ab, "pick_ba": pick_ba, "p_first_ab": p_ab, "p_first_ba": p_ba,
                        "winner": winner, "followed_position": followed, "judge": judge,
                    })
                append_jsonl(f, lines)
                bar.advance(task, len(chunk))
    wanted = {ra.id for ra, _ in pairs}
    items = [it for it in _read_items(items_path) if it.get("id") in wanted]
    summary = summarize(items)
    summary.update({"judge": judge, "a": {"dir": str(dir_a), "model": rows_a[0].model},
                    "b": {"dir": str(dir_b), "model": rows_b[0].model}})
    write_json(out / "compare.json", summary)
    write_text(out / "compare.md", to_markdown(summary))
    return summary


def _read_items(path: Path) -> list[dict]:
    """The judged pairs of ``compare_items.jsonl``, the first line of each id (``safealign.io``'s JSONL rule; a last
    line cut by a kill is cut off here, and that pair is judged again)."""
    repair_jsonl(path)
    items, seen = [], set()
    for it in read_jsonl(path, missing_ok=True):
        if it.get("id") not in seen:
            seen.add(it.get("id"))
            items.append(it)
    return items


def _read_done(path: Path, judge: str) -> set[str]:
    items = _read_items(path)
    if items and items[0].get("judge") != judge:
        raise SafealignError(f"holds comparisons by another judge ({items[0].get('judge')}); use another --out",
                             file=str(path), field="judge")
    return {it["id"] for it in items}


def summarize(items: list[dict]) -> dict[str, Any]:
    n = len(items)
    wins = {w: sum(it["winner"] == w for it in items) for w in ("a", "tie", "b")}
    valid = [it for it in items if it["followed_position"] is not None]
    picks = [p for it in valid for p in (it["pick_ab"], it["pick_ba"])]
    per_bench: dict[str, dict[str, int]] = {}
    for it in items:
        row = per_bench.setdefault(str(it.get("benchmark")), {"n": 0, "a": 0, "tie": 0, "b": 0})
        row["n"] += 1
        row[it["winner"]] += 1
    return {
        "n": n,
        "win_a": rate_ci(wins["a"], n), "tie": rate_ci(wins["tie"], n), "win_b": rate_ci(wins["b"], n),
        "order_flip_rate": rate_ci(sum(bool(it["followed_position"]) for it in valid), len(valid)),
        "first_position_rate": rate_ci(sum(p == "A" for p in picks), len(picks)),
        "invalid": n - len(valid),
        "per_benchmark": per_bench,
        "method": "each pair judged in both orders; a win needs both orders to agree, otherwise a tie; "
                  "order_flip_rate = share of pairs where the judge named the same position in both orders; "
                  "95% Wilson intervals",
    }


def _fmt(r: dict[str, Any]) -> tuple[str, str]:
    if r["rate"] is None:
        return "–", "–"
    return f"{r['rate']:.3f} ({r['k']}/{r['n']})", f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def to_markdown(s: dict[str, Any]) -> str:
    lines = ["# Pairwise comparison: a vs b", "",
             f"- a: `{s['a']['dir']}` ({s['a']['model']})", f"- b: `{s['b']['dir']}` ({s['b']['model']})",
             f"- judge: `{s['judge']}`, {s['n']} prompts, each judged in both orders", "",
             "| outcome | rate | 95% CI |", "|---|---|---|"]
    for label, key in (("a wins (both orders)", "win_a"), ("tie / orders disagree", "tie"),
                       ("b wins (both orders)", "win_b"), ("order flip (verdict followed position)", "order_flip_rate"),
                       ("first answer picked (single verdicts)", "first_position_rate")):
        lines.append(f"| {label} | {' | '.join(_fmt(s[key]))} |")
    if s["invalid"]:
        lines += ["", f"{s['invalid']} pair(s) had an unreadable verdict and count as ties."]
    lines += ["", "| benchmark | n | a wins | ties | b wins |", "|---|---|---|---|---|"]
    for bench, r in sorted(s["per_benchmark"].items()):
        lines.append(f"| {bench} | {r['n']} | {r['a']} | {r['tie']} | {r['b']} |")
    lines += ["", "A high order-flip rate means the judge mostly follows position; read win rates with care.", ""]
    return "\n".join(lines)

