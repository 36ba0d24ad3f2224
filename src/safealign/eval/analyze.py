"""Error analysis (the paper's tables 7–8): where did safety change between two runs, and why.

``analyze(dir_a, dir_b, out_dir)`` takes two ``safealign eval`` result dirs (e.g. base vs tuned), matches
responses by (id, sample), and reports per benchmark, overall, and over the harmful benchmarks pooled
(``harmful``: every benchmark whose prompts all expect a refusal):
- the 2×2 confusion of safe/unsafe (a safe & b safe, a safe → b unsafe, a unsafe → b safe, both unsafe),
  the two safe rates, their paired difference with a 95% interval, and an exact McNemar p-value on the
  discordant pairs;
- the same 2×2 for refusals (b refuses where a answered shows over-refusal creeping in);
- every prompt that flipped to unsafe (listed with both responses) and the ids that flipped to safe;
- the safe rate per category (``category``: harm tags, XSTest types), a vs b;
- helpfulness (``helpful``), where both dirs scored it (``helpful_items.jsonl``): per metric (ROUGE-L, semantic
  similarity, reward) the two means and their paired difference b - a with a 95% interval, on the prompts both
  answered — so that "helpfulness not below base" is read off an interval, not two overlapping ones.

``analyze_raft(raft_dir, out_dir)`` reads a RAFT run's ``iterations/iter_<t>/samples.jsonl`` (fields
``prompt``, ``response``, ``score``, ``sample``, ``safe``; ``harmful`` optional) and compares, per iteration,
the model's single response (sample 0) with the best-of-K pick of the ranker (highest ``score``): how often
best-of-K was safe when sample 0 was not, and vice versa, and which prompts the ranker pushed to an unsafe
pick — a weak ranker picking unsafe answers is how RAFT made the paper's models worse.

Both write ``OUT/analysis.json`` and ``OUT/analysis.md`` (``analyze_raft`` writes ``raft_analysis.*``
when given the same out dir, so both can live together).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.eval.responses import read_responses
from safealign.io import iter_jsonl, write_json, write_text
from safealign.records import JudgedResponse
from safealign.stats import mcnemar_p, paired_delta, paired_mean_delta, rate

__all__ = ["analysis_markdown", "analyze", "analyze_raft", "confusion", "helpful_deltas", "mcnemar_p", "raft_markdown"]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def confusion(pairs: Iterable[tuple[bool, bool]]) -> dict[str, Any]:
    """2×2 counts of (a, b) booleans with both rates and McNemar's p."""
    c = {"n": 0, "both": 0, "a_only": 0, "b_only": 0, "neither": 0}
    for a, b in pairs:
        c["n"] += 1
        c["both" if a and b else "a_only" if a else "b_only" if b else "neither"] += 1
    c["rate_a"] = _round(rate(c["both"] + c["a_only"], c["n"]))
    c["rate_b"] = _round(rate(c["both"] + c["b_only"], c["n"]))
    c["mcnemar_p"] = round(mcnemar_p(c["a_only"], c["b_only"]), 6)
    c["delta"], c["delta_ci"] = paired_delta(c["a_only"], c["b_only"], c["n"])
    return c


HELPFUL_METRICS = ("rouge_l", "semantic_similarity", "reward")


def _helpful_items(result_dir: str | Path) -> dict[tuple[str, int], dict]:
    """``DIR/helpful_items.jsonl`` by (id, sample), under ``safealign.io``'s JSONL rule; none when it is missing."""
    path = Path(result_dir) / "helpful_items.jsonl"
    if not path.exists():
        return {}
    items = {}
    for lineno, row in iter_jsonl(path):
        try:
            items[(str(row["id"]), int(row.get("sample", 0)))] = row
        except (KeyError, TypeError, ValueError):
            raise SafealignError("not a helpfulness item", file=str(path), line=lineno, field="id") from None
    return items


def helpful_deltas(dir_a: str | Path, dir_b: str | Path) -> dict[str, dict[str, Any]]:
    """Per helpfulness metric scored in both dirs: ``n``, ``mean_a``, ``mean_b``, ``delta`` (mean of b - a over the
    prompts both scored) and ``delta_ci`` (95%, normal approximation on the per-prompt differences)."""
    items_a, items_b = _helpful_items(dir_a), _helpful_items(dir_b)
    out: dict[str, dict[str, Any]] = {}
    for metric in HELPFUL_METRICS:
        pairs = [(a[metric], items_b[key][metric]) for key, a in items_a.items()
                 if key in items_b and isinstance(a.get(metric), (int, float))
                 and isinstance(items_b[key].get(metric), (int, float))]
        delta = paired_mean_delta(pairs)
        if delta is not None:
            out[metric] = delta
    return out


def _verdict(row: JudgedResponse, key: str, source: str) -> bool:
    v = getattr(row, key)
    if not isinstance(v, bool):
        raise SafealignError(f"response '{row.id}' has no verdict (judge it with `safealign eval`)",
                             file=source, field=key)
    return v


def analyze(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path) -> dict:
    """Compare the verdicts of two result dirs (see the module docstring); writes analysis.json/md."""
    rows_a, rows_b = read_responses(dir_a), read_responses(dir_b)
    src_a, src_b = str(Path(dir_a) / "responses.jsonl"), str(Path(dir_b) / "responses.jsonl")
    by_key_b = {(r.id, r.sample): r for r in rows_b}
    matched = [(ra, by_key_b[(ra.id, ra.sample)]) for ra in rows_a if (ra.id, ra.sample) in by_key_b]
    if not matched:
        raise SafealignError("the two result dirs share no (id, sample)", file=str(dir_b), field="id")
    safe = [(_verdict(a, "safe", src_a), _verdict(b, "safe", src_b)) for a, b in matched]
    has_refusal = all(isinstance(a.refusal, bool) and isinstance(b.refusal, bool) for a, b in matched)
    refusal = [(a.refusal, b.refusal) for a, b in matched] if has_refusal else []

    benches = sorted({str(a.benchmark) for a, _ in matched})
    harmful = [b for b in benches if _expected(a for a, _ in matched if str(a.benchmark) == b) == "refuse"]
    per_bench: dict[str, Any] = {}
    for bench in benches + ["overall"] + (["harmful"] if harmful else []):
        idx = [i for i, (a, _) in enumerate(matched) if bench == "overall" or str(a.benchmark) == bench
               or (bench == "harmful" and str(a.benchmark) in harmful)]
        per_bench[bench] = {"expected": _expected(matched[i][0] for i in idx),
                            "safe": confusion(safe[i] for i in idx),
                            "refusal": confusion(refusal[i] for i in idx) if has_refusal else None}

    categories: dict[tuple[str, str], list[int]] = {}
    for i, (a, _) in enumerate(matched):
        if a.category is not None:
            categories.setdefault((str(a.benchmark), str(a.category)), []).append(i)
    per_category = []
    for (bench, cat), idx in sorted(categories.items()):
        c = confusion(safe[i] for i in idx)
        per_category.append({"benchmark": bench, "category": cat, "n": c["n"], "safe_rate_a": c["rate_a"],
                             "safe_rate_b": c["rate_b"], "delta": round(c["rate_b"] - c["rate_a"], 6)})

    flipped_unsafe = [{"id": a.id, "sample": a.sample, "benchmark": a.benchmark, "category": a.category,
                       "prompt": a.prompt, "response_a": a.response, "response_b": b.response}
                      for (a, b), (sa, sb) in zip(matched, safe) if sa and not sb]
    flipped_safe = [a.id for (a, _), (sa, sb) in zip(matched, safe) if sb and not sa]
    result = {
        "a": {"dir": str(dir_a), "model": rows_a[0].model, "judge": rows_a[0].judge},
        "b": {"dir": str(dir_b), "model": rows_b[0].model, "judge": rows_b[0].judge},
        "n_matched": len(matched), "n_only_a": len(rows_a) - len(matched), "n_only_b": len(rows_b) - len(matched),
        "benchmarks": per_bench, "per_category": per_category,
        "flipped_to_unsafe": flipped_unsafe, "flipped_to_safe": flipped_safe,
    }
    helpful = helpful_deltas(dir_a, dir_b)
    if helpful:
        result["helpful"] = helpful
    if result["a"]["judge"] != result["b"]["judge"]:
        result["warning"] = "the two dirs were judged by different judges; flips may be judge disagreement"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", result)
    write_text(out / "analysis.md", analysis_markdown(result))
    return result


def _expected(rows: Iterable[JudgedResponse]) -> str | None:
    kinds = {r.expected for r in rows}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _short(text: str, n: int = 100) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= n else text[:n - 1] + "…"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def analysis_markdown(r: dict[str, Any]) -> str:
    lines = ["# Error analysis: a vs b", "",
             f"- a: `{r['a']['dir']}` ({r['a']['model']}, judge {r['a']['judge']})",
             f"- b: `{r['b']['dir']}` ({r['b']['model']}, judge {r['b']['judge']})",
             f"- {r['n_matched']} responses matched by (id, sample); {r['n_only_a']} only in a, {r['n_only_b']} only in b"]
    if r.get("warning"):
        lines.append(f"- **warning**: {r['warning']}")
    lines += ["", "## Safe / unsafe (2×2)", "",
              "| benchmark | n | safe a | safe b | both safe | a safe → b unsafe | a unsafe → b safe | both unsafe | McNemar p |",
              "|---|---|---|---|---|---|---|---|---|"]
    for bench, row in r["benchmarks"].items():
        c = row["safe"]
        name = f"**{bench}**" if bench == "overall" else bench
        lines.append(f"| {name} | {c['n']} | {_pct(c['rate_a'])} | {_pct(c['rate_b'])} | {c['both']} | {c['a_only']} | "
                     f"{c['b_only']} | {c['neither']} | {c['mcnemar_p']:.3g} |")
    if all(row["refusal"] for row in r["benchmarks"].values()):
        lines += ["", "## Refusals (2×2)", "",
                  "| benchmark | expected | refuse a | refuse b | both refuse | only a refuses | only b refuses | neither |",
                  "|---|---|---|---|---|---|---|---|"]
        for bench, row in r["benchmarks"].items():
            c = row["refusal"]
            lines.append(f"| {bench} | {row['expected']} | {_pct(c['rate_a'])} | {_pct(c['rate_b'])} | {c['both']} | "
                         f"{c['a_only']} | {c['b_only']} | {c['neither']} |")
    if r["per_category"]:
        lines += ["", "## Safe rate per category", "", "| benchmark | category | n | safe a | safe b | Δ |",
                  "|---|---|---|---|---|---|"]
        for c in r["per_category"]:
            lines.append(f"| {c['benchmark']} | {c['category']} | {c['n']} | {_pct(c['safe_rate_a'])} | "
                         f"{_pct(c['safe_rate_b'])} | {100 * c['delta']:+.1f} |")
    lines += ["", f"## Flipped to unsafe ({len(r['flipped_to_unsafe'])})", ""]
    if r["flipped_to_unsafe"]:
        lines += ["| id | benchmark | prompt | response b |", "|---|---|---|---|"]
        for f in r["flipped_to_unsafe"]:
            lines.append(f"| {f['id']} | {f['benchmark']} | {_short(f['prompt'])} | {_short(f['response_b'])} |")
    else:
        lines.append("none")
    lines += ["", f"Flipped to safe: {len(r['flipped_to_safe'])}"
              + (f" ({', '.join(r['flipped_to_safe'][:30])}{', …' if len(r['flipped_to_safe']) > 30 else ''})"
                 if r["flipped_to_safe"] else ""), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- RAFT


def _raft_iterations(raft_dir: Path) -> list[tuple[int, Path]]:
    if not raft_dir.is_dir():
        raise SafealignError("RAFT dir not found", file=str(raft_dir))
    found = []
    for p in (raft_dir / "iterations").glob("iter_*/samples.jsonl"):
        m = re.fullmatch(r"iter_(\d+)", p.parent.name)
        if m:
            found.append((int(m.group(1)), p))
    if not found:
        raise SafealignError("not a RAFT run dir (no iterations/iter_<t>/samples.jsonl)", file=str(raft_dir))
    return sorted(found)


def _read_samples(path: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for lineno, o in iter_jsonl(path):
        for key, kind in (("prompt", str), ("response", str), ("sample", int), ("safe", bool)):
            if not isinstance(o.get(key), kind):
                raise SafealignError(f"missing or not a {kind.__name__}", file=str(path), line=lineno, field=key)
        if not isinstance(o.get("score"), (int, float)) or isinstance(o.get("score"), bool):
            raise SafealignError("missing or not a number", file=str(path), line=lineno, field="score")
        groups.setdefault(o["prompt"], []).append(o)
    return groups


def analyze_raft(raft_dir: str | Path, out_dir: str | Path) -> dict:
    """Sample 0 vs best-of-K per RAFT iteration (see the module docstring); writes raft_analysis.json/md."""
    raft_dir = Path(raft_dir)
    iterations = []
    for t, path in _raft_iterations(raft_dir):
        groups = _read_samples(path)
        pairs, flipped, harmful_flags, scores = [], [], [], []
        for prompt, samples in groups.items():
            single = next((s for s in samples if s["sample"] == 0), None)
            if single is None:
                raise SafealignError(f"prompt has no sample 0: {_short(prompt, 60)}", file=str(path), field="sample")
            best = max(samples, key=lambda s: (s["score"], -s["sample"]))  # ties: the lowest sample index
            pairs.append((single["safe"], best["safe"]))
            harmful_flags.append(single.get("harmful"))
            scores.append((single["score"], best["score"]))
            if single["safe"] and not best["safe"]:
                flipped.append({"prompt": prompt, "harmful": single.get("harmful"), "response_0": single["response"],
                                "score_0": single["score"], "response_best": best["response"],
                                "score_best": best["score"], "sample_best": best["sample"]})
        c = confusion(pairs)
        row = {"iteration": t, "n_prompts": len(groups), "k": max(len(s) for s in groups.values()),
               "single_safe_rate": c["rate_a"], "best_safe_rate": c["rate_b"],
               "both_safe": c["both"], "best_safe_single_unsafe": c["b_only"],
               "single_safe_best_unsafe": c["a_only"], "both_unsafe": c["neither"], "mcnemar_p": c["mcnemar_p"],
               "mean_score_single": round(sum(s for s, _ in scores) / len(scores), 6),
               "mean_score_best": round(sum(b for _, b in scores) / len(scores), 6),
               "flipped_to_unsafe": flipped}
        if all(isinstance(h, bool) for h in harmful_flags):
            row["by_prompt_kind"] = {
                kind: confusion(p for p, h in zip(pairs, harmful_flags) if h == flag)
                for kind, flag in (("harmful", True), ("benign", False))}
        iterations.append(row)
    result = {"raft_dir": str(raft_dir), "iterations": iterations,
              "note": "sample 0 is the single response of the iteration's starting model; best is the ranker's "
                      "best-of-K pick (highest score); safe is the independent judge's verdict"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "raft_analysis.json", result)
    write_text(out / "raft_analysis.md", raft_markdown(result))
    return result


def raft_markdown(r: dict[str, Any]) -> str:
    lines = ["# RAFT error analysis: single response (sample 0) vs best-of-K", "", f"- run: `{r['raft_dir']}`",
             f"- {r['note']}", "",
             "| iteration | prompts | K | safe (sample 0) | safe (best-of-K) | both safe | best safe, sample 0 unsafe | "
             "sample 0 safe, best unsafe | both unsafe | McNemar p | mean score 0 → best |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for it in r["iterations"]:
        lines.append(f"| {it['iteration']} | {it['n_prompts']} | {it['k']} | {_pct(it['single_safe_rate'])} | "
                     f"{_pct(it['best_safe_rate'])} | {it['both_safe']} | {it['best_safe_single_unsafe']} | "
                     f"{it['single_safe_best_unsafe']} | {it['both_unsafe']} | {it['mcnemar_p']:.3g} | "
                     f"{it['mean_score_single']:.3f} → {it['mean_score_best']:.3f} |")
    for it in r["iterations"]:
        if it.get("by_prompt_kind"):
            lines += ["", f"Iteration {it['iteration']} by prompt kind: " + "; ".join(
                f"{kind}: n={c['n']}, safe {_pct(c['rate_a'])} → {_pct(c['rate_b'])}"
                for kind, c in it["by_prompt_kind"].items())]
        lines += ["", f"## Iteration {it['iteration']}: prompts the ranker pushed to an unsafe pick "
                      f"({len(it['flipped_to_unsafe'])})", ""]
        if it["flipped_to_unsafe"]:
            lines += ["| prompt | sample 0 | best pick | score 0 → best |", "|---|---|---|---|"]
            for f in it["flipped_to_unsafe"]:
                lines.append(f"| {_short(f['prompt'])} | {_short(f['response_0'], 80)} | "
                             f"{_short(f['response_best'], 80)} | {f['score_0']:.3f} → {f['score_best']:.3f} |")
        else:
            lines.append("none")
    lines.append("")
    return "\n".join(lines)
