"""``safealign generate``: responses of a model to a benchmark (resumable JSONL) or to one prompt."""

from __future__ import annotations

import argparse

from safealign.commands._common import add_gen_args, add_model_arg, gen_params, make_engine


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate responses to a benchmark or a prompt")
    add_model_arg(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--benchmark", help="benchmark name or group (see `safealign data list`), or a prompts file")
    src.add_argument("--prompt", help="one prompt, answered on stdout")
    p.add_argument("--limit", type=int, default=None, help="first N prompts of each benchmark (XSTest: N per half)")
    p.add_argument("--out", default=None, help="output JSONL (appended; rerun to resume)")
    p.add_argument("--quiet", action="store_true", help="do not print responses")
    add_gen_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    from safealign.data import registry
    from safealign.generate import generate_to_file

    from safealign import io
    from safealign.errors import SafealignError

    if args.limit is not None and args.limit < 1:
        raise SafealignError("--limit must be >= 1", field="limit")
    params = gen_params(args)
    if args.prompt is not None:
        if not args.prompt.strip():
            raise SafealignError("empty prompt", field="prompt")
        engine = make_engine(args)
        for k, resp in enumerate(engine.generate([args.prompt], params)[0]):
            print(resp if params.num_samples == 1 else f"[{k}] {resp}")
        return 0
    records = [r for name in registry.expand_benchmarks(args.benchmark) for r in registry.load_eval(name, args.limit)]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="safealign-gen-")) / "generations.jsonl"
    with io.locked(out, kind="file"):  # one writer per output file
        engine = make_engine(args)
        gens = generate_to_file(engine, records, params, out)
    if not args.quiet:
        for g in gens:
            print(json.dumps({"id": g.id, "sample": g.sample, "prompt": g.prompt, "response": g.response}, ensure_ascii=False))
    import sys

    print(f"{len(gens)} responses in {out}", file=sys.stderr)
    return 0
