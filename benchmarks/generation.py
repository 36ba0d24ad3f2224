"""Generation throughput: safealign's batched engine vs a naive loop, side by side in one run.

    python benchmarks/generation.py [--model smollm2-135m-instruct] [--prompts 64] [--new-tokens 64]

Both methods answer the same prompts (the first N of the harm group and XSTest, greedy, same max_new_tokens).
The naive loop calls ``model.generate`` once per prompt. Generated tokens are counted the same way for both
(re-tokenizing each response, +1 for the end-of-sequence token when it stopped early). Each method runs in
its own child process so its peak RSS is its own. Goal: engine ≥ 10× the naive loop's tokens/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def load_prompts(n: int) -> list[str]:
    from safealign.data import registry

    recs = [r for name in registry.expand_benchmarks("harm,xstest") for r in registry.load_eval(name, limit=16)]
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

    prompts = load_prompts(n)
    engine = HFEngine(model)
    params = GenParams(max_new_tokens=max_new, batch_size=batch_size)
    engine.generate(prompts[:2], GenParams(max_new_tokens=4))  # warm-up
    t = time.perf_counter()
    if method == "engine":
        responses = [r[0] for r in engine.generate(prompts, params)]
    else:
        tok, m = engine.tokenizer, engine.model
        responses = []
        for p in prompts:
            enc = tok(format_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = m.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
            responses.append(tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip())
    seconds = time.perf_counter() - t
    tokens = count_tokens(engine.tokenizer, responses, max_new)
    return {"method": method, "prompts": len(prompts), "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "responses": responses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--child", choices=["engine", "naive"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child, args.model, args.prompts, args.new_tokens, args.batch_size)))
        return
    from safealign.models import resolve_model

    resolve_model(args.model)  # convert once, outside the timings
    results = {}
    for method in ("engine", "naive"):
        cmd = [sys.executable, __file__, "--child", method, "--model", args.model, "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[method] = json.loads(out.strip().splitlines()[-1])
    same = sum(a == b for a, b in zip(results["engine"]["responses"], results["naive"]["responses"]))
    print(f"model {args.model}, {results['engine']['prompts']} prompts x {args.new_tokens} new tokens (greedy), "
          f"engine batch size {args.batch_size}")
    print(f"{'method':<8} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'peak RSS MB':>12}")
    for m in ("engine", "naive"):
        r = results[m]
        print(f"{m:<8} {r['tokens']:>7} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} {r['peak_rss_mb']:>12.0f}")
    ratio = results["engine"]["tokens_per_s"] / results["naive"]["tokens_per_s"]
    print(f"speed-up (engine / naive tokens/s): {ratio:.1f}x   (goal >= 10x)")
    print(f"identical greedy responses: {same}/{len(results['engine']['responses'])}")


if __name__ == "__main__":
    main()
