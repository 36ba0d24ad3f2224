"""``safealign report RUN_DIR``: (re)build report.html / report.md / plots / summary.json of a run from its result
dirs (nothing is recomputed)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="rebuild the report of a run dir from its results")
    p.add_argument("run_dir", help="a dir written by `safealign run`")
    p.add_argument("--examples", type=int, default=None, help="prompts shown side by side (default: the run's)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from safealign.report.build import build_report

    examples, title = args.examples, args.title
    manifest = Path(args.run_dir) / "manifest.json"
    if manifest.exists() and (examples is None or title is None):
        rep = (json.loads(manifest.read_text()).get("config") or {}).get("report") or {}
        examples = rep.get("examples", 5) if examples is None else examples
        title = rep.get("title") if title is None else title
    paths = build_report(args.run_dir, examples=5 if examples is None else examples, title=title)
    print(paths["html"])
    return 0
