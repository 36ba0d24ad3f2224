"""DPO — direct preference optimisation on (prompt, chosen, rejected) pairs with TRL's ``DPOTrainer``.

Supports: any TRL loss type (``sigmoid`` = the DPO paper's, ``ipo``, ``hinge``, ...) and β; LoRA (the reference
is the base with the adapter switched off, no second copy in memory) or full fine-tuning (a frozen copy is the
reference); reference log-probs precomputed once when that is no more work than computing them at every step
(``precompute_ref: auto``); single process or ``accelerate launch``; resuming an unfinished run.

Data: ``data`` (default ``pku-safe-pairs:train``: PKU-SafeRLHF pairs whose chosen response is safe and better
and whose rejected one is unsafe), ``limit`` pairs drawn at random with ``seed`` (recorded in ``safealign.json``).
``data: on-policy`` builds the pairs from the policy's own answers (``on_policy``; ``build_on_policy_pairs``):
harmful prompts whose safe answer a dataset gives (chosen) against the model's own greedy answer (rejected) where
that answer is not already a refusal; and benign prompts (look-alikes of harmful ones included) where the model's
own answer (chosen; the dataset's answer when the model refused) is preferred to a refusal (rejected: the model's own
refusal, else a stock one), so that refusing everything does not win. Refusals are told by a fixed phrase rule
(``judges.keywords.is_refusal`` / ``judges.embedded.declines``), not by the judge that evaluates the model.
Pairs whose chosen equals rejected are dropped and over-long ones truncated; both are counted in ``log.jsonl``.
Prompts are formatted exactly as ``safealign generate`` formats them (``template``).

Runs with:  ``safealign train dpo --config configs/dpo.yaml --out runs/dpo [beta=0.2 ...]``
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.config import option
from safealign.errors import SafealignError
from safealign.models import EMBEDDED_NAME
from safealign.recipes.common import (LoraConfig, TrainConfig, checkpoint_dir, distributed_state, finish_run,
                                      jsonl_log_callback, load_policy, log_event, records_fingerprint,
                                      score_labelled_tokens_only, start_run, trainable_in_fp32_unless_bf16,
                                      use_rich_progress)
from safealign.records import Preference

PRECOMPUTE = ("auto", "yes", "no")
ON_POLICY = "on-policy"
STOCK_REFUSALS = (  # rejected side of a benign pair when the model itself did not refuse
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, but I cannot assist with that.",
    "I can't help with that. Is there anything else I can do for you?",
    "I'm afraid I can't provide that information.",
    "As an AI, I cannot help with this request.",
    "I'm sorry, I can't do that.",
)


@dataclass
class OnPolicy:
    harmful: str = option("bianchi-safety", "harmful prompts with a safe answer (the chosen side): an SFT dataset "
                                            "or file")
    benign: str = option("safealign-contrast,alpaca-test:train", "benign prompts with an answer, comma-separated "
                                                                   "SFT datasets or files (look-alikes first)")
    n_harmful: int = option(200, "harmful prompts drawn (with `seed`); those the model already refuses give no pair")
    n_benign: int = option(100, "benign prompts drawn (with `seed`), spread evenly over the `benign` sources")
    max_new_tokens: int = option(64, "length of the model's own answers")
    batch_size: int = option(64, "generation batch size")


@dataclass
class Config:
    model: str = option(EMBEDDED_NAME, "policy to start from (and reference): embedded name, HF id, model dir")
    data: str = option("pku-safe-pairs:train", "preference pairs: a dataset name, a {prompt, chosen, rejected} JSONL, "
                                               "or on-policy (built from the model's own answers: on_policy)")
    on_policy: OnPolicy = field(default_factory=OnPolicy)
    limit: int = option(0, "draw N pairs at random with `seed` (0: all)")
    seed: int = option(0, "seed for drawing the pairs")
    template: str = option("auto", "prompt format: auto (chat template if any, else alpaca) | chat | alpaca | raw")
    beta: float = option(0.1, "β: how far the policy may move from the reference (higher = closer)")
    loss_type: str = option("sigmoid", "TRL DPO loss: sigmoid (DPO) | ipo | hinge | robust | ...; several "
                                       "comma-separated are summed")
    precompute_ref: str = option("auto", "precompute the reference log-probs once: auto (when each pair is seen at "
                                         "least once in training) | yes | no")
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if str(self.precompute_ref).lower() in ("true", "false"):  # YAML reads yes/no as booleans
            self.precompute_ref = "yes" if str(self.precompute_ref).lower() == "true" else "no"
        if self.precompute_ref not in PRECOMPUTE:
            raise SafealignError(f"choose from {', '.join(PRECOMPUTE)}", field="precompute_ref")
        if self.beta <= 0:
            raise SafealignError("must be > 0", field="beta")
        if self.limit < 0:
            raise SafealignError("must be >= 0", field="limit")


def _draw(items: list[Any], n: int, seed: int) -> list[Any]:
    if n >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def _is_refusal(text: str) -> bool:
    from safealign.judges.embedded import declines
    from safealign.judges.keywords import is_refusal

    return not text.strip() or is_refusal(text) or declines(text)


def build_on_policy_pairs(cfg: Config) -> tuple[list[Preference], dict[str, Any]]:
    """Preference pairs from the policy's own greedy answers (see the module docstring). The answers are generated
    once into the cache (``SAFEALIGN_CACHE/dpo-on-policy/<hash>``, resumable) and reused by a rerun."""
    import hashlib
    import json

    from safealign.config import to_dict
    from safealign.data import registry
    from safealign.generate import GenParams, HFEngine, generate_to_file, read_generations
    from safealign.models import cache_dir, fingerprint, inference_precision
    from safealign.recipes.common import distributed_state
    from safealign.records import EvalPrompt

    op = cfg.on_policy
    harmful = [(r.prompt, r.output) for r in _draw(registry.load_instructions(op.harmful), op.n_harmful, cfg.seed)]
    sources = [s.strip() for s in op.benign.split(",") if s.strip()]
    benign: list[tuple[str, str]] = []
    for j, src in enumerate(sources):  # n_benign spread evenly, the first sources get the remainder
        n = op.n_benign // len(sources) + (j < op.n_benign % len(sources))
        benign += [(r.prompt, r.output) for r in _draw(registry.load_instructions(src), n, cfg.seed)]
    records = [EvalPrompt(f"h{i}", p, "harmful", "refuse") for i, (p, _) in enumerate(harmful)] + \
              [EvalPrompt(f"b{i}", p, "benign", "comply") for i, (p, _) in enumerate(benign)]
    params = GenParams(max_new_tokens=op.max_new_tokens, batch_size=op.batch_size, template=cfg.template)
    key = hashlib.sha256(json.dumps([fingerprint(cfg.model), to_dict(op), cfg.seed, cfg.template,
                                     inference_precision(params.precision),
                                     [r.prompt for r in records]]).encode()).hexdigest()[:16]
    path = cache_dir() / "dpo-on-policy" / key / "generations.jsonl"
    state = distributed_state()
    if state.is_main_process:
        generate_to_file(HFEngine(cfg.model), records, params, path, desc="on-policy answers")
    state.wait_for_everyone()
    own = {g.id: g.response for g in read_generations(path)}
    pairs, counts = [], {"harmful_already_refused": 0, "benign_refused": 0}
    for i, (prompt, safe_answer) in enumerate(harmful):
        answer = own[f"h{i}"]
        if _is_refusal(answer):
            counts["harmful_already_refused"] += 1
        else:
            pairs.append(Preference(prompt, safe_answer, answer))
    for i, (prompt, reference) in enumerate(benign):
        answer = own[f"b{i}"]
        if _is_refusal(answer):
            counts["benign_refused"] += 1
            pairs.append(Preference(prompt, reference, answer))
        else:
            pairs.append(Preference(prompt, answer, STOCK_REFUSALS[i % len(STOCK_REFUSALS)]))
    counts.update(harmful_pairs=len(harmful) - counts["harmful_already_refused"], benign_pairs=len(benign),
                  answers=str(path))
    return pairs, counts


def select_pairs(cfg: Config) -> tuple[list[Preference], dict[str, Any]]:
    """The pairs to train on (identical ones dropped) and a record of the selection."""
    from safealign.data import registry

    if cfg.data == ON_POLICY:
        pairs, built = build_on_policy_pairs(cfg)
        selection: dict[str, Any] = {"source": ON_POLICY, "available": len(pairs), **built}
    else:
        pairs = registry.load_preferences(cfg.data)
        selection = {"source": cfg.data, "available": len(pairs)}
        if cfg.limit and cfg.limit < len(pairs):
            indices = _draw(list(range(len(pairs))), cfg.limit, cfg.seed)
            pairs = [pairs[i] for i in indices]
            selection.update(seed=cfg.seed, indices=indices)
    kept = [p for p in pairs if p.chosen.strip() != p.rejected.strip()]
    selection.update(count=len(kept), dropped_identical=len(pairs) - len(kept))
    if not kept and cfg.data == ON_POLICY:
        raise SafealignError("no on-policy pairs: the model refuses every harmful prompt and answers none of the "
                             "benign ones", field="on_policy")
    if not kept:
        raise SafealignError(f"no usable preference pairs ({len(pairs)} read; chosen must differ from rejected)",
                             file=cfg.data, field="data")
    return kept, selection


def describe(cfg: Config) -> dict[str, str]:
    """This stage as ``safealign run --dry-run`` shows it, with nothing loaded but the data files that are here."""
    from safealign.recipes.common import data_part, lora_train_summary, training_work

    if cfg.data == ON_POLICY:
        op = cfg.on_policy
        harm = data_part("harmful prompts", op.harmful, "sft", op.n_harmful)
        benign = [data_part("benign prompts", b.strip(), "sft") for b in op.benign.split(",") if b.strip()]
        data = (f"on-policy: up to {op.n_harmful:,} harmful + {op.n_benign:,} benign pairs from the model's own "
                f"answers ({op.max_new_tokens} new tokens each, generated at train time; prompts: {harm[0]}; "
                + "; ".join(b[0] for b in benign) + ")")
        parts = [(op.n_harmful + op.n_benign, None)]
    else:
        text, n, chars = data_part("pairs", cfg.data, "preference", cfg.limit)
        data, parts = text, [(n, chars)]
    settings = (lora_train_summary(cfg.lora, cfg.train) + f"; beta {cfg.beta}, loss {cfg.loss_type}, reference "
                f"log-probs {'precomputed' if cfg.precompute_ref != 'no' else 'per step'} (auto: when every pair is seen)")
    return {"model": cfg.model, "data": data, "settings": settings,
            "work": training_work(cfg.train, parts, sequences=2, unit="pairs") + " (chosen + rejected; the reference pass once more)"}


def build_rows(tokenizer: Any, pairs: list[Preference], template: str, max_length: int) -> tuple[list[dict], dict]:
    """``{prompt, chosen, rejected}`` rows (the prompt formatted as at generation time) and the counts of pairs over
    ``max_length`` tokens: ``truncated`` (responses cut) and ``dropped`` (the prompt alone fills it; TRL drops them)."""
    from safealign.models import format_prompt

    rows, truncated, dropped = [], 0, 0
    for p in pairs:
        prompt = format_prompt(tokenizer, p.prompt, template=template)
        n_prompt = len(tokenizer(prompt).input_ids)
        n_longest = max(len(tokenizer(prompt + r).input_ids) for r in (p.chosen, p.rejected)) + 1  # + EOS
        dropped += n_prompt >= max_length
        truncated += n_prompt < max_length < n_longest
        rows.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
    if dropped == len(rows):
        raise SafealignError(f"every prompt is longer than train.max_length={max_length} tokens",
                             field="train.max_length")
    return rows, {"pairs": len(rows), "truncated": truncated, "dropped_prompt_too_long": dropped,
                  "max_length": max_length}


def should_precompute(cfg: Config, n_pairs: int, processes: int = 1) -> bool:
    """``auto``: precompute when training sees every pair at least once — then one reference forward per pair up
    front (in larger inference batches) is never more work than one per pair per step."""
    if cfg.precompute_ref != "auto":
        return cfg.precompute_ref == "yes"
    t = cfg.train
    seen = t.max_steps * t.batch_size * t.grad_accum * processes if t.max_steps > 0 else t.epochs * n_pairs
    return seen >= n_pairs


def build_trainer(model: Any, tokenizer: Any, dataset: Any, cfg: Config, output_dir: Path, precompute: bool,
                  ref_model: Any = None, callbacks: list | None = None, **overrides: Any):
    """TRL's DPOTrainer with our settings (``overrides`` go to DPOConfig; the benchmark uses them)."""
    from trl import DPOConfig, DPOTrainer

    score_labelled_tokens_only()  # CPU: project only the response tokens through the LM head
    kw = {**cfg.train.trainer_kwargs(), **overrides}
    args = DPOConfig(output_dir=str(output_dir), max_length=cfg.train.max_length, beta=cfg.beta,
                     loss_type=[s.strip() for s in cfg.loss_type.split(",") if s.strip()],
                     precompute_ref_log_probs=precompute, precompute_ref_batch_size=2 * cfg.train.batch_size, **kw)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=cfg.lora.peft_config(), callbacks=callbacks)
    trainable_in_fp32_unless_bf16(trainer)
    return trainer


def run(cfg: Config, out_dir: str | Path, overwrite: bool = False) -> Path:
    """DPO as configured: select pairs, train, write the model dir."""
    from datasets import Dataset, load_from_disk

    from safealign.models import load_causal_lm

    pairs, selection = select_pairs(cfg)
    out, resume = start_run(out_dir, overwrite, method="dpo", base_model=cfg.model, config=cfg,
                            fingerprint=records_fingerprint(pairs), meta={"data": selection})

    # 1. model and data. The dataset lives on disk beside the checkpoints so that every process (and a resumed
    #    run) finds the same precomputed reference log-probs, which TRL caches next to it.
    policy, tok = load_policy(cfg.model, cfg.lora, cfg.train.gradient_checkpointing)
    rows, counts = build_rows(tok, pairs, cfg.template, cfg.train.max_length)
    state = distributed_state()
    precompute = should_precompute(cfg, len(rows), state.num_processes)
    data_dir = checkpoint_dir(out) / "dataset"
    if state.is_main_process:
        log_event(out, event="data", dropped_identical=selection["dropped_identical"], precompute_ref=precompute,
                  **counts)
        if not (data_dir / "dataset_info.json").exists():
            Dataset.from_list(rows).save_to_disk(str(data_dir))
    state.wait_for_everyone()
    dataset = load_from_disk(str(data_dir))
    # full fine-tuning needs a frozen reference copy unless its log-probs are precomputed (LoRA: adapter off)
    ref = None if cfg.lora.enabled or precompute else load_causal_lm(cfg.model)[0]

    # 2. train
    trainer = build_trainer(policy, tok, dataset, cfg, checkpoint_dir(out), precompute, ref_model=ref,
                            callbacks=[jsonl_log_callback(out)])
    use_rich_progress(trainer, "dpo")
    trainer.train(resume_from_checkpoint=resume)

    # 3. save
    return finish_run(trainer, tok, out, cfg.lora, method="dpo", base_model=cfg.model,
                      summary=f"DPO ({cfg.loss_type}, β={cfg.beta}) on {len(rows)} preference pairs from {cfg.data}.",
                      details={"pairs": len(rows), "dropped (chosen = rejected)": selection["dropped_identical"],
                               "truncated": counts["truncated"], "beta": cfg.beta, "loss": cfg.loss_type,
                               "reference log-probs": "precomputed" if precompute else "per step",
                               "lora": f"r={cfg.lora.r}" if cfg.lora.enabled else "off (full fine-tuning)",
                               "lr": cfg.train.lr, "batch": f"{cfg.train.batch_size} x {cfg.train.grad_accum}",
                               "max_length": cfg.train.max_length, "template": cfg.template})
