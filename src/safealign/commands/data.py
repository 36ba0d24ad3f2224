"""``safealign data list``: the named datasets and benchmarks."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="datasets and benchmarks")
    dsub = p.add_subparsers(dest="data_command", required=True)
    lp = dsub.add_parser("list", help="list named datasets (name, kind, size, source)")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lp.set_defaults(func=run_list)
    sp = dsub.add_parser("show", help="print the first records of a dataset")
    sp.add_argument("name")
    sp.add_argument("--limit", type=int, default=3)
    sp.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    import json

    from safealign.commands._common import print_table
    from safealign.data import registry

    rows = registry.list_entries()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table([{k: r[k] for k in ("name", "kind", "size", "splits", "source", "where")} for r in rows],
                    title="safealign datasets")
        print("groups: " + "; ".join(f"{g} = {', '.join(n)}" for g, n in registry.GROUPS.items()))
    return 0


def run_show(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from safealign.data import registry

    entry = registry.get(args.name)
    load = {"benchmark": registry.load_eval, "sft": registry.load_instructions, "preference": registry.load_preferences,
            "labelled": registry.load_labelled}
    for rec in load[entry.kind](args.name, limit=args.limit):
        print(json.dumps(asdict(rec), ensure_ascii=False))
    return 0
