"""Seconds per optimizer step: each recipe's trainer vs a bare PyTorch loop, on the same batch, side by side.

    .venv/bin/python benchmarks/train_step.py                      # all methods, the embedded SmolLM2
    .venv/bin/python benchmarks/train_step.py --methods bare-dpo,dpo --steps 3 --threads 1
    .venv/bin/python benchmarks/train_step.py --isa avx2           # emulate a CPU without bf16 units (oneDNN)

What is compared (the same model, LoRA r=16 on all linear layers, fp32 weights, AdamW, one batch, the forward
in the precision ``--precision`` resolves to — ``auto``: bf16 autocast where the CPU/GPU has bf16 units):
- ``bare-sft``: model(input_ids, labels with the prompt masked) → loss.backward() → AdamW step.
- ``bare-dpo``: the DPO loss by hand: policy forward on chosen + rejected (one batch of 2B rows), reference
  forward (adapter off, no grad), -logsigmoid(β·margin), backward, AdamW step.
- ``sit`` / ``dpo``: the recipe's TRL trainer with the recipe's settings (``train.precision``, no gradient
  checkpointing; ``dpo`` computes the reference log-probs at each step, as ``bare-dpo`` does);
  ``dpo-precompute``: the same with reference log-probs precomputed (the step has no reference forward).
- ``*-trl-defaults``: the same trainer with TRL's own defaults (``bf16`` autocast on, gradient checkpointing on);
  ``dpo-bf16`` / ``dpo-checkpointing``: one of the two alone, to tell their costs apart.
A trainer step is the wall time between consecutive optimizer steps (data collation, forward, backward,
clipping, AdamW, scheduler): the dataset holds exactly one batch, so every step sees the same one.
Each method runs in its own process, so peak RSS is per method; the ratio is against the paired bare loop.

Times are wall seconds and process CPU seconds per step (medians). On a shared, loaded machine the CPU time
(with ``--threads 1``) is the steadier measure; ``--repeat`` runs the whole set again and keeps each method's
fastest median. To add a method: write ``def my_method(a) -> list[tuple[float, float]]`` ((wall, cpu) seconds of
each timed step, e.g. ``bare_loop(step, a)`` or ``trainer_times(trainer, a)``) and decorate it with
``@method("name", baseline="bare-sft")``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS: dict[str, tuple[Callable, str | None]] = {}


def method(name: str, baseline: str | None = None):
    def deco(fn: Callable) -> Callable:
        METHODS[name] = (fn, baseline)
        return fn
    return deco


# ---------------------------------------------------------------------------------------------- shared pieces

def load(a):
    from safealign.recipes.common import load_policy

    return load_policy(a.model)


def lora_cfg():
    from safealign.recipes.common import LoraConfig

    return LoraConfig(enabled=True, r=16, alpha=32, dropout=0.0, target_modules="all-linear", merge=True)


def train_cfg(a):
    from safealign.recipes.common import TrainConfig

    return TrainConfig(lr=1e-5, batch_size=a.batch_size, max_length=a.max_length, max_steps=a.warmup + a.steps,
                       logging_steps=1000, save_steps=0, max_grad_norm=0.0, precision=a.precision)


def autocast(a):
    """The bare loops' forward runs in the precision the recipe's trainer resolves ``--precision`` to."""
    import torch

    from safealign.recipes.common import resolve_precision

    bf16, fp16 = resolve_precision(a.precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16 if bf16 else torch.float16, enabled=bf16 or fp16)


def sft_examples(a):
    from safealign.data import registry

    half = a.batch_size // 2
    return (registry.load_instructions("alpaca-test:train", a.batch_size - half)
            + registry.load_instructions("bianchi-safety", half))


def dpo_pairs(a):
    from safealign.data import registry

    return registry.load_preferences("pku-safe-pairs:train", a.batch_size)


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def deltas(stamps: list[tuple[float, float]], skip: int) -> list[tuple[float, float]]:
    """(wall, cpu) seconds between consecutive stamps, the first ``skip`` dropped."""
    return [(b[0] - a_[0], b[1] - a_[1]) for a_, b in zip(stamps, stamps[1:])][skip:]


def bare_loop(step: Callable[[], None], a) -> list[tuple[float, float]]:
    stamps = [now()]
    for _ in range(a.warmup + a.steps):
        step()
        stamps.append(now())
    return deltas(stamps, a.warmup)


def trainer_times(trainer, a) -> list[tuple[float, float]]:
    """Run ``trainer.train()``; (wall, cpu) seconds between consecutive optimizer steps, after warmup."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    stamps: list[tuple[float, float]] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            stamps.append(now())

        def on_step_end(self, *args, **kw):
            stamps.append(now())

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Stamp())
    trainer.train()
    return deltas(stamps, a.warmup)


def right_pad(seqs: list[list[int]], pad: int):
    import torch

    n = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    return ids, mask


def encode(tok, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + EOS (as TRL builds them) and the prompt length, truncated at the end."""
    p = tok(prompt).input_ids
    full = tok(prompt + completion).input_ids + [tok.eos_token_id]
    return full[:max_length], min(len(p), max_length)


# ---------------------------------------------------------------------------------------------- SFT

@method("bare-sft")
def bare_sft(a) -> list[tuple[float, float]]:
    import torch
    from peft import get_peft_model

    from safealign.models import format_prompt

    model, tok = load(a)
    model = get_peft_model(model, lora_cfg().peft_config())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    enc = [encode(tok, format_prompt(tok, e.instruction, e.input), e.output, a.max_length) for e in sft_examples(a)]
    ids, mask = right_pad([s for s, _ in enc], tok.pad_token_id)
    labels = ids.masked_fill(mask == 0, -100)
    for row, (_, n_prompt) in enumerate(enc):
        labels[row, :n_prompt] = -100

    def step():
        with autocast(a):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return bare_loop(step, a)


def _sit_trainer(a, **overrides):
    from safealign.recipes import sit

    model, tok = load(a)
    dataset, _ = sit.build_dataset(tok, sft_examples(a), "auto", a.max_length)
    t = train_cfg(a)
    return sit.build_trainer(model, tok, dataset, t, lora_cfg(), a.tmp, **overrides)


@method("sit", baseline="bare-sft")
def sit_recipe(a) -> list[tuple[float, float]]:
    return trainer_times(_sit_trainer(a), a)


def trl_defaults() -> dict:
    """TRL's own defaults (bf16 autocast, gradient checkpointing); transformers 5 wants use_cpu for CPU bf16."""
    import torch

    return {"bf16": True, "gradient_checkpointing": True, **({} if torch.cuda.is_available() else {"use_cpu": True})}


@method("sit-trl-defaults", baseline="bare-sft")
def sit_trl_defaults(a) -> list[tuple[float, float]]:
    return trainer_times(_sit_trainer(a, **trl_defaults()), a)


# ---------------------------------------------------------------------------------------------- DPO

@method("bare-dpo")
def bare_dpo(a) -> list[tuple[float, float]]:
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model

    from safealign.models import format_prompt

    model, tok = load(a)
    model = get_peft_model(model, lora_cfg().peft_config())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pairs = dpo_pairs(a)
    enc = []
    for side in ("chosen", "rejected"):  # rows [chosen..., rejected...], as TRL batches them
        enc += [encode(tok, format_prompt(tok, p.prompt), getattr(p, side), a.max_length) for p in pairs]
    ids, mask = right_pad([s for s, _ in enc], tok.pad_token_id)
    completion = mask.clone()
    for row, (_, n_prompt) in enumerate(enc):
        completion[row, :n_prompt] = 0
    targets, target_mask = ids[:, 1:], completion[:, 1:].float()

    def seq_logps(logits):
        logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (logps * target_mask).sum(-1)

    def step():
        with autocast(a):
            policy = seq_logps(model(input_ids=ids, attention_mask=mask).logits)
            with torch.no_grad(), model.disable_adapter():
                ref = seq_logps(model(input_ids=ids, attention_mask=mask).logits)
        pc, pr = policy.chunk(2)
        rc, rr = ref.chunk(2)
        loss = -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return bare_loop(step, a)


def _dpo_trainer(a, precompute: bool, **overrides):
    from datasets import Dataset

    from safealign.recipes import dpo

    model, tok = load(a)
    rows, _ = dpo.build_rows(tok, dpo_pairs(a), "auto", a.max_length)
    cfg = dpo.Config(model=a.model, beta=0.1, lora=lora_cfg(), train=train_cfg(a))
    return dpo.build_trainer(model, tok, Dataset.from_list(rows), cfg, a.tmp, precompute, **overrides)


@method("dpo", baseline="bare-dpo")
def dpo_recipe(a) -> list[tuple[float, float]]:
    return trainer_times(_dpo_trainer(a, precompute=False), a)


@method("dpo-precompute", baseline="bare-dpo")
def dpo_precompute(a) -> list[tuple[float, float]]:
    return trainer_times(_dpo_trainer(a, precompute=True), a)


@method("dpo-trl-defaults", baseline="bare-dpo")
def dpo_trl_defaults(a) -> list[tuple[float, float]]:
    return trainer_times(_dpo_trainer(a, precompute=False, **trl_defaults()), a)


@method("dpo-bf16", baseline="bare-dpo")
def dpo_bf16_only(a) -> list[tuple[float, float]]:
    """TRL's bf16 autocast default alone (the cause on CPUs without bf16 units)."""
    return trainer_times(_dpo_trainer(a, precompute=False, **{**trl_defaults(), "gradient_checkpointing": False}), a)


@method("dpo-checkpointing", baseline="bare-dpo")
def dpo_checkpointing_only(a) -> list[tuple[float, float]]:
    """TRL's gradient-checkpointing default alone (an extra forward per step)."""
    return trainer_times(_dpo_trainer(a, precompute=False, gradient_checkpointing=True), a)


# ---------------------------------------------------------------------------------------------- driver

def child(a) -> None:
    import tempfile
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if a.threads:
        torch.set_num_threads(a.threads)
    a.tmp = tempfile.mkdtemp(prefix="train-step-")
    fn, _ = METHODS[a.only]
    times = fn(a)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"method": a.only, "times": times, "rss_mb": rss_mb,
                                  "threads": torch.get_num_threads()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--batch-size", type=int, default=4, help="examples (SFT) or pairs (DPO) per step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=4, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    p.add_argument("--precision", default="auto", help="recipe precision (auto | fp32 | bf16), bare loops alike; "
                                                      "the *-trl-defaults methods always use TRL's bf16")
    p.add_argument("--repeat", type=int, default=1, help="run the whole set N times, keep each method's best")
    p.add_argument("--isa", default="", help="cap oneDNN's ISA, e.g. avx2 to emulate a CPU without bf16 units")
    p.add_argument("--only", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:
        return child(a)

    names = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    env = dict(os.environ)
    if a.isa:
        env["ONEDNN_MAX_CPU_ISA"] = a.isa.upper()
    results: dict[str, dict] = {}
    load0 = os.getloadavg()[0]
    for rep in range(a.repeat):
        for name in names:
            cmd = [sys.executable, __file__, "--only", name, "--model", a.model, "--batch-size", str(a.batch_size),
                   "--max-length", str(a.max_length), "--steps", str(a.steps), "--warmup", str(a.warmup),
                   "--threads", str(a.threads), "--precision", a.precision]
            t = time.time()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"  {name}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
                continue
            r = json.loads(line[len("RESULT "):])
            r["wall"] = statistics.median(w for w, _ in r["times"])
            r["cpu"] = statistics.median(c for _, c in r["times"])
            print(f"  [{rep + 1}/{a.repeat}] {name}: {r['wall']:.2f} s/step wall, {r['cpu']:.2f} s cpu "
                  f"({time.time() - t:.0f} s in all)", flush=True)
            best = results.get(name)
            results[name] = r if best is None else {**best, "wall": min(best["wall"], r["wall"]),
                                                    "cpu": min(best["cpu"], r["cpu"]),
                                                    "rss_mb": max(best["rss_mb"], r["rss_mb"])}

    resolved = subprocess.run([sys.executable, "-c", "from safealign.recipes.common import resolve_precision as r; "
                               f"b, h = r({a.precision!r}); print('bf16' if b else 'fp16' if h else 'fp32')"],
                              env=env, capture_output=True, text=True).stdout.strip()
    print(f"\ntrain step on {a.model}: batch {a.batch_size}, max_length {a.max_length}, LoRA r=16, precision "
          f"{a.precision} = {resolved}, {a.steps} timed steps after {a.warmup} warmup, best of {a.repeat}; "
          f"torch threads {a.threads or 'default'}"
          f"{'; oneDNN ISA ' + a.isa.upper() if a.isa else ''}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'method':<18} {'wall s/step':>11} {'cpu s/step':>10} {'vs':>9} {'wall ratio':>10} {'cpu ratio':>9} "
          f"{'peak RSS':>9}")
    for name, r in results.items():
        base = results.get(METHODS[name][1] or "")
        wr = f"{r['wall'] / base['wall']:.2f}x" if base else "-"
        cr = f"{r['cpu'] / base['cpu']:.2f}x" if base else "-"
        print(f"{name:<18} {r['wall']:>11.2f} {r['cpu']:>10.2f} {METHODS[name][1] or '-':>9} {wr:>10} {cr:>9} "
              f"{r['rss_mb']:>7.0f}MB")


if __name__ == "__main__":
    main()
