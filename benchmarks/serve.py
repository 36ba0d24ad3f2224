"""``safealign serve`` under load: a burst of concurrent requests vs one at a time, batching on and off, guard on and
off, side by side in one run.

    python benchmarks/serve.py [--model smollm2-135m-instruct] [--burst 64] [--max-tokens 32] [--guard guard]

Each server is a real ``safealign serve`` process on 127.0.0.1 (embedded model by default), driven by the official
``openai`` client over HTTP. Requests are the first prompts of the harm group and XSTest (harmful and benign, so the
guard has something to block), greedy, the same ``max_tokens`` (so that they may share a batch). Rows:
- ``one at a time``: ``--sequential`` requests, each sent when the previous one is answered;
- ``burst``: ``--burst`` requests sent at once (one thread each), timed from the first send to the last answer.
Servers: the guard off with ``--max-batch 1`` (no batching: the baseline), the guard off with the default batching,
and the guard judge (``--guard``, output mode) with the default batching. Columns: requests/s, p50/p95 latency per
request, errors (must be 0: the script fails otherwise), the guard's share of the latency (the judge's time reported
in each response's ``safealign.seconds.guard`` over the request's latency, mean), and how many answers the guard
blocked. The burst is bounded: each request times out after ``--timeout`` seconds (an error).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def load_prompts(n: int) -> list[str]:
    from safealign.data import registry

    names = registry.expand_benchmarks("harm,xstest")
    per = max(16, -(-n // (len(names) + 1)))
    recs = [r for name in names for r in registry.load_eval(name, limit=per)]
    prompts = [r.prompt for r in recs]
    return (prompts * (n // len(prompts) + 1))[:n]


class Server:
    """``safealign serve`` in a child process on a free port of 127.0.0.1."""

    def __init__(self, model: str, flags: list[str]):
        cmd = [sys.executable, "-m", "safealign", "serve", "--model", model, "--port", "0", "--no-access-log", *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        deadline = time.time() + 300
        while not any(" at http://" in line for line in self.lines):
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                raise RuntimeError("safealign serve did not start:\n" + "".join(self.lines))
            time.sleep(0.2)
        self.url = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", "".join(self.lines)).group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def one(client, model: str, prompt: str, max_tokens: int) -> dict:
    t = time.perf_counter()
    try:
        resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                              max_tokens=max_tokens)
    except Exception as e:  # noqa: BLE001 - counted, and the run fails
        return {"ok": False, "latency": time.perf_counter() - t, "error": f"{type(e).__name__}: {e}"[:200]}
    latency = time.perf_counter() - t
    ext = resp.model_extra.get("safealign", {})
    return {"ok": True, "latency": latency, "guard_s": ext.get("seconds", {}).get("guard", 0.0),
            "blocked": sum(v["blocked"] for v in ext.get("guard", [])), "tokens": resp.usage.completion_tokens}


def measure(client, model: str, prompts: list[str], max_tokens: int, concurrent: bool) -> dict:
    t = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
            results = list(pool.map(lambda p: one(client, model, p, max_tokens), prompts))
    else:
        results = [one(client, model, p, max_tokens) for p in prompts]
    seconds = time.perf_counter() - t
    ok = [r for r in results if r["ok"]]
    lat = sorted(r["latency"] for r in ok) or [float("nan")]
    return {"requests": len(results), "seconds": seconds, "rps": len(ok) / seconds,
            "p50": lat[len(lat) // 2], "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "errors": len(results) - len(ok), "error_texts": sorted({r["error"] for r in results if not r["ok"]}),
            "guard_share": statistics.mean(r["guard_s"] / r["latency"] for r in ok) if ok else float("nan"),
            "blocked": sum(r["blocked"] for r in ok), "tokens": sum(r["tokens"] for r in ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--burst", type=int, default=64, help="concurrent requests in the burst")
    ap.add_argument("--sequential", type=int, default=8, help="requests sent one at a time")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32, help="the batching servers' --max-batch")
    ap.add_argument("--guard", default="guard", help="the judge of the guarded server")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request before it counts as an error")
    args = ap.parse_args()
    import openai

    from safealign.models import inference_device, inference_precision, resolve_model

    resolve_model(args.model)  # convert once, outside the timings
    prompts = load_prompts(args.burst)
    model_id = args.model.rstrip("/")
    servers = [
        ("guard off, max-batch 1", ["--guard-mode", "off", "--max-batch", "1"], ["burst"]),
        (f"guard off, max-batch {args.max_batch}", ["--guard-mode", "off", "--max-batch", str(args.max_batch)],
         ["one at a time", "burst"]),
        (f"guard {args.guard} (output), max-batch {args.max_batch}",
         ["--guard", args.guard, "--guard-mode", "output", "--max-batch", str(args.max_batch)],
         ["one at a time", "burst"]),
    ]
    rows = []
    for name, flags, modes in servers:
        server = Server(args.model, [*flags, "--max-new-tokens", str(args.max_tokens)])
        try:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=args.timeout)
            one(client, model_id, "Hi", 4)  # warm-up, not timed
            for mode in modes:
                batch = prompts if mode == "burst" else prompts[:args.sequential]
                rows.append((name, mode, measure(client, model_id, batch, args.max_tokens, mode == "burst")))
        finally:
            server.stop()
    precision = inference_precision("auto", inference_device())
    print(f"model {args.model}, max_tokens {args.max_tokens} (greedy), burst of {args.burst} concurrent requests, "
          f"device {inference_device()} ({precision}), {os.cpu_count()} CPUs")
    print(f"{'server':<40} {'mode':<14} {'requests':>8} {'seconds':>8} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} "
          f"{'errors':>6} {'guard share':>11} {'blocked':>7}")
    for name, mode, r in rows:
        share = f"{r['guard_share']:.0%}" if "guard off" not in name else "-"
        print(f"{name:<40} {mode:<14} {r['requests']:>8} {r['seconds']:>8.1f} {r['rps']:>7.2f} {r['p50']:>7.2f} "
              f"{r['p95']:>7.2f} {r['errors']:>6} {share:>11} {r['blocked']:>7}")
    by = {(name, mode): r for name, mode, r in rows}
    base = by[(servers[0][0], "burst")]
    batched = by[(servers[1][0], "burst")]
    alone = by[(servers[1][0], "one at a time")]
    guarded, guarded_alone = by[(servers[2][0], "burst")], by[(servers[2][0], "one at a time")]
    print(f"batching: burst req/s {batched['rps'] / base['rps']:.1f}x with max-batch {args.max_batch} vs 1; "
          f"burst vs one at a time (same server): {batched['rps'] / alone['rps']:.1f}x req/s")
    print(f"guard: one at a time p50 {guarded_alone['p50']:.2f} s vs {alone['p50']:.2f} s without "
          f"({guarded_alone['guard_share']:.0%} of the latency in the judge); burst req/s "
          f"{guarded['rps'] / batched['rps']:.2f}x of the unguarded server's")
    errors = sum(r["errors"] for _, _, r in rows)
    if errors:
        for name, mode, r in rows:
            for text in r["error_texts"]:
                print(f"error ({name}, {mode}): {text}", file=sys.stderr)
        sys.exit(f"{errors} requests failed (must be 0)")


if __name__ == "__main__":
    main()
