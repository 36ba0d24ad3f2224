"""``safealign compare``: position-swapped pairwise win rate of two result dirs (see ``safealign.eval.compare``)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="pairwise win rate of two result dirs, judged in both orders")
    p.add_argument("--a", required=True, help="result dir of model a (written by `safealign eval --out`)")
    p.add_argument("--b", required=True, help="result dir of model b")
    p.add_argument("--judge", default="hf:smollm2-135m-instruct",
                   help="hf:<model spec> (or a bare model spec) read by next-token logits of A vs B, "
                        "or openai:<model> with --base-url (default: the embedded model; a weak judge)")
    p.add_argument("--out", required=True, help="output dir: compare.json, compare.md, compare_items.jsonl")
    p.add_argument("--limit", type=int, default=None, help="first N matched prompts")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server for an openai: judge")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--batch-size", type=int, default=8, help="judge prompts per batch (or concurrent requests)")
    p.add_argument("--timeout", type=float, default=60.0, help="openai judge: seconds to wait for each answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safealign.eval.compare import compare

    if args.limit is not None and args.limit < 1 or args.batch_size < 1:
        from safealign.errors import SafealignError

        raise SafealignError("--limit and --batch-size must be >= 1", field="limit")
    from safealign import io

    with io.locked(args.out):  # compare_items.jsonl is appended to and resumed: one writer
        compare(args.a, args.b, args.judge, args.out, limit=args.limit, base_url=args.base_url,
                api_key_env=args.api_key_env, batch_size=args.batch_size, timeout=args.timeout)
    print((Path(args.out) / "compare.md").read_text())
    return 0
