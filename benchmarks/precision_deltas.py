"""Does bf16 generation change what the report says a method did? Each method's change against the base model —
harm-set safe %, XSTest over-refusal — with every model's answers generated in fp32 and again in bf16 (issue 17).

    R=runs/quickstart/train  # after make demo
    python benchmarks/precision_deltas.py --models base=smollm2-135m-instruct,sit=$R/sit-n200,raft=$R/raft,dpo=$R/dpo

``benchmarks/generation.py`` compares answers one by one: bf16's greedy answers part from fp32's near a tie in most
answers (median: some 90 characters in), and the judge's verdict changes on about a fifth of them. A report prints
neither an answer nor one verdict, but a method's change of safe % against the base model (its headline Δ) over the
same prompts. bf16 would be harmless to that number if its effect on each model's answers is noise, or alike for
every model; this measures it: the quickstart's prompts (the harm sets and XSTest, ``--limit`` each, as
``configs/quickstart.yaml``), every model answering greedily in each precision (``HFEngine``, the same batch size and
token budget), one judge reading all the answers (the default union unless ``--judge``; its own precision the same
for all). Printed per model: safe % and over-refusal % in fp32 and in bf16 with bf16 − fp32 (paired by prompt, 95%
interval); per method: its Δ against the base model in fp32, in bf16, and the difference of the two Δs with its
interval over prompts (``stats.paired_mean_delta`` of each prompt's Δ in the two precisions). An interval that holds
0 says bf16 generation does not move that method's reported change beyond the prompts' noise.

Measured (stop 42; AMD EPYC with AVX512-BF16, 2 cores; the quickstart's four models as ``make demo`` trained them on
that machine, in bf16; 240 harm-set prompts and XSTest's 50 safe ones; the default union reading, its guard in bf16;
26 minutes: each model's 340 answers ~103 s in fp32, ~57 s in bf16, the union 5.5 minutes). Answers identical in
both precisions: base 73 / SIT 91 / SIT + RAFT 112 / DPO 72 of 340. Safe %, fp32 -> bf16: base 73.8 -> 76.7 (+2.9
[−1.5, +7.3]), SIT 95.8 -> 96.7, RAFT 96.2 -> 95.8, DPO 89.6 -> 89.2. The methods' Δ against base, fp32 / bf16 and
bf16 − fp32: SIT +22.1 / +20.0, −2.1 [−7.2, +3.0]; RAFT +22.5 / +19.2, −3.3 [−8.2, +1.6]; DPO +15.8 / +12.5, −3.3
[−8.9, +2.2]. Over-refusal % (50 prompts): base 6 / 6, SIT 66 / 70, RAFT 58 / 64, DPO 6 / 8; the Δs' bf16 − fp32
+4.0 [−3.8, +11.8], +6.0 [−2.7, +14.7], +2.0 [−4.8, +8.8]. Every change within noise; the three safe-% Δs move the
same way because they share the base model's (+2.9): a run that evaluates every model in one precision compares
like with like, but a Δ measured in bf16 is not interchangeable with one measured in fp32 to better than about ±9
points at this size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRECISIONS = ("fp32", "bf16")


def prompts(limit: int):
    """The quickstart's safety prompts: the harm group and XSTest, the first ``limit`` of each (XSTest: of each
    half)."""
    from safealign.data import registry

    return [e for name in registry.expand_benchmarks("harm,xstest") for e in registry.load_eval(name, limit=limit)]


def rates(evals, verdicts) -> dict[str, list[float]]:
    """Per prompt, 1.0 / 0.0: ``safe`` over the harm sets' prompts, ``over-refusal`` over XSTest's benign ones."""
    harm = [float(v.safe) for e, v in zip(evals, verdicts) if e.benchmark != "xstest" and e.expected == "refuse"]
    over = [float(v.refusal) for e, v in zip(evals, verdicts) if e.benchmark == "xstest" and e.expected == "comply"]
    return {"safe": harm, "over-refusal": over}


def interval(pairs) -> str:
    from safealign.stats import paired_mean_delta

    d = paired_mean_delta(pairs)
    lo, hi = d["delta_ci"]
    return f"{100 * d['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def main() -> int:
    from safealign.judges.union import DEFAULT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True,
                    help="comma-separated name=model (the first is the base every other is compared with); a model "
                         "is what --model takes: a name, a local directory such as a recipe's output, a .gguf file")
    ap.add_argument("--limit", type=int, default=50, help="prompts of each benchmark (default %(default)s)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--judge", default=DEFAULT, help="the judge that reads every answer (default %(default)s)")
    args = ap.parse_args()
    models = [item.split("=", 1) for item in args.models.split(",")]
    if any(len(m) != 2 or not all(m) for m in models) or len(models) < 2:
        print(f"--models: expected at least two name=model items, got {args.models!r}", file=sys.stderr)
        return 2
    if args.limit < 2:
        print(f"--limit: at least 2 prompts of each benchmark for a paired interval, got {args.limit}", file=sys.stderr)
        return 2

    from safealign.generate import GenParams, HFEngine
    from safealign.judges.base import get_judge, judge_in_batches
    from safealign.models import native_bf16, resolve_model

    for _, model in models:  # every model readable before the first one generates for minutes
        resolve_model(model)
    if not native_bf16():
        print("note: this CPU has no bf16 units; bf16 is emulated here (slower, and not the path `auto` takes)")
    evals = prompts(args.limit)
    texts = [e.prompt for e in evals]
    answers: dict[tuple[str, str], list[str]] = {}
    for name, model in models:
        engine = HFEngine(model)
        for precision in PRECISIONS:  # fp32 first: the engine casts its model in place, and bf16 -> fp32 loses bits
            t = time.perf_counter()
            params = GenParams(max_new_tokens=args.new_tokens, batch_size=args.batch_size, precision=precision)
            answers[name, precision] = [r[0] for r in engine.generate(texts, params)]
            print(f"{name} {precision}: {len(texts)} answers in {time.perf_counter() - t:.0f} s", flush=True)
        del engine
    judge = get_judge(args.judge)
    keys = list(answers)
    found = judge_in_batches(judge, texts * len(keys), [a for k in keys for a in answers[k]])
    per = {k: rates(evals, found[i * len(texts):(i + 1) * len(texts)]) for i, k in enumerate(keys)}

    print(f"\n{len(texts)} prompts ({args.limit} of each benchmark), {args.new_tokens} new tokens, judge {judge.name}")
    print("answers identical in both precisions: " + ", ".join(
        f"{name} {sum(x == y for x, y in zip(answers[name, 'fp32'], answers[name, 'bf16']))}/{len(texts)}"
        for name, _ in models))
    for measure in ("safe", "over-refusal"):
        n = len(per[keys[0]][measure])
        print(f"\n{measure} % ({n} prompts): fp32, bf16, bf16 - fp32 [95% interval, paired by prompt]")
        for name, _ in models:
            a, b = per[name, "fp32"][measure], per[name, "bf16"][measure]
            print(f"  {name:<10} {100 * sum(a) / n:5.1f} {100 * sum(b) / n:5.1f}  {interval(list(zip(a, b)))}")
        base = models[0][0]
        for name, _ in models[1:]:
            d = {p: [m - b for m, b in zip(per[name, p][measure], per[base, p][measure])] for p in PRECISIONS}
            print(f"  Δ {name} - {base}: fp32 {100 * sum(d['fp32']) / n:+.1f}, bf16 {100 * sum(d['bf16']) / n:+.1f}; "
                  f"bf16 - fp32 {interval(list(zip(d['fp32'], d['bf16'])))}")
    return 0


if __name__ == "__main__":
    from safealign.errors import SafealignError

    try:
        sys.exit(main())
    except SafealignError as e:  # a model or benchmark that cannot be read: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
