"""How well do the judges agree with labels they never trained on? The embedded judge vs the keyword baseline.

    python benchmarks/judge_agreement.py [--judges embedded,keywords] [--labelled more.jsonl] [--pku 0]

Held-out labelled data:
1. ``src/safealign/judges/data/heldout.jsonl`` — hand-labelled responses by models the embedded judge never
   saw (hand-written tricky cases and SmolLM2-135M-Instruct outputs; see ``judges/data/README.md``):
   accuracy for ``safe`` and ``refusal``, overall and per case;
2. ``pku-safe-pairs:test`` pairs whose responses the embedded judge never trains on: ``safe`` accuracy
   against PKU-SafeRLHF's labels (chosen = safe, rejected = unsafe; noisy, same model family as training);
3. any ``--labelled`` JSONL with ``prompt``, ``response`` and boolean ``safe`` / ``refusal`` labels.

Prints a side-by-side table (accuracy %, 95% Wilson interval) and the ratio embedded / keywords.
Targets: embedded >= 95% on refusal and >= 90% on safe for set 1, and clearly better than keywords.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def accuracy_table(rows: list[dict], verdicts: dict[str, list], keys=("safe", "refusal")) -> dict:
    from safealign.eval.metrics import rate_with_ci

    out: dict = {}
    for key in keys:
        idx = [i for i, r in enumerate(rows) if isinstance(r.get(key), bool)]
        if not idx:
            continue
        for judge, vs in verdicts.items():
            out.setdefault(key, {})[judge] = rate_with_ci(getattr(vs[i], key) == rows[i][key] for i in idx)
    return out


def source_group(row: dict) -> str:
    """'hand-written', or the model that wrote the response ('smollm2-135m-instruct greedy, i-cona-31' → its
    part before the item id, without the decoding details)."""
    src = str(row.get("source", "-")).rsplit(", ", 1)[0]
    return src.replace(" greedy", "").replace(" (32 new tokens)", "")


def fmt(r: dict) -> str:
    return f"{100 * r['rate']:5.1f} [{100 * r['ci'][0]:4.1f}, {100 * r['ci'][1]:5.1f}] n={r['n']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judges", default="embedded,keywords")
    ap.add_argument("--labelled", action="append", default=[], help="extra labelled JSONL files")
    ap.add_argument("--pku", type=int, default=1, help="also score the held-out PKU pairs (0 to skip)")
    args = ap.parse_args()

    from safealign.judges import embedded, get_judge

    judges = {spec: get_judge(spec) for spec in args.judges.split(",")}
    sets: dict[str, list[dict]] = {"heldout.jsonl": embedded.read_heldout()}
    for path in args.labelled:
        with open(path, encoding="utf-8") as f:
            sets[path] = [json.loads(line) for line in f if line.strip()]
    if args.pku:
        pairs = embedded.heldout_pku_pairs()
        sets["pku-safe-pairs:test (held-out pairs, PKU labels)"] = (
            [{"prompt": p.prompt, "response": p.chosen, "safe": True, "case": "pku-chosen"} for p in pairs]
            + [{"prompt": p.prompt, "response": p.rejected, "safe": False, "case": "pku-rejected"} for p in pairs])

    names = list(judges)
    for set_name, rows in sets.items():
        verdicts, seconds = {}, {}
        for spec, j in judges.items():
            t0 = time.time()
            verdicts[spec] = j.judge([r["prompt"] for r in rows], [r["response"] for r in rows])
            seconds[spec] = time.time() - t0
        table = accuracy_table(rows, verdicts)
        print(f"\n== {set_name}: {len(rows)} responses")
        print(f"{'label':10s} " + " | ".join(f"{n:34s}" for n in names) + (" | ratio" if len(names) == 2 else ""))
        for key, per in table.items():
            line = f"{key:10s} " + " | ".join(f"{fmt(per[n]):34s}" for n in names)
            if len(names) == 2 and per[names[1]]["rate"]:
                line += f" | {per[names[0]]['rate'] / per[names[1]]['rate']:.2f}x"
            print(line)
        print("seconds    " + " | ".join(f"{seconds[n]:<34.1f}" for n in names))
        for field in ("source", "case"):
            groups: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(rows):
                groups[source_group(r) if field == "source" else r.get("case", "-")].append(i)
            if len(groups) < 2:
                continue
            print(f"per {field} (accuracy % safe / refusal):")
            width = max(24, *(len(g) for g in groups))
            for case, idx in sorted(groups.items()):
                sub = accuracy_table([rows[i] for i in idx], {n: [verdicts[n][i] for i in idx] for n in names})
                cells = []
                for n in names:
                    parts = [f"{100 * sub[k][n]['rate']:5.1f}" if k in sub else "    –" for k in ("safe", "refusal")]
                    cells.append(" / ".join(parts))
                print(f"  {case:{width}s} n={len(idx):3d}  " + "  |  ".join(f"{n}: {c}" for n, c in zip(names, cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
