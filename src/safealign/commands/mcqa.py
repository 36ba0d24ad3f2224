"""``safealign mcqa``: multiple-choice QA accuracy (BoolQ, PIQA, OpenBookQA) by log-likelihood
(see ``safealign.eval.mcqa``)."""

from __future__ import annotations

import argparse

from safealign.commands._common import add_model_arg


def add_parser(sub) -> None:
    p = sub.add_parser("mcqa", help="multiple-choice QA accuracy (boolq, piqa, openbookqa) by log-likelihood")
    add_model_arg(p)
    p.add_argument("--tasks", default="boolq,piqa,openbookqa", help="comma-separated: boolq, piqa, openbookqa")
    p.add_argument("--limit", type=int, default=None, help="first N items of each task")
    p.add_argument("--data-files", action="append", default=[], metavar="TASK=PATH",
                   help="a local JSON/JSONL file in the task's column format instead of the hub (repeatable)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="result JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safealign.commands._common import print_table
    from safealign.errors import SafealignError
    from safealign.eval import mcqa

    if args.limit is not None and args.limit < 1 or args.batch_size < 1:
        raise SafealignError("--limit and --batch-size must be >= 1", field="limit")
    res = mcqa.evaluate(args.model, args.tasks, limit=args.limit, data_files=mcqa.parse_data_files(args.data_files),
                        out=args.out, batch_size=args.batch_size)
    print_table([{"task": t, "n": r["n"], "acc": f"{r['acc']:.3f}", "95% CI": f"[{r['ci']['acc'][0]:.3f}, {r['ci']['acc'][1]:.3f}]",
                  "acc_norm": f"{r['acc_norm']:.3f}", "source": r["source"]} for t, r in res["tasks"].items()],
                title=f"mcqa: {res['model']}")
    return 0
