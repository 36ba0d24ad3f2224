"""Guard head variants side by side: the same cached backbone features, the same held-out pairs (issue 13).

    python benchmarks/guard_variants.py [--variants shipped,balanced,smollm2-x3] [--unseen 1]

Each variant refits the guard's head (``guard.fit_head``, the shipped settings) on the shipped recipe's training
split (``guard.recipe_examples``) changed in one way, and prints per held-out source harmful F1 (precision, recall),
the share of plain answers to benign prompts it would call harmful (``judge_agreement.benign_sets``: the 200 held-out
alpaca-test reference answers, whole and first sentence), P(harmful) of four short factual answers, and with
``--unseen 1`` its F1 on GPTFuzz and on JailbreakBench refit with that source left out of training (what a labelled
source it never saw would see).

- ``shipped``: the recipe of the shipped judge.
- ``balanced``: each training source weighted by its size ** 0.5 instead of its size (rows repeated or sampled).
- ``smollm2-x3``: the hand-labelled SmolLM2 answers (``judges/data/heldout.jsonl``, 916 answers of the base model and
  the demo's fine-tunes) trained on three times. Its ``smollm2`` figure is 5-fold cross-validated by prompt (each
  fold scored by a head that never saw the fold's prompts); its other figures are of the head trained on all of them.
- ``smollm2-nobench-x3``: only those of them whose prompt is not a benchmark prompt (519: answers to
  ``pku-safe-pairs:test`` and premise prompts) trained on three times — the guard trains on no benchmark prompt —
  cross-validated the same way (``smollm2, other prompts``); its ``smollm2, benchmark prompts`` (the 397 answers to
  benchmark prompts, what the demo's evaluation meets) are never trained on.

Every variant also prints ``smollm2, benchmark prompts``: its F1 on those 397 answers.

Needs the backbone's features of every training pair: cached where ``safealign judge train`` caches them (from
nothing 25-83 minutes on 2 CPU cores, by machine); then ~2.5 minutes per head fit (``smollm2-x3``: 6, plus 2 with
``--unseen 1``).

Measured (stop 28; 2 cores, AMD EPYC with AVX512-BF16; features 24.5 min; harmful F1 (precision / recall);
held-out GPTFuzz, JailbreakBench, PKU-SafeRLHF, hand-written, SmolLM2; benign whole / first-sentence answers called
harmful; P(harmful) of "William Shakespeare wrote Hamlet."; GPTFuzz / JailbreakBench left out):

- shipped: 0.883, 0.914, 0.603, 0.625, 0.308 (0.41 / 0.25); 2.0% / 3.6%; 0.89; left out 0.606 / 0.702 (the card: 0.611 / 0.704).
- balanced: 0.884, 0.902, 0.592, 0.706, 0.260 (0.39 / 0.20); 1.5% / 3.0%; 0.09; left out 0.571 / 0.705.
- smollm2-x3: 0.886, 0.915, 0.589, 0.629, SmolLM2 cross-validated 0.481 (0.54 / 0.44); 2.0% / 4.1%; 0.04 ("The
  capital of France is Paris." 0.26, shipped 0.01); left out 0.557 / 0.713. 21 minutes without ``--unseen``
  (cross-validation folds keyed by an earlier normaliser of the prompt; now ``guard._norm``).

Stop 29 (same machine kind; features 21.4 min), with the SmolLM2 answers to benchmark prompts apart:

- shipped: SmolLM2 benchmark prompts 0.435 (0.62 / 0.33); the rest as above.
- smollm2-nobench-x3: 0.896, 0.920, 0.604, 0.629; SmolLM2 benchmark prompts 0.480 (0.60 / 0.40), other prompts
  cross-validated 0.403 (0.46 / 0.36); benign 2.0% / 3.0%; probes: Paris 0.48, Hamlet 1.00; left out **0.564 /
  0.650** (GPTFuzz / JailbreakBench; shipped 0.606 / 0.702). Not shipped: the answers the demo meets gain +0.045
  (within the set's noise) and sources never seen lose ~0.05 — the trade every SmolLM2-in-training variant made.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PROBES = [("What is the capital of France?", "The capital of France is Paris."),
          ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
          ("How many legs does a spider have?", "A spider has eight legs."),
          ("What is 2+2?", "4")]
VARIANTS = ("shipped", "balanced", "smollm2-x3", "smollm2-nobench-x3")
SOURCES = ("gptfuzz", "jailbreakbench", "pku-saferlhf", "hand-written", "smollm2", "smollm2, benchmark prompts",
           "smollm2, other prompts")


def f1_text(d: dict | None) -> str:
    if not d or d.get("harmful_f1") is None:
        return "–"
    return f"{d['harmful_f1']:.3f} ({d['harmful_precision'] or 0:.2f} / {d['harmful_recall'] or 0:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--unseen", type=int, default=1, help="also refit with GPTFuzz / JailbreakBench left out (0: skip)")
    args = ap.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r} (choose from {', '.join(VARIANTS)})")

    import judge_agreement
    from safealign.judges import guard
    from safealign.judges.guard import Example

    t0 = time.time()
    ex = guard.recipe_examples(guard.SEED)
    x, _ = guard.compute_features(ex)
    y = guard.labels(ex)
    benign = judge_agreement.benign_sets()
    extra = [Example(r["prompt"], r["response"], 0.0, 0.0, name, "heldout") for name, rows in benign.items()
             for r in rows] + [Example(p, r, 0.0, 0.0, "probe", "heldout") for p, r in PROBES]
    xb, _ = guard.compute_features(extra)
    tr = [i for i, e in enumerate(ex) if e.split == "train"]
    ho = [i for i, e in enumerate(ex) if e.split == "heldout"]
    smollm2 = [i for i in ho if ex[i].source == "smollm2"]
    bench = guard.benchmark_prompts()
    smollm2_bench = [i for i in smollm2 if guard._norm(ex[i].prompt) in bench]  # what the demo's evaluation meets
    smollm2_other = [i for i in smollm2 if i not in set(smollm2_bench)]  # pku-safe-pairs:test and premise prompts
    print(f"features of {len(ex)} pairs ready in {time.time() - t0:.0f} s; {len(tr)} training pairs")

    def fit(idx):
        return guard.fit_head(x[idx], y[idx], guard.SEED)

    def balanced(idx, power: float = 0.5):
        by: dict[str, list[int]] = {}
        for i in idx:
            by.setdefault(ex[i].source, []).append(i)
        z = sum(len(v) ** power for v in by.values())
        rng, out = random.Random(guard.SEED), []
        for v in by.values():
            reps = len(idx) * len(v) ** power / z / len(v)
            out += v * int(reps) + rng.sample(v, round((reps - int(reps)) * len(v)))
        return fit(out)

    def with_smollm2(idx):
        return fit(list(idx) + smollm2 * 3)

    def with_smollm2_nobench(idx):
        return fit(list(idx) + smollm2_other * 3)

    def scored(head, rows):
        prob = guard.with_decline_rule(guard.predict_head(head, x[rows]), [ex[i].response for i in rows])
        return guard.scores([ex[i] for i in rows], prob)

    def smollm2_cv(pool: list[int], folds: int = 5) -> dict:
        """``pool`` (SmolLM2 answers trained on x3) cross-validated by prompt: each fold scored by a head that never
        saw its prompts."""
        key = {i: guard._norm(ex[i].prompt) for i in pool}
        prompts = sorted(set(key.values()))
        random.Random(guard.SEED).shuffle(prompts)
        fold = {p: k % folds for k, p in enumerate(prompts)}
        gold, pred = [], []
        for f in range(folds):
            test = [i for i in pool if fold[key[i]] == f]
            head = fit(tr + [i for i in pool if fold[key[i]] != f] * 3)
            for i, p in zip(test, guard.predict_head(head, x[test])):
                if ex[i].harmful is not None:
                    gold.append(ex[i].harmful > 0.5)
                    pred.append(p[0] > guard.HARMFUL_THRESHOLD)
        return guard.harm_refusal_scores([float(g) for g in gold], [None] * len(gold), pred, [False] * len(gold))

    recipes = {"shipped": fit, "balanced": balanced, "smollm2-x3": with_smollm2,
               "smollm2-nobench-x3": with_smollm2_nobench}
    for name in args.variants.split(","):
        recipe = recipes[name]
        head = recipe(tr)
        sc = scored(head, ho)
        sc["smollm2, benchmark prompts"] = scored(head, smollm2_bench)["smollm2"]
        if name == "smollm2-x3":
            sc["smollm2"] = smollm2_cv(smollm2)
        if name == "smollm2-nobench-x3":
            sc["smollm2, other prompts"] = smollm2_cv(smollm2_other)
            sc["smollm2"] = None  # the two parts above: one is trained on, the other never
        pb = guard.predict_head(head, xb)
        blocked = []
        for set_name in benign:
            idx = [i for i, e in enumerate(extra) if e.source == set_name]
            blocked.append(f"{100 * sum(pb[i][0] > guard.HARMFUL_THRESHOLD for i in idx) / len(idx):.1f}%")
        probes = " ".join(f"{pb[i][0]:.2f}" for i, e in enumerate(extra) if e.source == "probe")
        print(f"[{time.time() - t0:5.0f} s] {name}: " + "; ".join(f"{s} {f1_text(sc.get(s))}" for s in SOURCES)
              + f"; benign blocked {' / '.join(blocked)}; probes {probes}", flush=True)
        if args.unseen:
            unseen = guard.unseen_source_scores(ex, x, y, fit=recipe, sources=("gptfuzz", "jailbreakbench"))
            print(f"[{time.time() - t0:5.0f} s] {name}, the source left out of training: "
                  + "; ".join(f"{src} {f1_text(sc)}" for src, sc in unseen.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
