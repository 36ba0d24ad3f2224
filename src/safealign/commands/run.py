"""``safealign run CONFIG --out DIR [key=value ...]``: a whole study (train every method, evaluate every model,
compare, analyze, report) from one experiment file; rerun the same command to resume. See ``safealign.pipeline``."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from safealign.commands.train import _IntermixedParser  # key=value overrides before or after the options

    default_class, sub._parser_class = sub._parser_class, _IntermixedParser  # for this subcommand only
    try:
        p = sub.add_parser("run", help="run a whole study from a config (train, evaluate, compare, report); "
                                       "resumable")
    finally:
        sub._parser_class = default_class
    p.add_argument("config", nargs="?", help="run config, e.g. configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. limit=10 methods.dpo.beta=0.2")
    p.add_argument("--out", default=None, help="run dir (default: runs/<config name>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (per stage: model, data, settings, work) "
                                                          "and which stages would run; load and run nothing")
    p.add_argument("--overwrite", action="store_true", help="start over in --out when it holds a study of another "
                                                            "base model (otherwise refused)")
    p.add_argument("--help-config", action="store_true", help="list the run config's keys and exit")
    p.add_argument("--stage", default=None, help="run only this stage of the run in --out (its inputs must be done; "
                                                 "the manifest is not updated); what jobs > 1 starts per stage")
    p.add_argument("--expect-hash", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from safealign.errors import SafealignError
    from safealign.pipeline import RunConfig, load_run_config, run as run_study

    if args.help_config:
        from safealign.config import describe

        for name, default, help_ in describe(RunConfig):
            print(f"{name:<28} {default:<28} {help_}")
        return 0
    if args.stage:
        from safealign.pipeline import run_one_stage

        if not args.out:
            raise SafealignError("--stage needs --out (the run dir)", field="out")
        run_one_stage(args.out, args.stage, args.expect_hash)
        return 0
    if not args.config:
        raise SafealignError("name a run config, e.g. `safealign run configs/quickstart.yaml`", field="config")
    cfg = load_run_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    report = run_study(cfg, out, source=args.config, dry_run=args.dry_run, overwrite=args.overwrite)
    if not args.dry_run:
        print(f"report: {report}", file=sys.stderr)
        print(report)
    return 0
