"""``safealign judge``: score (prompt, response) pairs with any judge, train the guard or embedded judge, and
measure a union judge's card.

    safealign judge score --input pairs.jsonl --out judged.jsonl  # the default judge (union.DEFAULT)
    safealign judge train --judge guard --windows --out DIR [--limit N]  # reproduces the shipped guard judge
    safealign judge train --judge embedded [--out DIR]             # the older MiniLM judge (cached)
    safealign judge card --out DIR   # reproduces the default union's card (--judge union:...: another union's)
    safealign judge card --judge guard[:DIR] --out DIR [--windows]  # scores a trained guard's head again

``score`` reads JSONL lines with ``prompt`` and ``response`` and writes the same lines with ``safe``,
``refusal``, ``score`` and ``judge`` added (``verdict_category`` too when the judge gives one). To audit a
judge against your own labels, put them in ``label_safe`` / ``label_refusal`` (booleans): the agreement is
printed. ``train`` trains a judge and prints its held-out accuracy (per source for ``guard``). ``card`` scores a
union on the guard's held-out sources, the sources left out, the outside source and the demo methods' changes
(``union.measure``); without ``--out`` it writes to the cache, where the union finds it (the report shows it).
With ``--judge guard[:DIR]`` it scores a trained guard judge's head again as ``train`` scores the head it fits, on
this machine's features, this code and data (``guard.rescore``), and writes the same head with the new card into
``--out`` (which may be DIR itself: its card alone is replaced).
"""

from __future__ import annotations

import argparse

from safealign.judges.union import DEFAULT as DEFAULT_JUDGE


def add_parser(sub) -> None:
    p = sub.add_parser("judge", help="score pairs with a judge; train the guard or embedded judge")
    jsub = p.add_subparsers(dest="judge_command", required=True)
    sp = jsub.add_parser("score", help="add safe/refusal/score to JSONL lines with prompt and response")
    sp.add_argument("--judge", default=DEFAULT_JUDGE, help="judge spec (see `safealign eval --help`)")
    sp.add_argument("--input", required=True, help="JSONL with prompt and response per line")
    sp.add_argument("--out", required=True, help="output JSONL (written atomically)")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.set_defaults(func=run_score)
    tp = jsub.add_parser("train", help="train a judge (prints its held-out accuracy)")
    tp.add_argument("--judge", choices=("guard", "embedded"), default="guard",
                    help="guard: SmolLM2 features + a head (the shipped default; needs --out); embedded: MiniLM")
    tp.add_argument("--out", default=None,
                    help="dir for the trained judge (load it with --judge guard:DIR or embedded:DIR; embedded "
                         "defaults to the cache)")
    tp.add_argument("--limit", type=int, default=None, help="cap each training source at N items (quick runs)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--overwrite", action="store_true", help="retrain even if a trained judge is there")
    tp.add_argument("--lora", action="store_true",
                    help="guard: LoRA on the backbone's layers 22-29, trained with a fresh head (not the shipped "
                         "judge: one epoch measured worse on three of its five held-out sources; ~42 min on 2 cores)")
    tp.add_argument("--tune-from", type=int, default=None, metavar="LAYER",
                    help="guard: LoRA from this layer up (one of the layers read: 6, 10, 14, 18, 22, 26; implies "
                         "--lora; default 22). Lower tunes more of the backbone: a GPU's work")
    tp.add_argument("--lora-epochs", type=float, default=None, metavar="E",
                    help="guard: passes over the training pairs when tuning (implies --lora; default 1)")
    tp.add_argument("--no-pku", dest="pku", action="store_false",
                    help="guard: leave out PKU-SafeRLHF's train pairs (plain-prose harmful answers; the shipped judge "
                         "trains on them, with 20%% of their prompts held out as the source pku-saferlhf)")
    tp.add_argument("--windows", action="store_true",
                    help="guard: the same head, reading a long response in windows of 160 tokens, 128 apart, too; "
                         "harmful where the first window is or a later one passes P(harmful) 0.98 while the first "
                         "window's is above 1e-4 (frozen backbone)")
    tp.set_defaults(func=run_train)
    cp = jsub.add_parser("card", help="measure a union judge's accuracy per source (its card), or score a guard "
                                      "judge's head again")
    cp.add_argument("--judge", default=DEFAULT_JUDGE,
                    help="a union: union:J1+J2[@S] (default %(default)s); or guard (the shipped head) / guard:DIR: "
                         "the same head scored again, written with its new card into --out")
    cp.add_argument("--out", default=None, help="dir for card.json (default for a union: the cache, where the union "
                                                "finds it; needed for a guard: a new dir, or the judge's own)")
    cp.add_argument("--limit", type=int, default=None, help="union: cap each source at N items (quick runs)")
    cp.add_argument("--windows", action="store_true",
                    help="guard: read long responses in windows too (as judge train --windows), where its card "
                         "does not")
    cp.set_defaults(func=run_card)


def read_pairs(path: str) -> list[dict]:
    """The input lines; a malformed line is a SafealignError naming the file and line."""
    from pathlib import Path

    from safealign.data.loaders import iter_jsonl, require_str
    from safealign.errors import SafealignError

    rows = []
    for n, obj in iter_jsonl(Path(path)):
        require_str(obj, "prompt", file=path, line=n)
        require_str(obj, "response", file=path, line=n, allow_empty=True)
        for key in ("label_safe", "label_refusal"):
            if key in obj and not isinstance(obj[key], bool):
                raise SafealignError("expected true or false", file=path, line=n, field=key)
        rows.append(obj)
    if not rows:
        raise SafealignError("no lines to judge", file=path)
    return rows


def run_score(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from safealign.io import write_text
    from safealign.judges import get_judge
    from safealign.judges.base import judge_in_batches
    from safealign.stats import accuracy

    rows = read_pairs(args.input)  # validate everything before loading a judge
    judge = get_judge(args.judge)
    verdicts = judge_in_batches(judge, [r["prompt"] for r in rows], [r["response"] for r in rows], args.batch_size)
    lines = []
    for r, v in zip(rows, verdicts):
        r = dict(r, safe=bool(v.safe), refusal=bool(v.refusal), score=float(v.score), judge=judge.name)
        if v.category is not None:
            r["verdict_category"] = v.category
        lines.append(json.dumps(r, ensure_ascii=False) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "".join(lines))
    print(f"{len(rows)} pairs judged by {judge.name}; {sum(v.safe for v in verdicts)} safe, "
          f"{sum(v.refusal for v in verdicts)} refusals → {out}", file=sys.stderr)
    for key in ("safe", "refusal"):
        idx = [i for i, r in enumerate(rows) if f"label_{key}" in r]
        if idx:
            acc = accuracy([getattr(verdicts[i], key) for i in idx], [rows[i][f"label_{key}"] for i in idx])
            print(f"{key}: agreement with label_{key} {100 * acc['rate']:.1f}% "
                  f"[{100 * acc['ci'][0]:.1f}, {100 * acc['ci'][1]:.1f}] on {acc['n']} lines")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import json

    from safealign.errors import SafealignError
    from safealign.judges import embedded

    if args.limit is not None and args.limit < 1:
        raise SafealignError("--limit must be >= 1", field="limit")
    if args.judge == "guard":
        return _train_guard(args)
    if _lora_asked(args) or args.windows:
        raise SafealignError("--lora, --tune-from, --lora-epochs and --windows are the guard judge's: use them with "
                             "--judge guard", field="judge")
    d = embedded.train(args.out, limit=args.limit, seed=args.seed, overwrite=args.overwrite)
    meta = json.loads((d / "meta.json").read_text())
    print(f"embedded judge: {d}")
    print(f"trained on {meta['n_train']} examples ({meta['seconds']} s); sources: "
          + ", ".join(f"{k} {v}" for k, v in meta["sources"].items()))
    for split, label in (("validation", "validation (15% of the training set)"),
                         ("heldout", f"held-out set ({meta.get('heldout_n', 0)} responses by other models)")):
        acc = meta.get(split)
        if acc:
            print(f"{label}: " + ", ".join(
                f"{k} {100 * v['rate']:.1f}% [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}] (n={v['n']})"
                for k, v in acc.items()))
    return 0


def _lora_asked(args: argparse.Namespace) -> bool:
    """--lora, or a LoRA setting (--tune-from, --lora-epochs), which implies it."""
    return args.lora or args.tune_from is not None or args.lora_epochs is not None


def _train_guard(args: argparse.Namespace) -> int:
    from safealign.errors import SafealignError
    from safealign.judges import guard

    if not args.out:
        raise SafealignError("--out DIR is needed for --judge guard (the shipped judge is read-only; use it "
                             "with --judge guard:DIR)", field="out")
    lora = _lora_asked(args)
    d = guard.train(args.out, seed=args.seed, limit=args.limit, overwrite=args.overwrite,
                    tune_from=(guard.TUNE_FROM if args.tune_from is None else args.tune_from) if lora else None,
                    pku=args.pku, lora_epochs=guard.lora.EPOCHS if args.lora_epochs is None else args.lora_epochs,
                    windows=args.windows)
    print(f"guard judge: {d}")
    print_guard_card(guard.GuardJudge(d).card)
    return 0


def print_guard_card(card: dict) -> None:
    """The card's held-out scores, one line per source."""
    parts = ", ".join(f"{v} s {k}" for k, v in card["seconds"].items() if k != "total")
    print(f"data {card['data_hash']}, code {card['code_hash']}, features in {card['feature_dtype']}"
          + (f", LoRA from layer {card['tune_from']} ({(card.get('lora') or {}).get('epochs', 1):g} epochs)"
             if card.get("tune_from") is not None else ", frozen backbone")
          + (", with PKU-SafeRLHF's train pairs" if card.get("pku") else "")
          + (f", long responses read in windows {card['windows']} tokens apart (later ones harmful above P(harmful) "
             f"{card.get('window_threshold')}, where the first's is above {card.get('window_gate') or 0:g})"
             if card.get("windows") else "")
          + f", harmful where P(harmful) > {card.get('harmful_threshold', 0.5)}"
          + f"; {card['seconds']['total']} s ({parts})")
    for src, n in card["sources"].items():
        print(f"  {src}: trained on {n['train']}, held out {n['heldout']}" + _scores_text(card, src))
    _print_changes_and_outside(card)


def _scores_text(card: dict, src: str) -> str:
    """"; harmful F1 ..., refusal accuracy ...; ... when left out of training" of a card's source ("" if none)."""
    line = ""
    sc = card["heldout"].get(src)
    if sc:
        f1 = "–" if sc["harmful_f1"] is None else f"{sc['harmful_f1']:.3f}"
        acc = sc["harmful_accuracy"]
        ref = sc["refusal_accuracy"]
        line += (f"; harmful F1 {f1}, harmful accuracy "
                 + ("–" if not acc else f"{100 * acc['rate']:.1f}% (n={acc['n']})")
                 + ", refusal accuracy " + ("–" if not ref else f"{100 * ref['rate']:.1f}% (n={ref['n']})"))
    unseen = (card.get("unseen_source") or {}).get(src)
    if unseen and unseen["harmful_f1"] is not None:
        line += f"; harmful F1 {unseen['harmful_f1']:.3f} when left out of training"
    return line


def _print_changes_and_outside(card: dict) -> None:
    from safealign.judges.method_changes import bias_text

    changes = card.get("method_changes") or {}
    if changes:  # labelled answers of the demo's own models: does the judge see the change each method makes?
        print("  safe % change from the base model, judge - labels (95% interval), on labelled answers of the demo's "
              "models: " + ", ".join(
                  f"{m} {bias_text(c['safe'])} (labels {100 * c['safe']['labels']:+.1f})"
                  for m, c in changes.items() if c.get("safe")))
    for src, sc in (card.get("outside") or {}).items():  # a source no recipe trains on
        acc, ref = sc["harmful_accuracy"], sc["refusal_accuracy"]
        print(f"  {src} (outside source, never trained on): "
              + ("" if sc["harmful_f1"] is None else f"harmful F1 {sc['harmful_f1']:.3f}, ")
              + ("" if not acc else f"harmful accuracy {100 * acc['rate']:.1f}% (n={acc['n']}), ")
              + ("refusal accuracy –" if not ref else f"refusal accuracy {100 * ref['rate']:.1f}% (n={ref['n']})"))


def run_card(args: argparse.Namespace) -> int:
    import json

    from safealign.errors import SafealignError
    from safealign.judges import union

    if args.judge == "guard" or args.judge.startswith("guard:"):
        return _rescore_guard(args)
    if args.windows:
        raise SafealignError("--windows is a guard judge's reading: use it with --judge guard[:DIR]", field="windows")
    arg = union.union_arg(args.judge)
    if arg is None:
        raise SafealignError(f"judge card measures a union judge (union:J1+J2[@S]) or scores a guard judge's head "
                             f"again (guard, guard:DIR), got '{args.judge}'", field="judge")
    if args.limit is not None and args.limit < 1:
        raise SafealignError("--limit must be >= 1", field="limit")
    d = union.measure(arg, args.out, limit=args.limit)
    card = json.loads((d / "card.json").read_text(encoding="utf-8"))
    print(f"union judge card: {d / 'card.json'}")
    print(f"{card['id']}: data {card['data_hash']}, guard features in {card['feature_dtype']}; {card['seconds']} s")
    for src in card["heldout"]:
        print(f"  {src}" + _scores_text(card, src))
    for src, why in (card.get("unseen_not_measured") or {}).items():
        print(f"  {src} left out of training: not measured ({why})")
    _print_changes_and_outside(card)
    return 0


def _rescore_guard(args: argparse.Namespace) -> int:
    from safealign.errors import SafealignError
    from safealign.judges import guard

    if not args.out:
        raise SafealignError("--out DIR is needed for a guard judge: a new dir for the head and its new card, or the "
                             "judge's own dir to replace its card", field="out")
    if args.limit is not None:
        raise SafealignError("--limit is a union's: a guard's head is scored on the data its card names (its own "
                             "limit)", field="limit")
    path = args.judge.partition(":")[2] or guard.SHIPPED
    before = guard.GuardJudge(path).card  # read before: --out may be the judge's own dir
    d = guard.rescore(path, args.out, windows=args.windows)
    after = guard.GuardJudge(d).card
    print(f"guard judge (the head of {path}), scored again: {d}")
    print_guard_card(after)
    print("harmful F1, the card before -> now: " + "; ".join(_moves(before, after)))
    return 0


def _moves(before: dict, after: dict) -> list[str]:
    """"held out gptfuzz 0.897 -> 0.898", ... per source of each measure both cards have a harmful F1 for."""
    out = []
    for key, label in (("heldout", "held out"), ("unseen_source", "left out"), ("outside", "outside")):
        old, new = before.get(key) or {}, after.get(key) or {}
        for src in new:
            f0, f1 = (old.get(src) or {}).get("harmful_f1"), new[src].get("harmful_f1")
            if f0 is not None and f1 is not None:
                out.append(f"{label} {src} {f0:.3f} -> {f1:.3f}")
    return out
