"""``safealign analyze``: error-analysis tables of two result dirs and/or a RAFT run (see ``safealign.eval.analyze``)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="error analysis: safe/unsafe flips between two result dirs, RAFT best-of-K")
    p.add_argument("--a", default=None, help="result dir a, e.g. the base model (written by `safealign eval --out`)")
    p.add_argument("--b", default=None, help="result dir b, e.g. the tuned model")
    p.add_argument("--raft", default=None, help="a RAFT run dir (iterations/iter_<t>/samples.jsonl)")
    p.add_argument("--out", required=True, help="output dir: analysis.json/md (and raft_analysis.json/md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safealign.errors import SafealignError
    from safealign.eval import analyze

    if bool(args.a) != bool(args.b):
        raise SafealignError("give both --a and --b", field="a" if not args.a else "b")
    if not args.a and not args.raft:
        raise SafealignError("give --a and --b (two result dirs), --raft (a RAFT run dir), or both", field="a")
    out = Path(args.out)
    if args.a:
        analyze.analyze(args.a, args.b, out)
        print((out / "analysis.md").read_text())
    if args.raft:
        analyze.analyze_raft(args.raft, out)
        print((out / "raft_analysis.md").read_text())
    return 0
