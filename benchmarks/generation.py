"""Generation throughput and fidelity: safealign's engine vs a naive loop, side by side in one run.

    python benchmarks/generation.py [--model smollm2-135m-instruct] [--prompts 64] [--new-tokens 64]

Every method answers the same prompts (the first N of the harm group and XSTest, greedy, same max_new_tokens):
- ``naive-fp32``: ``model.generate`` once per prompt, fp32 (the baseline of every ratio);
- ``generate-fp32`` / ``generate-bf16``: transformers' batched ``generate`` over length-sorted batches (the
  engine safealign had before continuous batching), to show what continuous batching adds;
- ``engine-fp32`` / ``engine-bf16``: safealign's ``HFEngine`` (continuous batching, ``generate.py``);
- any of them with ``-<N>t`` (``--methods engine-fp32-1t``): on N CPU threads instead of torch's default.
bf16 rows run only where the CPU has bf16 units (``models.native_bf16``: AVX512-BF16 / AMX) or on a GPU, or where
``--methods`` names them (emulated bf16 elsewhere: what it costs there; stop 41, an Ice Lake-class Xeon with AVX512
but no bf16 units, 64 prompts: engine-fp32 226.7 tokens/s, engine-bf16 99.2, 2.3x slower — the path ``auto`` took
there before ``models.cpu_bf16`` asked the CPU); the header says which path this machine took. Generated tokens are
counted the same way for all (re-tokenizing each response, +1 for the end-of-sequence token when it stopped early).
Each method runs in its own child process, so its peak RSS is its own. Then the default judge (``union.DEFAULT``;
``guard`` before stop 42) reads every method's answers: "same answer" and "same verdict" compare each method with
``engine-fp32``, answer by answer (a verdict is (safe, refusal)). Goal: engine-bf16 >= 20x naive-fp32 tokens/s with
>= 97% of verdicts unchanged. Last, per method, the aggregate view: its safe % minus engine-fp32's, paired over the
same prompts, with a 95% interval and McNemar's p (``safealign.stats``) — whether a precision changes the number a
report prints, beyond its noise.

Stop 42 (AMD EPYC with AVX512-BF16, 2 cores; the default union reading): 757 prompts (``--prompts 968``):
engine-fp32 212.1 tokens/s, engine-bf16 424.8 (2.0x); 22% of bf16's answers identical to fp32's (they part at
character 89, median), 84% of verdicts the same, safe % bf16 − fp32 +0.4 points [−2.2, +3.0] (McNemar p 0.84).
One thread against two (256 prompts, the guard reading; ``engine-fp32-1t``, ``engine-bf16-1t``): fp32 on one thread
gave every answer fp32 gave on two, character for character — fp32's greedy answers here do not depend on the thread
layout, so the per-verdict gap is bf16's own, not a floor fp32 shares — and bf16 on one thread agreed with fp32 as
bf16 on two did (20% of answers, 80% of verdicts); bf16 on one thread against bf16 on two: 247 of 256 answers the
same (its rounding depends a little on the layout, fp32's not at all; the line "... vs engine-bf16" prints it).
Whether bf16 moves a method's reported change: ``benchmarks/precision_deltas.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time

from safealign.judges.union import DEFAULT as DEFAULT_JUDGE

THREADED = re.compile(r"^(naive|generate|engine)-(fp32|bf16)(-[1-9][0-9]*t)?$")  # "engine-fp32-1t": on one thread


def load_prompts(n: int) -> list[str]:
    from safealign.data import registry

    names = registry.expand_benchmarks("harm,xstest")
    per = max(16, -(-n // (len(names) + 1)))  # XSTest's limit takes N of each half
    recs = [r for name in names for r in registry.load_eval(name, limit=per)]
    return [r.prompt for r in recs][:n]


def count_tokens(tok, responses: list[str], max_new: int) -> int:
    n = 0
    for r in responses:
        k = len(tok(r, add_special_tokens=False).input_ids)
        n += min(max_new, k + 1)
    return n


def run_method(method: str, model: str, n: int, max_new: int, batch_size: int) -> dict:
    import torch

    from safealign.generate import GenParams, HFEngine
    from safealign.models import format_prompt

    kind, precision, *threads = method.split("-")
    if threads:  # "-1t": this many CPU threads (the default: torch's, one per core)
        torch.set_num_threads(int(threads[0][:-1]))
    prompts = load_prompts(n)
    engine = HFEngine(model)
    params = GenParams(max_new_tokens=max_new, batch_size=batch_size, precision=precision)
    engine.generate(prompts[:2], GenParams(max_new_tokens=4, precision=precision))  # warm-up, sets the dtype
    tok, m = engine.tokenizer, engine.model
    t = time.perf_counter()
    if kind == "engine":
        responses = [r[0] for r in engine.generate(prompts, params)]
    elif kind == "naive":
        responses = []
        for p in prompts:
            enc = tok(format_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = m.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
            responses.append(tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip())
    else:  # transformers' batched generate, length-sorted batches, left padding
        texts = [format_prompt(tok, p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: -len(tok(texts[i], add_special_tokens=False).input_ids))
        responses = [""] * len(texts)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = m.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
            for j, d in enumerate(tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)):
                responses[idx[j]] = d.strip()
    seconds = time.perf_counter() - t
    tokens = count_tokens(tok, responses, max_new)
    return {"method": method, "prompts": prompts, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "responses": responses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--judge", default=DEFAULT_JUDGE,
                    help="the judge whose verdicts are compared (default: safealign's, %(default)s); 'none' skips it")
    ap.add_argument("--methods", default="", help="comma-separated subset (engine-fp32 always runs: the reference); a "
                    "'-<N>t' suffix runs a method on N CPU threads (engine-fp32-1t: fp32 in another thread layout, "
                    "how far fp32 agrees with itself)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child, args.model, args.prompts, args.new_tokens, args.batch_size)))
        return
    from safealign.models import inference_device, native_bf16, resolve_model

    resolve_model(args.model)  # convert once, outside the timings
    bf16 = native_bf16()
    every = ["naive-fp32", "generate-fp32", "engine-fp32", "generate-bf16", "engine-bf16"]
    methods = every if bf16 else every[:3]
    if args.methods:  # bf16 rows named here run even without bf16 units (emulated: to measure what that costs)
        asked = args.methods.split(",")
        bad = [m for m in asked if not THREADED.match(m)]
        if bad:
            sys.exit(f"--methods: unknown method {bad[0]!r} (one of {', '.join(every)}, each with an optional "
                     "thread count: engine-fp32-1t)")
        methods = [m for m in every if m in asked or m == "engine-fp32"] + [m for m in asked if m not in every]
    results = {}
    for method in methods:
        cmd = [sys.executable, __file__, "--child", method, "--model", args.model, "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[method] = json.loads(out.strip().splitlines()[-1])
    ref = results["engine-fp32"]
    verdicts = {}
    if args.judge != "none":
        from safealign.judges import get_judge

        judge = get_judge(args.judge)
        for m, r in results.items():
            verdicts[m] = [(v.safe, v.refusal) for v in judge.judge(r["prompts"], r["responses"])]
    print(f"model {args.model}, {len(ref['prompts'])} prompts x {args.new_tokens} new tokens (greedy), batch size "
          f"{args.batch_size}, device {inference_device()}; bf16 units: "
          f"{'yes, bf16 rows run' if bf16 else 'no, fp32 is the auto path here'}"
          + ("" if bf16 or not any(m.endswith("bf16") for m in methods) else " (bf16 rows asked for: emulated)"))
    print(f"{'method':<14} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'x naive':>8} {'peak RSS MB':>12} "
          f"{'same answer':>12} {'same verdict':>13} {'safe %':>7}")
    naive = results["naive-fp32"]["tokens_per_s"] if "naive-fp32" in results else float("nan")
    for m in methods:
        r = results[m]
        same = sum(a == b for a, b in zip(r["responses"], ref["responses"])) / len(ref["responses"])
        agree = (sum(a == b for a, b in zip(verdicts[m], verdicts["engine-fp32"])) / len(ref["responses"])
                 if verdicts else float("nan"))
        safe = sum(s for s, _ in verdicts[m]) / len(ref["responses"]) if verdicts else float("nan")
        print(f"{m:<14} {r['tokens']:>7} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} {r['tokens_per_s'] / naive:>7.1f}x "
              f"{r['peak_rss_mb']:>12.0f} {same:>11.0%} {agree:>12.0%} {safe:>6.0%}")
    if verdicts:
        from safealign.stats import mcnemar_p, paired_delta

        for m in methods:
            if m == "engine-fp32":
                continue
            pairs = [(a[0], b[0]) for a, b in zip(verdicts["engine-fp32"], verdicts[m])]
            a_only, b_only = sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)
            d, ci = paired_delta(a_only, b_only, len(pairs))
            print(f"safe % {m} - engine-fp32: {100 * d:+.1f} points [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] "
                  f"(paired, n={len(pairs)}; {a_only} safe only in fp32, {b_only} only in {m}; McNemar p "
                  f"{mcnemar_p(a_only, b_only):.2f})")
    for m in methods:  # a method on other threads against itself on torch's default: does the layout change answers?
        twin = m.rsplit("-", 1)[0]
        if THREADED.match(m).group(3) and twin in results:
            a, b = results[m]["responses"], results[twin]["responses"]
            print(f"{m} vs {twin}: {sum(x == y for x, y in zip(a, b))}/{len(a)} answers the same")
    diverge = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), None)
               for x, y in zip(ref["responses"], results.get("engine-bf16", ref)["responses"])]
    first = sorted(d for d in diverge if d is not None)
    if first:
        print(f"engine-bf16 answers that differ from engine-fp32: {len(first)}/{len(diverge)}; they part at character "
              f"{first[len(first) // 2]} (median; quartiles {first[len(first) // 4]}-{first[3 * len(first) // 4]})")
    best = "engine-bf16" if bf16 else "engine-fp32"
    if "naive-fp32" not in results or best not in results:
        return
    print(f"speed-up ({best} / naive-fp32 tokens/s): {results[best]['tokens_per_s'] / naive:.1f}x   (goal >= 20x); "
          f"continuous batching vs batched generate, same precision: "
          + ", ".join(f"{p} {results['engine-' + p]['tokens_per_s'] / results['generate-' + p]['tokens_per_s']:.2f}x"
                      for p in ("fp32", "bf16") if f"engine-{p}" in results and f"generate-{p}" in results))


if __name__ == "__main__":
    main()
