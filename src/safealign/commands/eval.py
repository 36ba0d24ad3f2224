"""``safealign eval``: generate on safety benchmarks (resumably), judge every response, write the rates.

    safealign eval --model smollm2-135m-instruct --benchmarks harm,xstest --judge embedded --limit 20 --out results/base

writes ``OUT/responses.jsonl``, ``OUT/summary.json`` and ``OUT/summary.md`` (see ``safealign.eval.run``).
Rerun the same command after an interruption: finished generations and verdicts are reused.
"""

from __future__ import annotations

import argparse

from safealign.judges.union import DEFAULT as DEFAULT_JUDGE

from safealign.commands._common import add_gen_args, add_model_arg


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="safety evaluation: generate, judge, rates with 95%% intervals")
    add_model_arg(p)
    p.add_argument("--benchmarks", default="harm,benign,xstest",
                   help="comma-separated names or groups: harm, benign, xstest, advbench, harmbench, donotanswer, "
                        "helpful, or prompt files (default: harm,benign,xstest)")
    p.add_argument("--judge", default=DEFAULT_JUDGE,
                   help=f"{DEFAULT_JUDGE} (default: harmful when the shipped guard or the shipped MiniLM judge at "
                        "P(harmful) > 0.7 finds it so, unless it is degenerate text or a short plain decline; a "
                        "refusal when both do or a safe answer is off-topic) | guard | embedded | keywords | "
                        "hf-classifier:<model> | "
                        "llama-guard:<model> | openai:<model> | rm:<dir> | guard:<dir> | union:<judge>+<judge>[@S]")
    p.add_argument("--limit", type=int, default=None, help="first N prompts of each benchmark (XSTest: N per half)")
    p.add_argument("--out", required=True, help="result dir (rerun with the same dir to resume)")
    p.add_argument("--helpful-scorer", default=None,
                   help="judge spec whose score is the helpfulness reward (with the helpful benchmark)")
    add_gen_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from safealign.commands._common import gen_params, make_engine
    from safealign.errors import SafealignError
    from safealign.eval.run import evaluate

    import os

    from safealign import io

    if args.limit is not None and args.limit < 1:
        raise SafealignError("--limit must be >= 1", field="limit")
    if args.base_url and str(args.judge).startswith("openai:") and not os.environ.get("OPENAI_BASE_URL"):
        os.environ["OPENAI_BASE_URL"] = args.base_url  # the openai: judge asks the same server as the engine
    engine = make_engine(args) if args.engine != "hf" else None  # hf: loaded lazily, only if generation is left
    with io.locked(args.out):  # one writer per result dir
        summary = evaluate(args.model, args.benchmarks, args.judge, args.out, limit=args.limit,
                           params=gen_params(args), engine=engine, helpful_scorer=args.helpful_scorer)
    print((Path(args.out) / "summary.md").read_text())
    print(f"wrote {args.out}/responses.jsonl, summary.json, summary.md ({summary['seconds']:.0f} s)", file=sys.stderr)
    return 0
