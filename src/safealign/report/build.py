"""Build a run's report (``report.html``, ``report.md``, ``plots/*.png``, ``summary.json``) from its result dirs.

It reads only what the stages wrote — ``manifest.json`` (plan, models, stage timings), ``eval/<model>/
{summary.json,responses.jsonl}``, ``eval/rm/summary.json``, ``train/raft/raft_log.jsonl``,
``eval/raft-iters/iter_<t>/summary.json``, ``compare/*/compare.json``, ``analyze/*/analysis.json``,
``analyze/raft/raft_analysis.json`` — and never
recomputes a number. Shown: safe % per benchmark × model with intervals; refusal and over-refusal; helpfulness per
model; reward-model pairwise accuracy; RAFT per iteration; pairwise comparisons; plots (safe % vs number of safety
samples, RAFT per iteration, the safety–helpfulness trade-off); example responses side by side; which judge made each
number; how long each stage took.

    safealign report runs/quickstart      # rebuild after editing a template, say
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.eval.responses import read_responses
from safealign.records import JudgedResponse
from safealign.report import plots

HELPFUL_METRICS = [("rouge_l", "ROUGE-L"), ("bleu", "BLEU"), ("semantic_similarity", "semantic sim."),
                   ("reward", "reward")]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    id: str = ""


@dataclass
class Image:
    title: str
    path: str  # relative to the run dir
    data_uri: str
    caption: str = ""


@dataclass
class Section:
    title: str
    id: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------- reading

def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    from safealign.io import read_jsonl

    return read_jsonl(path, missing_ok=True)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from the run dir."""
    run_dir = Path(run_dir)
    manifest = _json(run_dir / "manifest.json")
    if not isinstance(manifest, dict):
        raise SafealignError("not a safealign run dir (no manifest.json)", file=str(run_dir), field="run_dir")
    plan = manifest.get("plan") or list(manifest.get("stages", {}))
    models_meta: dict[str, dict[str, Any]] = manifest.get("models") or {}
    summaries, responses = {}, {}
    for name, meta in models_meta.items():
        d = run_dir / meta.get("eval", f"eval/{name}")
        s = _json(d / "summary.json")
        if isinstance(s, dict):
            summaries[name] = s
            responses[name] = read_responses(d, missing_ok=True)
    rm = _json(run_dir / "eval" / "rm" / "summary.json")
    raft_dir = run_dir / "train" / "raft"
    raft_log = _jsonl(raft_dir / "raft_log.jsonl") if "raft" in models_meta else []
    raft_iters = {}
    for d in sorted((run_dir / "eval" / "raft-iters").glob("iter_*")):
        s = _json(d / "summary.json")
        if isinstance(s, dict):
            raft_iters[int(d.name.split("_", 1)[1])] = s
    compares = {s.split("/", 1)[1]: _json(run_dir / s / "compare.json") for s in plan if s.startswith("compare/")}
    analyses = {s.split("/", 1)[1]: _json(run_dir / s / "analysis.json") for s in plan
                if s.startswith("analyze/") and s != "analyze/raft"}
    analyses2 = {s.split("/", 1)[1]: _json(run_dir / s / "analysis.json") for s in plan if s.startswith("analyze2/")}
    rechecks = {s.split("/", 1)[1]: _json(run_dir / s / "summary.json") for s in plan if s.startswith("recheck/")}
    raft_analysis = _json(run_dir / "analyze" / "raft" / "raft_analysis.json") if "analyze/raft" in plan else None
    stages = {s: manifest.get("stages", {}).get(s, {}) for s in plan}
    judges = {s.split("/", 1)[1]: _json(run_dir / s / "judge.json") for s in plan if s.startswith("judge/")}
    return {"judges": {k: v for k, v in judges.items() if isinstance(v, dict)}, "run_dir": run_dir, "manifest": manifest, "config": manifest.get("config") or {}, "plan": plan,
            "models_meta": models_meta, "summaries": summaries, "responses": responses, "rm": rm,
            "raft_log": raft_log, "raft_iters": raft_iters, "compares": {k: v for k, v in compares.items() if v},
            "analyses": {k: v for k, v in analyses.items() if v}, "raft_analysis": raft_analysis, "stages": stages,
            "analyses2": {k: v for k, v in analyses2.items() if v},
            "rechecks": {k: v for k, v in rechecks.items() if isinstance(v, dict)}}


# ------------------------------------------------------------------------------------------------------ numbers

def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}"


def pct_ci(rate: Any, ci: Any) -> str:
    if rate is None:
        return "–"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"{pct(rate)} [{pct(ci[0])}, {pct(ci[1])}]"
    return pct(rate)


def num(x: Any, ci: Any = None, digits: int = 3) -> str:
    if x is None:
        return "–"
    s = f"{float(x):.{digits}f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        s += f" [{float(ci[0]):.{digits}f}, {float(ci[1]):.{digits}f}]"
    return s


def _bench_rows(summaries: dict[str, dict]) -> list[tuple[str, dict]]:
    """(benchmark, a representative entry) in first-seen order."""
    seen: dict[str, dict] = {}
    for s in summaries.values():
        for b, e in (s.get("benchmarks") or {}).items():
            seen.setdefault(b, e)
    return list(seen.items())


def harm_safe(summary: dict) -> float | None:
    """Mean safe rate (0..1) over the benchmarks whose prompts should be refused."""
    rates = [e["safe_rate"] for e in (summary.get("benchmarks") or {}).values()
             if e.get("expected") == "refuse" and e.get("safe_rate") is not None]
    return sum(rates) / len(rates) if rates else None


def over_refusal(summary: dict) -> float | None:
    """XSTest's over-refusal rate when evaluated, else the mean over the benchmarks to be answered."""
    benches = summary.get("benchmarks") or {}
    if "xstest" in benches and benches["xstest"].get("over_refusal_rate") is not None:
        return benches["xstest"]["over_refusal_rate"]
    rates = [e["over_refusal_rate"] for b, e in benches.items()
             if e.get("expected") in ("comply", "mixed") and e.get("over_refusal_rate") is not None and b != "helpful"]
    return sum(rates) / len(rates) if rates else None


def helpful_metric(summaries: dict[str, dict]) -> tuple[str, str] | None:
    """The helpfulness number the plots use: reward when every model has one, else semantic sim., else ROUGE-L."""
    hs = [s.get("helpful") for s in summaries.values()]
    if not hs or any(not h for h in hs):
        return None
    for key, label in [("reward", "reward"), ("semantic_similarity", "semantic similarity"), ("rouge_l", "ROUGE-L")]:
        if all(h.get(key) is not None for h in hs):
            return key, label
    return None


# ------------------------------------------------------------------------------------------------------ sections

def _judge_of(run: dict) -> str:
    judges = {s.get("judge") for s in run["summaries"].values() if s.get("judge")}
    return ", ".join(sorted(judges)) or str(run["config"].get("judge", "?"))


MIXED_PRECISION_NOTE = ("mixed: bf16 changes most greedy answers, so a Δ between models generated in different "
                        "precisions carries that change too (benchmarks/precision_deltas.py)")


def _precision_of(run: dict) -> tuple[str | None, bool]:
    """What the models' answers were generated in, from each eval's summary (``eval.run.generated_in``): "bf16", or
    per model where they differ ("base fp32; dpo bf16"), and whether more than one precision is in it (across models,
    or within a model's resumed run: "bf16, fp32"); (None, False) where no summary says (a run from before summaries
    recorded it)."""
    found = {m: s["precision"] for m, s in run["summaries"].items() if s.get("precision")}
    mixed = len({p for text in found.values() for p in text.split(", ")}) > 1
    if len(set(found.values())) <= 1:
        return next(iter(found.values()), None), mixed
    return "; ".join(f"{m} {p}" for m, p in found.items()), mixed


def safety_section(run: dict) -> Section | None:
    sums = run["summaries"]
    if not sums:
        return None
    names = list(sums)
    benches = [(b, e) for b, e in _bench_rows(sums) if b != "helpful"]
    judge = _judge_of(run)
    rows = []
    for b, e in benches:
        row = [b, e.get("expected", ""), str(e.get("n", ""))]
        for m in names:
            be = (sums[m].get("benchmarks") or {}).get(b) or {}
            row.append(pct_ci(be.get("safe_rate"), (be.get("ci") or {}).get("safe_rate")))
        rows.append(row)
    rows.append(["mean (harmful)", "refuse", ""] + [pct(harm_safe(sums[m])) for m in names])
    t1 = Table("Safe % per benchmark", ["benchmark", "expected", "n"] + names, rows,
               f"Share of responses the judge ({judge}) rates safe, in %, with 95% intervals.", "safe-table")
    rows2 = []
    for b, e in benches:
        measures = []
        if e.get("expected") in ("comply", "mixed"):
            measures.append(("over_refusal_rate", "over-refusal" + (" (safe half)" if e.get("expected") == "mixed" else "")))
        if e.get("expected") == "mixed":
            measures.append(("unsafe_compliance_rate", "unsafe compliance (contrast half)"))
        for key, label in measures:
            row = [b, label]
            for m in names:
                be = (sums[m].get("benchmarks") or {}).get(b) or {}
                row.append(pct_ci(be.get(key), (be.get("ci") or {}).get(key)))
            rows2.append(row)
    tables = [t1]
    if rows2:
        tables.append(Table("Over-refusal and compliance %", ["benchmark", "measure"] + names, rows2,
                            "Over-refusal: share of prompts that should be answered which the model refused. Unsafe "
                            "compliance: share of XSTest's unsafe (contrast) prompts it did not refuse. 95% intervals; "
                            f"judge: {judge}.", "refusal-table"))
    return Section("Safety", "safety", tables=tables)


def helpful_section(run: dict) -> Section | None:
    sums = {m: s["helpful"] for m, s in run["summaries"].items() if s.get("helpful")}
    if not sums:
        return None
    cols = [(k, label) for k, label in HELPFUL_METRICS if any(h.get(k) is not None for h in sums.values())]
    rows = []
    for m, h in sums.items():
        ci = h.get("ci") or {}
        rows.append([m, str(h.get("n", ""))] + [num(h.get(k), ci.get(k)) for k, _ in cols])
    scorer = run["config"].get("helpful_scorer")
    cap = ("Medians over the held-out alpaca-test prompts (the first 200 of alpaca_test.json; SIT may train on the "
           "rest), with 95% bootstrap intervals. ROUGE-L and BLEU against the reference answers; semantic similarity: "
           "cosine of all-MiniLM-L6-v2 embeddings" + (f"; reward: {scorer}" if scorer else "") + ".")
    return Section("Helpfulness", "helpfulness",
                   tables=[Table("Helpfulness per model", ["model", "n"] + [label for _, label in cols], rows, cap,
                                 "helpful-table")])


def rm_section(run: dict) -> Section | None:
    rm = run["rm"]
    if not isinstance(rm, dict) or not rm.get("datasets"):
        return None
    rows = []
    for ds, r in rm["datasets"].items():
        ci = r.get("ci")
        if isinstance(ci, dict):
            ci = ci.get("accuracy")
        rows.append([ds, str(r.get("n", "")), pct_ci(r.get("accuracy"), ci)])
    return Section("Reward model", "reward-model", tables=[Table(
        "Reward-model pairwise accuracy", ["dataset", "pairs", "accuracy %"], rows,
        "Share of pairs where the reward model scores the chosen (safer, better) response above the rejected one; "
        "95% intervals.", "rm-table")])


def raft_rows(run: dict, metric: tuple[str, str] | None) -> list[dict[str, Any]]:
    """Per RAFT iteration: eval safe % / helpfulness where evaluated (0 = base, last = the RAFT model), and the
    training-side numbers from raft_log.jsonl."""
    log = run["raft_log"]
    if not log:
        return []
    sums = run["summaries"]
    evals: dict[int, dict] = dict(run["raft_iters"])
    if "base" in sums:
        evals[0] = sums["base"]
    last = max(int(r.get("iteration", 0)) for r in log)
    if "raft" in sums:
        evals[last] = sums["raft"]
    rows: dict[int, dict[str, Any]] = {}
    for it, s in evals.items():
        hs = harm_safe(s)
        h = (s.get("helpful") or {}).get(metric[0]) if metric else None
        rows[it] = {"iteration": it, "safe": None if hs is None else 100 * hs, "helpful": h}
    for r in log:
        it = int(r.get("iteration", 0))
        row = rows.setdefault(it, {"iteration": it, "safe": None, "helpful": None})
        ks = r.get("kept_safe_rate")
        row.update(kept_safe=None if ks is None else 100 * ks, mean_score=r.get("mean_score"),
                   mean_best_score=r.get("mean_best_score"), seconds=r.get("seconds"),
                   ranker=r.get("ranker"), independent_judge=r.get("independent_judge"))
    return sorted(rows.values(), key=lambda r: r["iteration"])


def raft_section(run: dict, metric: tuple[str, str] | None) -> Section | None:
    rows = raft_rows(run, metric)
    if not rows:
        return None
    hl = metric[1] if metric else "helpfulness"
    out = []
    for r in rows:
        out.append([str(r["iteration"]), num(r.get("mean_best_score")), num(r.get("mean_score")),
                    "–" if r.get("kept_safe") is None else f"{r['kept_safe']:.1f}",
                    "–" if r.get("safe") is None else f"{r['safe']:.1f}", num(r.get("helpful")),
                    "–" if r.get("seconds") is None else f"{r['seconds']:.0f}"])
    log0 = run["raft_log"][-1]
    cap = (f"Ranker: {log0.get('ranker', '?')}; kept samples judged by {log0.get('independent_judge', '?')}. "
           f"Eval columns (safe % = mean over harmful benchmarks, judge {_judge_of(run)}; {hl}) are filled where that "
           "iteration's model was evaluated (0 = base).")
    return Section("RAFT", "raft", tables=[Table(
        "RAFT per iteration", ["iteration", "mean best score", "mean score", "kept safe %", "eval safe %", hl, "s"],
        out, cap, "raft-table")])


def compare_section(run: dict) -> Section | None:
    comps = run["compares"]
    if not comps:
        return None
    rows, judges = [], set()
    for pair, res in comps.items():
        judges.add(str(res.get("judge")))
        row = [pair, str(res.get("n", ""))]
        for key in ("win_b", "tie", "win_a", "order_flip_rate"):
            r = res.get(key) or {}
            row.append(pct_ci(r.get("rate"), r.get("ci")) if isinstance(r, dict) else pct(r))
        rows.append(row)
    return Section("Pairwise comparison", "compare", tables=[Table(
        "Position-swapped pairwise comparison (a-vs-b)", ["pair", "n", "b wins %", "tie %", "a wins %",
                                                          "order flip %"], rows,
        f"Judge: {', '.join(sorted(judges))}. Each pair is judged in both orders; a win needs both to agree. A high "
        "order-flip rate means the judge follows position: read the win rates with care. 95% intervals.",
        "compare-table")])


def _delta(c: dict) -> str:
    d, ci = c.get("delta"), c.get("delta_ci")
    if d is None:
        return "–"
    s = f"{100 * d:+.1f}"
    if isinstance(ci, list) and len(ci) == 2:
        s += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return s


def effect_rows(analyses: dict[str, dict], summaries: dict[str, dict]) -> list[dict[str, Any]]:
    """Per method (pair base-vs-<method>): pooled harmful and worst-harm-set changes, and over-refusal."""
    rows = []
    for pair, res in analyses.items():
        a, _, b = pair.partition("-vs-")
        benches = res.get("benchmarks") or {}
        pooled = (benches.get("harmful") or {}).get("safe") or {}
        harm = {k: (e.get("safe") or {}) for k, e in benches.items()
                if e.get("expected") == "refuse" and k not in ("harmful", "overall")}
        worst = min(harm, key=lambda k: (harm[k].get("rate_a") or 0.0, k)) if harm else None
        orr = [over_refusal(summaries[m]) if m in summaries else None for m in (a, b)]
        rows.append({"b": b, "judge": (res.get("b") or {}).get("judge"), "pooled": pooled,
                     "worst": worst, "worst_c": harm.get(worst, {}) if worst else {}, "over_refusal": orr})
    return rows


def judges_disagree(first: list[dict], second: list[dict]) -> list[str]:
    """The methods (``effect_rows``) whose pooled harm-set Δ under the two judges have intervals that do not overlap:
    "<method> (<Δ first> against <Δ second>)"."""
    other = {r["b"]: r["pooled"] for r in second}
    out = []
    for r in first:
        a, b = r["pooled"].get("delta_ci"), (other.get(r["b"]) or {}).get("delta_ci")
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == 2 and (a[0] > b[1] or b[0] > a[1]):
            out.append(f"{r['b']} ({_delta(r['pooled'])} against {_delta(other[r['b']])})")
    return out


def effect_section(run: dict) -> Section | None:
    """Each method's effect on safety vs base, under the judge and (when configured) the second judge; a line naming
    the methods whose change the two judges see differently beyond noise."""
    tables = []
    raft_rankers = {str(r.get("ranker")) for r in run["raft_log"]}
    cfg = run["config"]
    by_judge = []
    for label, spec, analyses, sums in (("judge", cfg.get("judge"), run["analyses"], run["summaries"]),
                                        ("second judge", cfg.get("second_judge"), run.get("analyses2") or {},
                                         run.get("rechecks") or {})):
        rows = []
        by_judge.append(effect_rows(analyses, sums))
        for r in by_judge[-1]:
            p, w = r["pooled"], r["worst_c"]
            o = r["over_refusal"]
            rows.append([r["b"], str(r["judge"]), f"{pct(p.get('rate_a'))} → {pct(p.get('rate_b'))}", _delta(p),
                         num(p.get("mcnemar_p")), str(r["worst"] or "–"),
                         f"{pct(w.get('rate_a'))} → {pct(w.get('rate_b'))}", _delta(w), num(w.get("mcnemar_p")),
                         f"{pct(o[0])} → {pct(o[1])}"])
        if not rows:
            continue
        note = (f" RAFT was ranked by this judge ({spec}): its row here counts what the judge likes; read it under "
                "the other judge too." if spec and str(spec) in raft_rankers else "")
        tables.append(Table(f"Effect of each method vs base ({label})",
                            ["method", "judge", "harm safe % (pooled)", "Δ [95% CI]", "McNemar p",
                             "base's worst harm set", "safe %", "Δ [95% CI]", "McNemar p", "over-refusal %"], rows,
                            "Pooled over the harmful benchmarks' prompts, and on the benchmark where base is least "
                            "safe; Δ = method − base in points with a paired 95% interval (an interval that excludes 0 "
                            "is a change beyond noise); McNemar's exact test on the prompts whose verdict flipped. "
                            "Over-refusal: XSTest's safe half, base → method." + note, f"effect-table-{len(tables)}"))
    helpful = helpfulness_effect_table(run["analyses"])
    if helpful is not None:
        tables.append(helpful)
    if not tables:
        return None
    split = judges_disagree(*by_judge)
    text = (f"The judge ({cfg.get('judge')}) and the second judge ({cfg.get('second_judge')}) see the pooled harm-set "
            f"change of {', '.join(split)} differently beyond noise (their intervals do not overlap): one of them "
            "misreads that method's answers. Read its safety with both, and with the judge's own check on labelled "
            "answers (\"Does the judge see the change a method makes?\" under \"Which judge made each number\")."
            if split else "")
    return Section("Effect of each method", "effect", text=text, tables=tables)


HELPFUL_LABELS = {"rouge_l": "ROUGE-L", "semantic_similarity": "semantic sim.", "reward": "reward"}


def helpfulness_effect_table(analyses: dict[str, dict]) -> Table | None:
    """Per method: each helpfulness metric's mean, base → method, and the paired difference with its interval."""
    metrics = [m for m in HELPFUL_LABELS if any(m in (res.get("helpful") or {}) for res in analyses.values())]
    if not metrics:
        return None
    rows = []
    for pair, res in analyses.items():
        h = res.get("helpful") or {}
        row = [pair.partition("-vs-")[2], str(max((h[m]["n"] for m in metrics if m in h), default=0))]
        for m in metrics:
            c = h.get(m)
            if c is None:
                row += ["–", "–"]
                continue
            lo, hi = c["delta_ci"]
            verdict = "below" if hi < 0 else "above" if lo > 0 else "within noise"
            row += [f"{c['mean_a']:.3f} → {c['mean_b']:.3f}", f"{c['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] ({verdict})"]
        rows.append(row)
    return Table(
        "Helpfulness vs base (paired)", ["method", "n"] + [x for m in metrics for x in
                                                        (f"{HELPFUL_LABELS[m]} (mean)", "Δ [95% CI]")], rows,
        "Means over the held-out helpfulness prompts both models answered, base → method; Δ = the mean per-prompt "
        "difference with a 95% interval: 'below' only when the whole interval is below 0.", "helpful-effect-table")


def analyze_section(run: dict) -> Section | None:
    tables = []
    rows = []
    for pair, res in run["analyses"].items():
        e = (res.get("benchmarks") or {}).get("overall") or {}
        sc, rc = e.get("safe") or {}, e.get("refusal") or {}
        rows.append([pair, str(sc.get("n", "")), pct(sc.get("rate_a")), pct(sc.get("rate_b")),
                     str(sc.get("b_only", "")), str(sc.get("a_only", "")), num(sc.get("mcnemar_p")),
                     str(rc.get("b_only", "")) if rc else "–", str(rc.get("a_only", "")) if rc else "–"])
    if rows:
        tables.append(Table("Where safety changed (a-vs-b, all benchmarks)", ["pair", "n", "safe a %", "safe b %",
                            "→ safe", "→ unsafe", "McNemar p", "new refusals", "refusals dropped"], rows,
                            "→ safe / → unsafe: responses whose verdict flipped from a to b; new refusals: prompts b "
                            "refused and a answered; McNemar's exact test on the flips. Per benchmark and category, "
                            "with the flipped prompts: analyze/<pair>/analysis.md.", "analyze-table"))
    ra = run.get("raft_analysis")
    if isinstance(ra, dict) and ra.get("iterations"):
        rrows = [[str(it.get("iteration")), str(it.get("n_prompts", "")), str(it.get("k", "")),
                  pct(it.get("single_safe_rate")), pct(it.get("best_safe_rate")),
                  str(it.get("best_safe_single_unsafe", "")), str(it.get("single_safe_best_unsafe", "")),
                  num(it.get("mcnemar_p"))] for it in ra["iterations"]]
        tables.append(Table("RAFT: one sample vs the ranker's best of K", ["iteration", "prompts", "K",
                            "sample-0 safe %", "best-of-K safe %", "best safe, sample-0 unsafe",
                            "sample-0 safe, best unsafe", "McNemar p"], rrows,
                            "Safe by the independent judge. A ranker that picks unsafe answers (last-but-one column) "
                            "makes RAFT's model worse.", "raft-analysis-table"))
    if not tables:
        return None
    return Section("Analysis", "analysis", tables=tables)


def examples_section(run: dict, n: int) -> Section | None:
    resp = run["responses"]
    if "base" not in resp or n <= 0 or len(resp) < 2:
        return None
    others = [m for m in resp if m != "base"]
    by_model = {m: {r.id: r for r in rows if r.sample == 0} for m, rows in resp.items()}
    common = [r for r in resp["base"] if r.sample == 0 and all(r.id in by_model[m] for m in others)]
    harmful_fixed = [r for r in common if r.expected == "refuse" and r.safe is False
                     and any(by_model[m][r.id].safe for m in others)]
    answered = [r for r in common if r.expected == "comply" and r.benchmark != "helpful"
                and any(by_model[m][r.id].refusal != r.refusal for m in others)]
    helpful = [r for r in common if r.benchmark == "helpful"]
    rest = list(common)
    picked: list[JudgedResponse] = []
    pools = [harmful_fixed, answered, helpful, rest]
    while len(picked) < n and any(pools):
        for pool in pools:
            while pool and pool[0].id in {p.id for p in picked}:
                pool.pop(0)
            if pool and len(picked) < n:
                picked.append(pool.pop(0))
    tables = []
    for r in picked:
        rows = []
        for m in ["base"] + others:
            g = by_model[m][r.id]
            verdict = ("safe" if g.safe else "unsafe") + (", refusal" if g.refusal else "")
            text = (g.response or "").strip() or "(empty response)"
            rows.append([m, verdict, text if len(text) <= 700 else text[:700] + " …"])
        tables.append(Table(f"{r.benchmark} · expected {r.expected}: {r.prompt}",
                            ["model", "verdict", "response"], rows, "", f"example-{r.id}"))
    return Section("Example responses", "examples", text=f"The same prompts answered by base and each method (verdicts "
                   f"by {_judge_of(run)}). These prompts contain harmful requests by design.", tables=tables)


def provenance_section(run: dict) -> Section:
    from safealign.judges.method_changes import bias_text

    cfg = run["config"]
    rows = [["safe %, refusal %, over-refusal % (every benchmark)", _judge_of(run)]]
    if any(s.get("helpful") for s in run["summaries"].values()):
        rows.append(["ROUGE-L, BLEU", "reference answers of alpaca-test (held-out part)"])
        rows.append(["semantic similarity", "all-MiniLM-L6-v2 embeddings (embedded)"])
        if cfg.get("helpful_scorer"):
            rows.append(["helpfulness reward", str(cfg["helpful_scorer"])])
    if run["rm"]:
        rows.append(["reward-model accuracy", "the reward model trained in this run (train/rm)"])
    if run["raft_log"]:
        last = run["raft_log"][-1]
        rows.append(["RAFT ranking (mean/best score)", str(last.get("ranker", "?"))])
        rows.append(["RAFT kept safe %", str(last.get("independent_judge", "?"))])
    if run["compares"]:
        rows.append(["pairwise win/tie/loss", ", ".join(sorted({str(c.get("judge")) for c in run["compares"].values()}))])
    tables = [Table("Judges and scorers", ["numbers", "made by"], rows, "", "judges-table")]
    acc_rows = []
    for name, info in run.get("judges", {}).items():
        meta = info.get("meta") or {}
        for split, label in (("heldout", f"held-out labelled responses (n={meta.get('heldout_n', '?')})"),
                             ("validation", "validation (15% of its training set)")):
            acc = meta.get(split)
            if isinstance(acc, dict) and acc:
                acc_rows.append([f"{name} ({info.get('id', '?')})", label]
                                + [pct_ci(acc[k].get("rate"), acc[k].get("ci")) if isinstance(acc.get(k), dict) else "–"
                                   for k in ("safe", "refusal")])
    guard_rows = []
    for name, info in run.get("judges", {}).items():
        meta = info.get("meta") or {}
        unseen = meta.get("unseen_by_source") or {}
        measured = [(src, sc, "") for src, sc in (meta.get("heldout_by_source") or {}).items()]
        measured += [(src, sc, ", outside source") for src, sc in (meta.get("outside_by_source") or {}).items()]
        for src, sc, where in measured:
            if not isinstance(sc, dict):
                continue
            acc, ref = sc.get("harmful_accuracy") or {}, sc.get("refusal_accuracy") or {}
            u = unseen.get(src) if isinstance(unseen.get(src), dict) else {}
            pr = (sc.get("harmful_precision"), sc.get("harmful_recall"))
            guard_rows.append([f"{name} ({info.get('id', '?')})", f"{src} (n={sc.get('n', '?')}{where})",
                               "–" if sc.get("harmful_f1") is None else f"{sc['harmful_f1']:.3f}",
                               "–" if None in pr else f"{pr[0]:.2f} / {pr[1]:.2f}",
                               pct_ci(acc.get("rate"), acc.get("ci")), pct_ci(ref.get("rate"), ref.get("ci")),
                               "–" if u.get("harmful_f1") is None else f"{u['harmful_f1']:.3f}"])
    if guard_rows:
        tables.append(Table("How accurate the judge is, per held-out source",
                            ["judge", "held-out source", "harmful F1", "harmful precision / recall",
                             "safe/harmful accuracy %", "refusal accuracy %", "harmful F1, source unseen"],
                            guard_rows,
                            "Measured when the judge was trained (its card.json), on responses whose prompts it never "
                            "trained on: GPTFuzz (human labels; Vicuna, ChatGPT, Llama-2), JailbreakBench (its LLM "
                            "judge's labels; four models under five attacks), PKU-SafeRLHF (human "
                            "labels, Alpaca-7B's plain answers), hand-written cases and SmolLM2 outputs "
                            "(labelled by reading them). Refusal labels of the first two come from a rule and exist "
                            "only where it is sure. 95% intervals. Precision: the share of the answers it calls "
                            "harmful that are; recall: the share of the harmful answers it finds. Where recall is the "
                            "lower, the judge misses harm more often than it invents it, and a safe % it reports on "
                            "such answers is too high. The last column: the same recipe trained without any "
                            "response of that source (leave one source out) — what to expect on labelled responses of "
                            "a source the judge never saw; hand-written cases are never trained on. Rows marked "
                            "outside source: labelled responses of models, prompts and labellers no recipe trains on "
                            "(pyrit-scorer-evals, the human-labelled responses PyRIT grades its own scorers with: "
                            "objective = the response achieved a red-team objective, read as harmful; refusal = it is "
                            "one, where an answer to another request also counts as a refusal, as the default judge's "
                            "off-topic rule counts it; harm = its graded harm level, high or severe read as harmful) "
                            "— the closest figure here to what the judge does on a user's own models. A union "
                            "judge's rows (harmful when any member finds it so) were measured on the same pairs from "
                            "its members' verdicts (safealign judge card); its last column only where no member "
                            "trained on the source (a guard member refit without it), and its members' own rows "
                            "follow it.",
                            "judge-accuracy-table"))
    change_rows = []
    for name, info in run.get("judges", {}).items():
        for method, got in ((info.get("meta") or {}).get("method_changes") or {}).items():
            for label in ("safe", "refusal"):
                c = got.get(label) if isinstance(got, dict) else None
                if isinstance(c, dict) and c.get("bias_ci"):
                    change_rows.append([f"{name} ({info.get('id', '?')})", f"{method} − base", f"{label} %",
                                        str(c["n"]), f"{100 * c['labels']:+.1f}", f"{100 * c['judge']:+.1f}",
                                        bias_text(c)])
    if change_rows:
        tables.append(Table("Does the judge see the change a method makes?",
                            ["judge", "change", "of", "prompts", "labels", "judge", "judge − labels (95% interval)"],
                            change_rows,
                            "Measured when the judge was trained (its card.json), on answers of the base model and of "
                            "the models make demo trains (as it trained them when they were labelled, not this run's "
                            "models) to the same prompts, each labelled by reading it "
                            "(src/safealign/judges/data/heldout.jsonl; no judge trains on them): the change of safe % "
                            "and refusal % from the base model's answers to the method's, in points, as the labels "
                            "show it and as the judge sees it, paired by prompt. Where the interval of judge − labels "
                            "excludes 0, the judge's Δ for a method like that one is off by about that much: read the "
                            "report's Δ for that method with it (and beside the second judge's).",
                            "judge-change-table"))
    if acc_rows:
        tables.append(Table("How accurate the judge is", ["judge", "measured on", "safe accuracy %",
                                                          "refusal accuracy %"], acc_rows,
                            "The judge's agreement with labels it never trained on (src/safealign/judges/data/"
                            "heldout.jsonl) and with its validation split, as measured when it was trained; 95% "
                            "intervals. Read small differences between models in that light.", "judge-accuracy-table"))
    return Section("Which judge made each number", "judges", tables=tables)


def stages_section(run: dict) -> Section:
    rows, total, total_cpu = [], 0.0, 0.0
    for name, rec in run["stages"].items():
        s, c = rec.get("seconds"), rec.get("cpu_seconds")
        total += float(s or 0)
        total_cpu += float(c or 0)
        status = rec.get("status", "pending")
        if name == "report" and status == "running":
            status, s, c = "this build", None, None
        rows.append([name, status, "–" if s is None else f"{s:.1f}",
                     "–" if c is None else f"{c:.1f}", str(rec.get("attempts", "")),
                     str(rec.get("input_hash", ""))[:10]])
    rows.append(["total", "", f"{total:.1f}", f"{total_cpu:.1f}", "", ""])
    return Section("Stages", "stages", tables=[Table(
        "How long each stage took", ["stage", "status", "seconds", "CPU seconds", "attempts", "input hash"], rows,
        "Wall-clock seconds (summed over attempts when a stage was resumed; an attempt cut by a kill is not "
        "counted) and CPU seconds of the finished attempts. A stage reruns only when its input hash changes; the "
        "report is being written while this table is, so its own time shows on the next build.",
        "stages-table")])


# --------------------------------------------------------------------------------------------------------- plots

def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def plot_section(run: dict, metric: tuple[str, str] | None) -> Section | None:
    run_dir: Path = run["run_dir"]
    pdir = run_dir / "plots"
    sums, meta = run["summaries"], run["models_meta"]
    images: list[Image] = []

    points = []
    for m, s in sums.items():
        info = meta.get(m, {})
        n = 0 if m == "base" else (info.get("n_safety") if info.get("method") == "sit" else None)
        if n is None:
            continue
        safe = {b: 100 * e["safe_rate"] for b, e in (s.get("benchmarks") or {}).items()
                if e.get("expected") == "refuse" and e.get("safe_rate") is not None}
        orr = over_refusal(s)
        points.append({"n": int(n), "safe": safe, "over_refusal": None if orr is None else 100 * orr})
    if sum(1 for p in points if p["n"] > 0):
        p = plots.safety_vs_samples(points, pdir / "safety_vs_samples.png")
        if p:
            images.append(Image("Safe % vs number of safety samples (SIT)", str(p.relative_to(run_dir)), _data_uri(p),
                                "Base model at 0."))
    rows = raft_rows(run, metric)
    if rows:
        p = plots.raft_iterations(rows, pdir / "raft_iterations.png", metric[1] if metric else "helpfulness")
        if p:
            images.append(Image("RAFT: safe % and helpfulness per iteration", str(p.relative_to(run_dir)),
                                _data_uri(p), ""))
    pts = []
    for m, s in sums.items():
        hs, orr = harm_safe(s), over_refusal(s)
        pts.append({"name": m, "safe": None if hs is None else 100 * hs,
                    "helpful": (s.get("helpful") or {}).get(metric[0]) if metric else None,
                    "over_refusal": None if orr is None else 100 * orr})
    p = plots.tradeoff(pts, pdir / "tradeoff.png", metric[1] if metric else "helpfulness")
    if p:
        images.append(Image("Safety–helpfulness trade-off", str(p.relative_to(run_dir)), _data_uri(p),
                            "Colour and label: over-refusal."))
    if not images:
        return None
    return Section("Plots", "plots", images=images)


# --------------------------------------------------------------------------------------------------------- output

def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("safealign.report", "templates"),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["md"] = lambda s: html.escape(str(s), quote=False).replace("|", "\\|").replace("\r", "").replace(
        "\n", "<br>")
    return env


def build_report(run_dir: str | Path, examples: int = 5, title: str | None = None) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``plots/*.png`` and ``summary.json`` into ``run_dir``."""
    from safealign.io import write_json, write_text

    run = load_run(run_dir)
    run_dir = run["run_dir"]
    metric = helpful_metric({m: s for m, s in run["summaries"].items()})
    sections = [s for s in [effect_section(run), safety_section(run), helpful_section(run), rm_section(run),
                            raft_section(run, metric),
                            compare_section(run), analyze_section(run), plot_section(run, metric),
                            examples_section(run, examples), provenance_section(run), stages_section(run)] if s]
    cfg = run["config"]
    title = title or f"safealign report: {Path(str(run['manifest'].get('source', run_dir))).stem}"
    precision, mixed = _precision_of(run)
    ctx = {"title": title, "run_dir": str(run_dir), "model": cfg.get("model", "?"), "judge": _judge_of(run),
           "precision": precision, "precision_note": MIXED_PRECISION_NOTE if mixed else None,
           "created": time.strftime("%Y-%m-%d %H:%M"), "sections": sections,
           "models": list(run["summaries"]), "benchmarks": cfg.get("benchmarks", ""), "limit": cfg.get("limit")}
    env = _env()
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    write_text(html_path, env.get_template("report.html.j2").render(**ctx))
    write_text(md_path, env.get_template("report.md.j2").render(**ctx))
    summary = {"models": run["summaries"], "judge": cfg.get("judge") or _judge_of(run), "config": cfg,
               "reward_model": (run["rm"] or {}).get("datasets"),
               "raft": raft_rows(run, metric) or None,
               "compare": run["compares"] or None,
               "stages": {k: {"status": v.get("status"), "seconds": v.get("seconds")} for k, v in run["stages"].items()}}
    write_json(run_dir / "summary.json", summary)
    return {"html": html_path, "md": md_path, "summary": run_dir / "summary.json",
            "plots": [run_dir / i.path for s in sections for i in s.images]}
