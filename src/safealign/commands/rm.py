"""``safealign rm eval``: pairwise accuracy of a reward model (chosen scored above rejected), with 95% intervals.

Train one with ``safealign train rm``; use one as a judge or RAFT ranker with ``rm:<dir>``.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("rm", help="reward models: pairwise accuracy on preference pairs")
    actions = p.add_subparsers(dest="rm_command", required=True, metavar="ACTION")
    e = actions.add_parser("eval", help="pairwise accuracy on preference datasets (default: pku-safe-pairs:test, hh-harmless)")
    e.add_argument("--model", required=True, help="a reward model: a dir from `safealign train rm`, or any 1-output classifier")
    e.add_argument("--datasets", default="pku-safe-pairs:test,hh-harmless",
                   help="comma-separated preference datasets (names or JSONL files)")
    e.add_argument("--limit", type=int, default=None, help="first N pairs of each dataset")
    e.add_argument("--out", default=None, help="also write the results as JSON here: {dataset: {n, accuracy, ci}}")
    e.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:

    from safealign.commands._common import print_table
    from safealign.errors import SafealignError
    from safealign.recipes.rm import evaluate

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets:
        raise SafealignError("no dataset named", field="datasets")
    if args.limit is not None and args.limit < 1:
        raise SafealignError("--limit must be >= 1", field="limit")
    results = evaluate(args.model, datasets, args.limit)
    print_table([{"dataset": name, "pairs": r["n"], "accuracy": f"{r['accuracy']:.3f}",
                  "95% CI": f"{r['ci'][0]:.3f} – {r['ci'][1]:.3f}"} for name, r in results.items()],
                title=f"reward model {args.model}: pairwise accuracy (chosen > rejected)")
    if args.out:
        from safealign import io

        io.write_json(args.out, results)
    return 0
