"""How many new tokens must an evaluation generate before the judge's verdict stops changing?

    python benchmarks/eval_length.py [--model smollm2-135m-instruct] [--judge guard] [--per-benchmark 20]
                                     [--max-new-tokens 128] [--lengths 16,32,64,96]

Generates greedy answers of ``--max-new-tokens`` tokens to prompts past the first 50 of each harm benchmark and of
XSTest's safe half (the quickstart evaluates the first 50; I-Controversial has only 40: its last ones), cuts each answer to its first L tokens for every L in ``--lengths``,
judges every cut and the full answer, and prints, per length, the share of answers whose verdict (safe, refusal)
differs from the full answer's, overall and per benchmark, with the generation time each length costs. Greedy
decoding makes the first L tokens of a long answer exactly the answer an evaluation at L tokens would get.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--judge", default="guard")
    ap.add_argument("--per-benchmark", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lengths", default="16,32,64,96")
    args = ap.parse_args()

    from safealign.data import registry
    from safealign.stats import rate_with_ci
    from safealign.generate import GenParams, HFEngine
    from safealign.judges import get_judge

    records = []
    for name in registry.expand_benchmarks("harm,xstest"):
        recs = [r for r in registry.load_eval(name) if name != "xstest" or r.expected == "comply"]
        records += recs[50:50 + args.per_benchmark] if len(recs) > 50 else recs[-args.per_benchmark:]
    engine = HFEngine(args.model)
    t0 = time.time()
    full = [o[0] for o in engine.generate([r.prompt for r in records], GenParams(max_new_tokens=args.max_new_tokens))]
    seconds = time.time() - t0
    tok = engine.tokenizer
    judge = get_judge(args.judge)
    prompts = [r.prompt for r in records]
    ref = judge.judge(prompts, full)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"{len(records)} prompts ({args.per_benchmark} per benchmark, XSTest's safe half), {args.model}, greedy, "
          f"{args.max_new_tokens} new tokens in {seconds:.0f} s; judge {getattr(judge, 'id', judge.name)}")
    print(f"{'tokens':>6s}  {'verdict differs from ' + str(args.max_new_tokens) + ' tokens':40s}  "
          f"{'safe differs':14s} {'refusal differs':15s}  {'safe %':7s} {'refusal %':9s}  per benchmark (any differs, %)")
    for n in lengths:
        cut = [tok.decode(tok(r, add_special_tokens=False).input_ids[:n], skip_special_tokens=True) for r in full]
        vs = judge.judge(prompts, cut)
        any_diff = [(a.safe, a.refusal) != (b.safe, b.refusal) for a, b in zip(vs, ref)]
        r = rate_with_ci(any_diff)
        per: dict[str, list[bool]] = {}
        for rec, d in zip(records, any_diff):
            per.setdefault(rec.benchmark, []).append(d)
        print(f"{n:6d}  {100 * r['rate']:5.1f}% [{100 * r['ci'][0]:4.1f}, {100 * r['ci'][1]:5.1f}] (n={r['n']})"
              f"{'':12s}  {100 * sum(a.safe != b.safe for a, b in zip(vs, ref)) / len(vs):5.1f}%"
              f"{'':8s} {100 * sum(a.refusal != b.refusal for a, b in zip(vs, ref)) / len(vs):5.1f}%"
              f"{'':9s}  {100 * sum(v.safe for v in vs) / len(vs):5.1f}   {100 * sum(v.refusal for v in vs) / len(vs):5.1f}"
              f"{'':5s}  " + ", ".join(f"{k} {100 * sum(v) / len(v):.0f}" for k, v in per.items()))
    print(f"{args.max_new_tokens:6d}  (reference){'':31s}  {'':14s} {'':15s}  {100 * sum(v.safe for v in ref) / len(ref):5.1f}"
          f"   {100 * sum(v.refusal for v in ref) / len(ref):5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
