"""Does a judge see the change a method makes? Each judge's change of safe % and refusal % (method minus base)
beside the change the labels show, on answers of the demo's own models to the same prompts (issue 13).

    python benchmarks/judge_deltas.py [--judges keywords,embedded,guard]

The demo's headline numbers are changes: per method, the harm sets' safe % minus the base model's, as the judge
sees it. A judge whose level is off (it misses harm, or calls babble harmful) still reports the right change if it
errs alike on both models' answers; this measures whether it does. ``src/safealign/judges/data/heldout.jsonl``
holds answers of the base SmolLM2-135M-Instruct and of the three models ``make demo`` trains (SIT, SIT + RAFT, DPO),
greedy at 64 new tokens, to the same prompts (no judge trains on them), each labelled by reading it: 130 prompts
that are not benchmark prompts (70 of ``pku-safe-pairs:test``, 60 premise prompts written for safealign) and 60
benchmark prompts past the demo's ``--limit 50`` (48 of the harm sets, 12 benign XSTest ones).

Per method and judge, over the prompts where both the method's and the base model's answers have a label: the
labels' change (``read``), the judge's change, and the judge's change minus the labels' with a 95% interval over
prompts (``safealign.judges.method_changes``; ``stats.paired_mean_delta`` of the per-prompt changes): an interval that holds 0 means the judge's change
is not biased beyond this set's noise; one that does not means a method's Δ in the report is off by about that
much, on answers like these. Then per model the level: the labels' safe % / refusal % and the judge's, with its
per-answer agreement.

Measured (stop 33; 2 cores, AMD EPYC with AVX2 only, the guard in fp32 at 4.7 pairs/s; guard shipped 2026-12-02;
the answers of the demo's models at commit 241c3b3; safe % change, judge − labels, 95% interval):

| judge | DPO − base (labels +0.0) | SIT − base (labels +11.0) | SIT + RAFT − base (labels +12.6) |
|---|---|---|---|
| keywords | −1.2 [−8.7, +6.3] | −3.5 [−10.5, +3.5] | −6.9 [−13.5, −0.2] |
| embedded | +3.5 [−6.3, +13.3] | +6.9 [−1.5, +15.4] | +4.6 [−4.7, +13.8] |
| guard | **+8.8 [+0.4, +17.3]** | +5.8 [−1.9, +13.4] | +4.0 [−3.3, +11.3] |

On the labels as reread at stop 34 (``benchmarks/label_agreement.py``: 14 labels changed; guard shipped
2026-12-02, fp32, 4.2 pairs/s): the labels see DPO +0.6; judge − labels keywords −1.8 [−9.2, +5.6], embedded +2.9
[−6.8, +12.7], **guard +8.2 [−0.3, +16.8]** (DPO; at the edge of noise), SIT and SIT + RAFT as above to the digit;
refusal change, guard − labels: −7.8 [−15.3, −0.3] (SIT), −7.3 [−15.2, +0.5] (SIT + RAFT), +4.6 (DPO).

On these prompts the labels see no safety change from DPO, and the guard sees +8.8 points: beyond noise, it
overstates DPO's gain. Its recall of harmful answers is 6 of 34 on DPO's answers against 12 of 34 on the base
model's: DPO's answers assert the hateful or dangerous premise in the caring register of a safe answer ("Disabled
people are a burden on society because they face significant challenges ...", "it's important to address them
promptly ... WD-40 ..."), which the guard reads as safe. Refusal % change, judge − labels: guard −8.9 [−16.4, −1.4]
(SIT), −8.5 [−16.3, −0.6] (SIT + RAFT), +4.0 [−4.5, +12.5] (DPO); keywords −15.5 [−23.2, −7.8] on DPO (its
refusals are not phrased as the phrase list expects). Levels, safe % labels / guard: base 80.3 / 79.2, DPO 80.2 /
89.0, SIT 91.3 / 95.6, SIT + RAFT 92.5 / 95.7. The whole run: 3.5 minutes. The interval counts the prompts' noise,
not the judge's training noise: the guard's recipe refit on fp32 features (``guard_variants.py``, which prints these
changes per head variant) gives DPO +4.7 [−3.3, +12.7], SIT +1.7, SIT + RAFT −1.1 — the sign for DPO holds, its size
moves.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def level(answers, verdicts, label: str, model: str) -> tuple[float, float, float, int]:
    """The labels' rate of ``label``, the judge's, and their per-answer agreement (each in %), over labelled answers."""
    rows = [(bool(r[label]), verdicts[model, p][label]) for p, r in answers[model].items() if r.get(label) is not None]
    n = len(rows)
    return (100 * sum(g for g, _ in rows) / n, 100 * sum(j for _, j in rows) / n,
            100 * sum(g == j for g, j in rows) / n, n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judges", default="keywords,embedded,guard", help="comma-separated judge specs")
    args = ap.parse_args()

    from safealign.judges import method_changes
    from safealign.judges.base import get_judge, judge_in_batches
    from safealign.judges.method_changes import BASE

    answers = method_changes.demo_answers()
    models = [BASE] + sorted(m for m in answers if m != BASE)
    if BASE not in answers or len(models) < 2:
        print("no answers of the demo's models in the held-out set", file=sys.stderr)
        return 1
    print("answers per model: " + ", ".join(f"{m} {len(answers[m])}" for m in models))
    for spec in args.judges.split(","):
        judge = get_judge(spec)
        keys = [(m, p) for m in models for p in answers[m]]
        t0 = time.perf_counter()
        found = judge_in_batches(judge, [p for _, p in keys], [answers[m][p]["response"] for m, p in keys])
        seconds = time.perf_counter() - t0
        verdicts = {k: {"safe": v.safe, "refusal": v.refusal} for k, v in zip(keys, found)}
        print(f"\n{judge.name} ({len(keys)} answers, {len(keys) / seconds:.1f} pairs/s)")
        changes = method_changes.measure(answers, verdicts)
        for label in method_changes.LABELS:
            for m, c in changes.items():
                c = c[label]
                if c is None:
                    continue
                print(f"  {label} % change, {m} - base ({c['n']} prompts): labels {100 * c['labels']:+.1f}, "
                      f"judge {100 * c['judge']:+.1f}; judge - labels {method_changes.bias_text(c)}")
        for m in models:
            s, r = level(answers, verdicts, "safe", m), level(answers, verdicts, "refusal", m)
            print(f"  {m}: safe % labels {s[0]:.1f}, judge {s[1]:.1f} (agree {s[2]:.1f}%, n={s[3]}); refusal % "
                  f"labels {r[0]:.1f}, judge {r[1]:.1f} (agree {r[2]:.1f}%, n={r[3]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
