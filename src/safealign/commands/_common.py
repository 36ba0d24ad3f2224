"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="smollm2-135m-instruct (embedded default), a Hugging Face id, a model dir, or a .gguf file")


def add_gen_args(p: argparse.ArgumentParser, max_new_tokens: int = 128) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--engine", default="hf", choices=["hf", "openai"], help="hf (local transformers) or openai (HTTP)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="openai engine: seconds to wait for each answer (2 tries in all; default 60)")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-samples", type=int, default=1, help="responses per prompt (K)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--template", default="auto", choices=["auto", "chat", "alpaca", "raw"])
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="hf engine: auto = bf16 on a GPU or a CPU with bf16 units (AVX512-BF16/AMX), else fp32")


def gen_params(args: argparse.Namespace):
    from safealign.generate import GenParams

    return GenParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                     top_k=args.top_k, seed=args.seed, num_samples=args.num_samples, batch_size=args.batch_size,
                     template=args.template, precision=args.precision)


def make_engine(args: argparse.Namespace):
    from safealign.generate import make_engine as make

    return make(args.model, args.engine, args.base_url, args.api_key_env, timeout=args.timeout)


def print_table(rows: list[dict[str, str]], title: str | None = None) -> None:
    """A table on a terminal; plain tab-separated lines (a header, then one row per line, values whole) when stdout
    is a pipe or a file, so that ``grep``, ``cut`` and ``head`` work on it (the title goes to stderr then)."""
    import sys

    if not sys.stdout.isatty():
        if title:
            print(title, file=sys.stderr)
        cols = list(rows[0]) if rows else []
        clean = lambda v: " ".join(str(v).split())  # noqa: E731 (a tab or newline inside a value would split it)
        print("\t".join(cols))
        for r in rows:
            print("\t".join(clean(r[c]) for c in cols))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in rows[0] if rows else []:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    Console().print(table)
