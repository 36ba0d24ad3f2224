"""Reward model: a Bradley-Terry reward model trained on preference pairs with TRL's ``RewardTrainer``.

Supports: any backbone that loads with a 1-output sequence-classification head (the embedded SmolLM2 by
default — its head is new and trained here —, a Hugging Face id, a model dir); LoRA (the head is trained in
full) or full fine-tuning; single process or ``accelerate launch``; resuming an unfinished run from its last
checkpoint. Pairs whose chosen equals rejected are dropped (counted in ``log.jsonl``); pairs over
``train.max_length`` tokens are truncated (counted), not dropped.

Runs with:  ``safealign train rm --config configs/rm.yaml --out runs/rm``
Evaluates:  ``safealign rm eval --model runs/rm`` (``evaluate`` below): pairwise accuracy — the share of pairs
whose chosen response scores above the rejected one — on ``pku-safe-pairs:test`` and ``hh-harmless``, as the
paper measured its reward models.
Use:        ``rm:runs/rm`` as a judge, a RAFT ranker or a helpfulness reward (``safealign.judges.reward_model``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.config import option
from safealign.errors import SafealignError
from safealign.models import EMBEDDED_NAME
from safealign.recipes.common import (LoraConfig, TrainConfig, is_main_process, jsonl_log_callback, load_policy,
                                      log_event, write_card, write_meta)
from safealign.records import Preference

DEFAULT_EVAL = ["pku-safe-pairs:test", "hh-harmless"]


@dataclass
class Config:
    model: str = option(EMBEDDED_NAME, "backbone: embedded name, HF id or model dir (gets a 1-output score head)")
    data: str = option("pku-safe-pairs:train", "preference pairs: a dataset name or a JSONL {prompt, chosen, rejected}")
    limit: int | None = option(300, "use the first N pairs (null: all)")
    template: str = option("auto", "prompt format: auto (chat template if any, else alpaca) | chat | alpaca | raw")
    center_rewards: float = option(0.01, "center_rewards_coefficient: keeps rewards near 0 so rm:<dir> can cut at 0")
    eval_datasets: list[str] = option(["pku-safe-pairs:test"], "scored after training (accuracy in safealign.json)")
    eval_limit: int = option(100, "pairs per eval dataset after training (0: skip)")
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def describe(cfg: Config) -> dict[str, str]:
    """This stage as ``safealign run --dry-run`` shows it, with nothing loaded but the data files that are here."""
    from safealign.recipes.common import data_part, lora_train_summary, training_work

    text, n, chars = data_part("pairs", cfg.data, "preference", cfg.limit or 0)
    evals = ", ".join(f"{cfg.eval_limit} of {d}" for d in cfg.eval_datasets) if cfg.eval_limit else "none"
    return {"model": f"{cfg.model} (+ a 1-output score head)", "data": text,
            "settings": lora_train_summary(cfg.lora, cfg.train) + f"; accuracy after training on: {evals}",
            "work": training_work(cfg.train, [(n, chars)], sequences=2, unit="pairs") + " (chosen + rejected)"}


def load_pairs(name: str, limit: int | None) -> tuple[list[Preference], int]:
    """Preference pairs with the unusable ones (chosen equals rejected, or either empty) dropped, and their count."""
    from safealign.data import registry

    pairs = registry.load_preferences(name, limit)
    kept = [p for p in pairs if p.chosen.strip() and p.rejected.strip() and p.chosen.strip() != p.rejected.strip()]
    if not kept:
        raise SafealignError(f"no usable preference pairs ({len(pairs)} read; chosen must differ from rejected)",
                             file=name, field="data")
    return kept, len(pairs) - len(kept)


def tokenize_pairs(tokenizer: Any, pairs: list[Preference], max_length: int, template: str) -> tuple[list[dict], int]:
    """Rows ``{chosen_ids, rejected_ids}`` for RewardTrainer (encoded as the ``rm:`` judge scores), and the
    number of pairs that had to be truncated."""
    from safealign.judges.reward_model import encode

    rows, truncated = [], 0
    for p in pairs:
        c, cut_c = encode(tokenizer, p.prompt, p.chosen, max_length, template)
        r, cut_r = encode(tokenizer, p.prompt, p.rejected, max_length, template)
        truncated += cut_c or cut_r
        rows.append({"chosen_ids": c, "rejected_ids": r})
    return rows, truncated


def _save_weights(staging: Path, out: Path, tokenizer: Any, cfg: Config) -> str:
    """What ``trainer.save_model`` wrote → ``out``: merged weights, the adapter (+ score head), or full weights."""
    from safealign import models

    if (staging / "adapter_config.json").exists():
        if cfg.lora.merge:
            from peft import PeftModel

            base, _ = models.load_sequence_classifier(cfg.model, num_labels=1, quantize="none")
            merged = PeftModel.from_pretrained(base, str(staging)).merge_and_unload()
            merged.save_pretrained(out, safe_serialization=True)
            kind = "merged"
        else:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                (staging / name).replace(out / name)
            kind = "adapter"
    else:
        for f in staging.iterdir():
            if f.name == "config.json" or f.suffix == ".safetensors" or f.name.endswith(".safetensors.index.json"):
                f.replace(out / f.name)
        kind = "full"
    tokenizer.save_pretrained(out)
    return kind


def run(cfg: Config, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Train a reward model into ``out_dir`` (the model dir contract of ``recipes.common``)."""
    import math

    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from safealign import models
    from safealign.progress import log
    from safealign.recipes.common import (checkpoint_dir, records_fingerprint, start_run, trainable_in_fp32_unless_bf16,
                                          use_rich_progress)

    start = time.time()
    max_length = cfg.train.max_length

    # 1. data: drop identical pairs, truncate long ones (both counted)
    pairs, dropped = load_pairs(cfg.data, cfg.limit)
    out, resume = start_run(out_dir, overwrite, method="rm", base_model=cfg.model, config=cfg,
                            fingerprint=records_fingerprint(pairs),
                            meta={"template": cfg.template, "max_length": max_length})
    set_seed(cfg.train.seed)
    tokenizer = models.load_tokenizer(cfg.model, padding_side="right")
    rows, truncated = tokenize_pairs(tokenizer, pairs, max_length, cfg.template)
    main = is_main_process()
    if main:
        log(f"rm: {len(rows)} pairs from {cfg.data} ({dropped} dropped: chosen = rejected or empty; "
            f"{truncated} truncated to {max_length} tokens)")
        log_event(out, event="data", source=cfg.data, pairs=len(rows), dropped_identical_or_empty=dropped,
                  truncated=truncated, max_length=max_length)

    # 2. model: the backbone with a 1-output score head (new for a causal LM, trained in full under LoRA)
    # (QLoRA: the backbone quantized on the training device, made ready for k-bit training)
    model, _ = load_policy(cfg.model, cfg.lora, cfg.train.gradient_checkpointing, num_labels=1)

    # 3. train (TRL RewardTrainer; the data is already tokenized, so TRL neither re-tokenizes nor filters it)
    args = RewardConfig(output_dir=str(checkpoint_dir(out)), max_length=None,
                        center_rewards_coefficient=cfg.center_rewards or None, **cfg.train.trainer_kwargs())
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            peft_config=cfg.lora.peft_config("SEQ_CLS"), callbacks=[jsonl_log_callback(out)])
    trainable_in_fp32_unless_bf16(trainer)
    use_rich_progress(trainer, "rm")
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] + [result.training_loss]
    if not all(math.isfinite(x) for x in losses):
        raise SafealignError(f"training diverged (loss {losses[-1]}); lower train.lr or check the data",
                             file=str(out), field="train.lr")

    # 4. save (merged / adapter / full), check that it reloads and ranks pairs, card, finished
    staging = out / ".staging"
    trainer.save_model(str(staging))  # every process (gathers sharded weights); the main one writes
    trainer.accelerator.wait_for_everyone()
    if main:
        kind = _save_weights(staging, out, tokenizer, cfg)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
        accuracy = {}
        if cfg.eval_limit and cfg.eval_datasets:
            accuracy = evaluate(str(out), cfg.eval_datasets, cfg.eval_limit)
            for name, r in accuracy.items():
                log(f"rm: pairwise accuracy on {name}: {r['accuracy']:.3f} "
                    f"(n={r['n']}, 95% CI {r['ci'][0]:.3f}-{r['ci'][1]:.3f})")
        final = {"weights": kind, "steps": trainer.state.global_step, "final_loss": losses[-2] if len(losses) > 1 else None,
                 "quantize": cfg.lora.quantize if kind == "adapter" else "none", "trained_quantized": cfg.lora.quantize,
                 "train_loss": result.training_loss,
                 "seconds": round(time.time() - start, 1), "pairs": len(rows), "eval": accuracy}
        log_event(out, event="finished", **final)
        write_card(out, "rm", cfg.model, "A Bradley-Terry reward model: one scalar per (prompt, response), higher = "
                   f"better/safer. Use it as a judge, RAFT ranker or helpfulness reward with `rm:{out}`.",
                   {"data": f"{cfg.data} ({len(rows)} pairs, {dropped} dropped, {truncated} truncated)",
                    "lora": f"r={cfg.lora.r}" if cfg.lora.enabled else "off (full fine-tuning)", "lr": cfg.train.lr,
                    "batch": f"{cfg.train.batch_size} x {cfg.train.grad_accum}", "max_length": max_length,
                    "weights": kind, "steps": final["steps"], "mean train loss": f"{result.training_loss:.4f}",
                    **{f"accuracy {k}": f"{v['accuracy']:.3f} (n={v['n']})" for k, v in accuracy.items()}})
        write_meta(out, finished=True, **final)
    trainer.accelerator.wait_for_everyone()
    return out


def evaluate_judge(judge: Any, datasets: list[str], limit: int | None = None, chunk: int = 32) -> dict[str, dict[str, Any]]:
    """Pairwise accuracy of a loaded ``RewardModelJudge``: chosen scored strictly above rejected (ties count as wrong)."""
    from safealign.data import registry
    from safealign.stats import wilson
    from safealign.progress import progress_bar

    loaded = {name: registry.load_preferences(name, limit) for name in datasets}
    for name, pairs in loaded.items():
        if not pairs:
            raise SafealignError("no preference pairs", file=name, field="datasets")
    results: dict[str, dict[str, Any]] = {}
    with progress_bar() as bar:
        for name, pairs in loaded.items():
            task = bar.add_task(f"scoring pairs of {name}", total=len(pairs))
            k = 0
            for i in range(0, len(pairs), chunk):
                part = pairs[i:i + chunk]
                prompts = [p.prompt for p in part]
                chosen = judge.scores(prompts, [p.chosen for p in part])
                rejected = judge.scores(prompts, [p.rejected for p in part])
                k += sum(c > r for c, r in zip(chosen, rejected))
                bar.advance(task, len(part))
            lo, hi = wilson(k, len(pairs))
            results[name] = {"n": len(pairs), "accuracy": k / len(pairs), "ci": [lo, hi]}
    return results


def evaluate(model: str, datasets: list[str] = DEFAULT_EVAL, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Pairwise accuracy of reward model ``model`` → ``{dataset: {"n", "accuracy", "ci": [lo, hi]}}`` (Wilson 95%)."""
    from safealign.judges.reward_model import RewardModelJudge

    return evaluate_judge(RewardModelJudge(model), list(datasets), limit)
