"""``safealign models``: what models are available offline."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list models available offline (embedded, converted, HF cache)")
    p.add_argument("--verify", action="store_true", help="convert the embedded model if needed and check its sha256")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safealign import models
    from safealign.commands._common import print_table

    if args.verify:
        path = Path(models.resolve_model(models.EMBEDDED_NAME))
        ok = models.verify_converted(path)
        print(f"{models.EMBEDDED_NAME}: {path} {'OK' if ok else 'CORRUPT'}")
        if not ok:
            return 1
    if args.json:
        import json

        print(json.dumps(models.list_models(), indent=1))
        return 0
    print_table(models.list_models(), title="models available offline")
    return 0
