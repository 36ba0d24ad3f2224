"""SIT — safety instruction tuning: supervised fine-tuning on helpful instructions with n safety examples mixed in.

Supports: LoRA (merged on save, or kept as an adapter) or full fine-tuning; loss on the response only (default)
or on the whole sequence; any causal LM ``--model`` accepts (embedded SmolLM2, HF id, model dir, a previous run);
single process or ``accelerate launch`` (DDP, DeepSpeed, FSDP: ``configs/accelerate/``); resuming an
unfinished run from its last checkpoint.

Data (the paper mixed 20k Alpaca with n in {100, 300, 500, 1000, 1500, 2000} examples of Bianchi et al.'s
safety data): ``helpful_data`` (default ``alpaca-test:train``, the 752 items of ``alpaca_test.json`` that are
not held out for helpfulness evaluation) — its first ``helpful_limit`` items — plus ``n_safety`` items of
``safety_data`` (default ``bianchi-safety``) drawn at random with ``seed``, plus optionally ``contrast_data``
(e.g. ``safealign-contrast``: benign prompts that only sound harmful, answered), which counters the over-refusal
that safety data teaches. The exact selection is written to ``safealign.json`` (``data``).

Runs with:  ``safealign train sit --config configs/sit.yaml --out runs/sit [n_safety=500 ...]``
Used by RAFT: ``finetune(model, examples, out_dir, train, lora)`` fine-tunes on any Instruction list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.config import option, to_dict
from safealign.errors import SafealignError
from safealign.models import EMBEDDED_NAME
from safealign.recipes.common import (LoraConfig, TrainConfig, checkpoint_dir, finish_run, is_main_process,
                                      jsonl_log_callback, load_policy, log_event, records_fingerprint,
                                      score_labelled_tokens_only, start_run, trainable_in_fp32_unless_bf16,
                                      use_rich_progress)
from safealign.records import Instruction


@dataclass
class Config:
    model: str = option(EMBEDDED_NAME, "base model: embedded name, HF id, model dir (a previous run too)")
    helpful_data: str = option("alpaca-test:train", "helpful instructions: a dataset name or an Alpaca JSON / "
                                                    "{prompt, response} JSONL file ('' for none)")
    helpful_limit: int = option(0, "use the first N helpful examples (0: all)")
    safety_data: str = option("bianchi-safety", "safety instructions (unsafe request + safe answer): name or file")
    n_safety: int = option(300, "safety examples mixed in (the paper swept 100, 300, 500, 1000, 1500, 2000)")
    seed: int = option(0, "seed for drawing the safety examples")
    contrast_data: str = option("", "benign prompts that sound harmful, with answers (e.g. safealign-contrast), mixed "
                                    "in against over-refusal: name or file ('' for none)")
    n_contrast: int = option(0, "use the first N contrast examples (0: all)")
    template: str = option("auto", "prompt format: auto (chat template if any, else alpaca) | chat | alpaca | raw")
    completion_only_loss: bool = option(True, "loss on the response tokens only (False: on the whole sequence)")
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def select_data(cfg: Config) -> tuple[list[Instruction], dict[str, Any]]:
    """The training mix and a record of exactly which items it holds (for ``safealign.json``)."""
    from safealign.data import registry

    helpful: list[Instruction] = []
    selection: dict[str, Any] = {}
    if (cfg.helpful_data or "").strip():
        helpful = registry.load_instructions(cfg.helpful_data, cfg.helpful_limit or None)
        selection["helpful"] = {"source": cfg.helpful_data, "count": len(helpful), "items": f"first {len(helpful)}"}
        base, split = registry.split_name(cfg.helpful_data)
        if base == "alpaca-test" and (split or "train") == "train":
            first = registry.ALPACA_TEST_EVAL_SIZE
            selection["helpful"]["file_items"] = f"alpaca_test.json [{first}, {first + len(helpful)})"
            selection["helpful"]["held_out"] = f"alpaca_test.json [0, {first}) = alpaca-test:eval (helpfulness)"
    if cfg.n_safety < 0:
        raise SafealignError("must be >= 0", field="n_safety")
    safety: list[Instruction] = []
    if cfg.n_safety:
        pool = registry.load_instructions(cfg.safety_data)
        if cfg.n_safety > len(pool):
            raise SafealignError(f"asks for {cfg.n_safety} safety examples but {cfg.safety_data} has {len(pool)}",
                                 field="n_safety")
        indices = sorted(random.Random(cfg.seed).sample(range(len(pool)), cfg.n_safety))
        safety = [pool[i] for i in indices]
        selection["safety"] = {"source": cfg.safety_data, "count": len(safety), "seed": cfg.seed, "indices": indices}
    contrast: list[Instruction] = []
    if (cfg.contrast_data or "").strip():
        if cfg.n_contrast < 0:
            raise SafealignError("must be >= 0", field="n_contrast")
        contrast = registry.load_instructions(cfg.contrast_data, cfg.n_contrast or None)
        selection["contrast"] = {"source": cfg.contrast_data, "count": len(contrast), "items": f"first {len(contrast)}"}
    examples = helpful + safety + contrast
    if not examples:
        raise SafealignError("no training examples: helpful_data selects none and n_safety is 0", field="n_safety")
    return examples, selection


def describe(cfg: Config) -> dict[str, str]:
    """This stage as ``safealign run --dry-run`` shows it, with nothing loaded but the data files that are here."""
    from safealign.recipes.common import data_part, lora_train_summary, training_work

    parts = []
    if (cfg.helpful_data or "").strip():
        parts.append(data_part("helpful", cfg.helpful_data, "sft", cfg.helpful_limit))
    if cfg.n_safety:
        parts.append(data_part("safety", cfg.safety_data, "sft", cfg.n_safety))
    if (cfg.contrast_data or "").strip():
        parts.append(data_part("contrast", cfg.contrast_data, "sft", cfg.n_contrast))
    return {"model": cfg.model, "data": " + ".join(text for text, _, _ in parts) or "none",
            "settings": lora_train_summary(cfg.lora, cfg.train) + f"; template {cfg.template}",
            "work": training_work(cfg.train, [(n, c) for _, n, c in parts])}


def build_dataset(tokenizer: Any, examples: list[Instruction], template: str, max_length: int):
    """A prompt/completion ``datasets.Dataset`` (the prompt formatted as at generation time) and the counts of
    examples over ``max_length`` tokens: ``truncated`` (cut at the end) and ``dropped`` (the prompt alone fills it)."""
    from datasets import Dataset

    from safealign.models import format_prompt

    rows, truncated, dropped = [], 0, 0
    for ex in examples:
        prompt = format_prompt(tokenizer, ex.instruction, ex.input, template)
        n_prompt = len(tokenizer(prompt).input_ids)
        n_total = len(tokenizer(prompt + ex.output).input_ids) + 1  # + EOS, added by TRL
        dropped += n_prompt >= max_length
        truncated += n_prompt < max_length < n_total
        rows.append({"prompt": prompt, "completion": ex.output})
    if dropped == len(rows):
        raise SafealignError(f"every prompt is longer than train.max_length={max_length} tokens",
                             field="train.max_length")
    return Dataset.from_list(rows), {"examples": len(rows), "truncated": truncated, "dropped_prompt_too_long": dropped,
                                     "max_length": max_length}


def build_trainer(model: Any, tokenizer: Any, dataset: Any, train: TrainConfig, lora: LoraConfig, output_dir: Path,
                  completion_only_loss: bool = True, callbacks: list | None = None, **overrides: Any):
    """TRL's SFTTrainer with our settings (``overrides`` go to SFTConfig; the benchmark uses them)."""
    from trl import SFTConfig, SFTTrainer

    score_labelled_tokens_only()  # CPU: project only the response tokens through the LM head
    kw = {**train.trainer_kwargs(), **overrides}
    args = SFTConfig(output_dir=str(output_dir), max_length=train.max_length, completion_only_loss=completion_only_loss,
                     **kw)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora.peft_config(), callbacks=callbacks)
    trainable_in_fp32_unless_bf16(trainer)
    return trainer


def finetune(model: str, examples: list[Instruction], out_dir: Path, train: TrainConfig, lora: LoraConfig,
             template: str = "auto", *, overwrite: bool = False, completion_only_loss: bool = True,
             config: Any = None, meta: dict[str, Any] | None = None, callbacks: list | None = None,
             method: str = "sft") -> Path:
    """Supervised fine-tuning of ``model`` on ``examples`` (loss on the response only by default) into the model
    dir ``out_dir``, which is returned. A finished ``out_dir`` is refused unless ``overwrite``; an unfinished one
    (same model and examples) resumes from its last checkpoint. Call it on every process under accelerate."""
    if not examples:
        raise SafealignError("no training examples", field="data")
    if any(not ex.output.strip() for ex in examples):
        raise SafealignError("an example has an empty output", field="output")
    cfg_record = config if config is not None else {"model": model, "template": template, "examples": len(examples),
                                                    "completion_only_loss": completion_only_loss,
                                                    "lora": to_dict(lora), "train": to_dict(train)}
    out, resume = start_run(out_dir, overwrite, method=method, base_model=model, config=cfg_record,
                            fingerprint=records_fingerprint(examples), meta=meta)

    # 1. model and data (prompts formatted exactly as `safealign generate` formats them)
    policy, tok = load_policy(model, lora, train.gradient_checkpointing)
    dataset, counts = build_dataset(tok, examples, template, train.max_length)
    if is_main_process():
        log_event(out, event="data", **counts)

    # 2. train (TRL SFTTrainer; checkpoints under out/checkpoints for resuming)
    trainer = build_trainer(policy, tok, dataset, train, lora, checkpoint_dir(out), completion_only_loss,
                            callbacks=[jsonl_log_callback(out), *(callbacks or [])])
    use_rich_progress(trainer, method)
    trainer.train(resume_from_checkpoint=resume)

    # 3. save (merged / adapter / full), card, finished
    loss_on = "the response tokens only" if completion_only_loss else "the whole sequence"
    return finish_run(trainer, tok, out, lora, method=method, base_model=model,
                      summary=f"Supervised fine-tuning on {len(examples)} examples, loss on {loss_on}.",
                      details={"examples": len(examples), "truncated": counts["truncated"],
                               "lora": f"r={lora.r}" if lora.enabled else "off (full fine-tuning)",
                               "lr": train.lr, "batch": f"{train.batch_size} x {train.grad_accum}",
                               "max_length": train.max_length, "template": template})


def run(cfg: Config, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Safety instruction tuning as configured: select the mix, fine-tune, write the model dir."""
    examples, selection = select_data(cfg)
    return finetune(cfg.model, examples, Path(out_dir), cfg.train, cfg.lora, cfg.template, overwrite=overwrite,
                    completion_only_loss=cfg.completion_only_loss, config=cfg, meta={"data": selection},
                    method="sit")
