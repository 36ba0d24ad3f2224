"""Does a judge see the change a method makes? Its change of safe % and refusal % (method minus base) beside the
change the labels show, on labelled answers of the demo's own models to the same prompts.

The report's headline numbers are such changes (a method's safe % minus the base model's, as the judge sees it). A
judge whose level is off still reports the right change if it errs alike on both models' answers; ``measure`` tells
whether it does. The answers: ``judges/data/heldout.jsonl``'s rows of the base SmolLM2-135M-Instruct and of the three
models ``make demo`` trains (SIT, SIT + RAFT, DPO), greedy at 64 new tokens, labelled by reading them (no judge trains
on them; ``guard``'s card stores its figures, ``benchmarks/judge_deltas.py`` prints them for any judge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BASE = "base"
MARK = " greedy (64 new tokens), "  # the demo's models' answers: "<model> greedy (64 new tokens), <prompt set>"
LABELS = ("safe", "refusal")


def model_name(source: str) -> str | None:
    """``base``, ``SIT``, ``SIT + RAFT`` or ``DPO`` for an answer of the demo's models at 64 new tokens, else None
    ("smollm2-135m-instruct + SIT + RAFT (make demo: T=1, K=4) greedy (64 new tokens), i-cona-70" -> "SIT + RAFT")."""
    if MARK not in source:
        return None
    model = source.split(MARK)[0].split(" (")[0]
    if model == "smollm2-135m-instruct":
        return BASE
    prefix = "smollm2-135m-instruct + "
    return model[len(prefix):] if model.startswith(prefix) else None


def demo_answers(rows: Iterable[Mapping[str, Any]] | None = None) -> dict[str, dict[str, Mapping[str, Any]]]:
    """{model: {prompt: labelled row}} of the demo's models' answers among ``rows`` (default: the held-out set)."""
    if rows is None:
        from safealign.judges.embedded import read_heldout

        rows = read_heldout()
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        model = model_name(str(row.get("source", "")))
        if model is not None:
            out.setdefault(model, {})[row["prompt"]] = row
    return out


def change(answers: Mapping[str, Mapping[str, Mapping[str, Any]]],
           verdicts: Mapping[tuple[str, str], Mapping[str, bool]], label: str, model: str) -> dict[str, Any] | None:
    """The labels' and the judge's change of ``label`` (``safe`` or ``refusal``, as a share) from the base model to
    ``model``, paired by prompt over the prompts where both answers have that label: ``{"n", "labels", "judge",
    "bias", "bias_ci"}`` (bias = judge - labels, its 95% interval over prompts); None with fewer than two prompts.
    ``verdicts[(model, prompt)]``: the judge's ``{"safe": bool, "refusal": bool}`` on that answer."""
    from safealign.stats import paired_mean_delta

    pairs = []
    for prompt, row in answers.get(model, {}).items():
        base = answers.get(BASE, {}).get(prompt)
        if base is None or row.get(label) is None or base.get(label) is None:
            continue
        read = float(row[label]) - float(base[label])
        judged = float(verdicts[model, prompt][label]) - float(verdicts[BASE, prompt][label])
        pairs.append((read, judged))
    d = paired_mean_delta(pairs)
    if d is None:
        return None
    return {"n": d["n"], "labels": d["mean_a"], "judge": d["mean_b"], "bias": d["delta"], "bias_ci": d["delta_ci"]}


def measure(answers: Mapping[str, Mapping[str, Mapping[str, Any]]],
            verdicts: Mapping[tuple[str, str], Mapping[str, bool]]) -> dict[str, dict[str, Any]]:
    """{method: {"safe": change, "refusal": change}} for every model beside the base one (methods without a
    measurable change are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for model in sorted(m for m in answers if m != BASE):
        got = {label: change(answers, verdicts, label, model) for label in LABELS}
        if any(got.values()):
            out[model] = got
    return out


def bias_text(c: Mapping[str, Any]) -> str:
    """A ``change``'s judge - labels in points with its interval: "+8.8 [+0.4, +17.3]"."""
    lo, hi = c["bias_ci"]
    return f"{100 * c['bias']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def from_predictions(prompts: Sequence[str], responses: Sequence[str], safe: Sequence[bool],
                     refusal: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """``measure`` from a judge's verdicts on pairs that include the demo's models' answers (e.g. the held-out pairs
    a judge was just scored on); the answers it has no verdict for are left out."""
    verdict = {(p, r): {"safe": bool(s), "refusal": bool(f)} for p, r, s, f in zip(prompts, responses, safe, refusal)}
    answers = {m: {p: row for p, row in rows.items() if (p, row["response"]) in verdict}
               for m, rows in demo_answers().items()}
    verdicts = {(m, p): verdict[p, row["response"]] for m, rows in answers.items() for p, row in rows.items()}
    return measure(answers, verdicts)
