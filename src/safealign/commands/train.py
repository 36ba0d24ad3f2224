"""``safealign train {sit,dpo,rm,raft}``: run a training recipe into a model dir (usable as ``--model``).

    safealign train sit --config configs/sit.yaml --out runs/sit [--overwrite] [n_safety=500 train.lr=1e-4 ...]
    safealign train dpo --help-config            # every config key, its default and what it does
    accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m safealign train sit ...

Each method is the module ``safealign.recipes.<method>``, imported only when asked for; it exposes ``Config``
and ``run(cfg, out_dir, overwrite=False) -> Path``.
"""

from __future__ import annotations

import argparse
import importlib

METHODS = ("sit", "dpo", "rm", "raft")


class _IntermixedParser(argparse.ArgumentParser):
    """Lets key=value overrides come before or after the options (``train sit --out d a=1 --overwrite b=2``)."""

    _nested = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001
        if self._nested:
            return super().parse_known_args(args, namespace)
        self._nested = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._nested = False


def add_parser(sub) -> None:
    default_class, sub._parser_class = sub._parser_class, _IntermixedParser  # for this subcommand only
    try:
        p = sub.add_parser(
            "train", help="train a model: sit, dpo, rm (reward model) or raft",
            description="Train a model with a recipe. Settings come from --config (YAML) and key=value overrides "
                        "(dotted for sections: train.lr=1e-4). A finished --out is refused unless --overwrite; an "
                        "unfinished one resumes from its last checkpoint.")
    finally:
        sub._parser_class = default_class
    p.add_argument("method", choices=METHODS, help="the recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=100")
    p.add_argument("--config", default=None, help="YAML config (default: the recipe's built-in defaults)")
    p.add_argument("--out", default=None, help="output model dir")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run (or restart an unfinished one)")
    p.add_argument("--help-config", action="store_true", help="list the config keys with defaults and help, then exit")
    p.set_defaults(func=run)


def load_recipe(method: str):
    from safealign.errors import SafealignError

    if method not in METHODS:
        raise SafealignError(f"unknown method (choose from {', '.join(METHODS)})", field="method")
    try:
        return importlib.import_module(f"safealign.recipes.{method}")
    except ModuleNotFoundError as e:
        if e.name == f"safealign.recipes.{method}":
            raise SafealignError(f"the '{method}' recipe is not available in this installation",
                                 field="method") from None
        raise


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safealign.config import describe, load_config
    from safealign.errors import SafealignError

    recipe = load_recipe(args.method)
    if args.help_config:
        rows = describe(recipe.Config)
        width = max(len(f"{k} = {d}") for k, d, _ in rows)
        print(f"# safealign train {args.method}: key = default  # what it does")
        for key, default, text in rows:
            print(f"{key} = {default}".ljust(width), f" # {text}")
        return 0
    if not args.out:
        raise SafealignError("--out is required (the model dir to write)", field="out")
    cfg = load_config(recipe.Config, args.config, args.overrides)
    from safealign.recipes.common import distributed_state

    import contextlib

    from safealign import io

    state = distributed_state()  # first, so every recipe sees the same process group (CPU: gloo)
    # one run per model dir: the main process holds its lock (the others of an `accelerate launch` are the same run)
    with io.locked(args.out) if state.is_main_process else contextlib.nullcontext():
        out = recipe.run(cfg, Path(args.out), overwrite=args.overwrite)
    if state.is_main_process:
        print(out)
    return 0
