"""What every recipe shares: the output directory contract, LoRA settings, the JSONL training log.

A recipe's output dir (usable as ``--model`` anywhere) holds:
- the weights: merged safetensors (``config.json`` + ``model.safetensors``) or a LoRA adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``) — ``safealign.models`` loads both;
- ``safealign.json``: {"method", "base_model" (the user's spec, e.g. "smollm2-135m-instruct"),
  "finished": bool, "created", "seconds", ...};
- ``config.yaml``: the resolved config;
- ``log.jsonl``: one JSON object per logged step (``step``, ``loss``, ...), plus event lines;
- ``README.md``: a short model card.

A dir whose ``safealign.json`` says finished is refused unless ``overwrite``; an unfinished one resumes
(from its last checkpoint under ``checkpoints/``) unless ``overwrite``, which starts it over.

``TrainConfig`` is the ``train:`` section every recipe shares; ``start_run`` / ``finish_run`` wrap a TRL
trainer with that contract (rank-0 writes, barriers under ``accelerate launch``, resume, save + merge).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safealign import io
from safealign.config import dump_yaml, option
from safealign.errors import SafealignError
from safealign.models import QUANTIZE, native_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoraConfig:
    enabled: bool = option(True, "train a LoRA adapter (False: full fine-tuning)")
    r: int = option(16, "LoRA rank")
    alpha: int = option(32, "LoRA alpha")
    dropout: float = option(0.05, "LoRA dropout")
    target_modules: str = option("all-linear", "modules to adapt: all-linear, or comma-separated module names "
                                               "(q_proj,k_proj,v_proj)")
    merge: bool = option(True, "merge the adapter into the base weights when saving (with quantize: onto the "
                               "full-precision base; false keeps the adapter, loaded back on the quantized base)")
    quantize: str = option("none", "QLoRA: train the adapter on a base quantized by bitsandbytes: 4bit (NF4, double "
                                   "quantisation, bf16/fp16 compute where the device has it) | 8bit | none")

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE:
            raise SafealignError(f"unknown quantization {self.quantize!r} (choose from {', '.join(QUANTIZE)})",
                                 field="lora.quantize")
        if self.quantize != "none" and not self.enabled:
            raise SafealignError(f"{self.quantize} weights cannot be fine-tuned in full: QLoRA trains an adapter "
                                 "(set lora.enabled: true or lora.quantize: none)", field="lora.quantize")
        if not [m for m in self.target_modules.split(",") if m.strip()]:
            raise SafealignError("names no module", field="lora.target_modules")

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        if not self.enabled:
            return None
        from peft import LoraConfig as PeftLora

        names = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        targets = names if len(names) > 1 or names[0] != "all-linear" else "all-linear"
        return PeftLora(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                        task_type=task_type)


@dataclass
class TrainConfig:
    """The ``train:`` section of every recipe (TRL/transformers trainer settings)."""

    lr: float = option(2e-4, "peak learning rate (AdamW); ~2e-4 suits LoRA, ~1e-5 full fine-tuning")
    epochs: float = option(1.0, "passes over the training data (ignored when max_steps > 0)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: train for `epochs`)")
    batch_size: int = option(4, "examples per process per micro-batch (DPO/RM: pairs)")
    grad_accum: int = option(1, "micro-batches per optimizer step (effective batch: batch_size x grad_accum x "
                                "processes)")
    max_length: int = option(512, "tokens per sequence, prompt + response; longer ones are truncated (counted in "
                                  "log.jsonl)")
    seed: int = option(0, "training seed: LoRA initialisation, data order, dropout")
    logging_steps: int = option(1, "write the loss to log.jsonl every N optimizer steps")
    warmup_ratio: float = option(0.0, "fraction of the steps with a linear learning-rate warmup, in [0, 1)")
    lr_scheduler: str = option("linear", "learning-rate schedule after warmup: linear | cosine | constant | ...")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "clip gradients to this norm (0: no clipping)")
    save_steps: int = option(50, "checkpoint every N steps, so an interrupted run resumes (0: no checkpoints)")
    precision: str = option("auto", "auto (bf16 autocast where the GPU or CPU has bf16 units, else fp32) | fp32 | bf16 "
                                    "| fp16; bf16 on a CPU without bf16 units is ~10x slower than fp32")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, ~30% "
                                                 "slower (TRL's default is on; ours is off)")

    def __post_init__(self) -> None:
        checks = [("lr", self.lr > 0), ("batch_size", self.batch_size >= 1), ("grad_accum", self.grad_accum >= 1),
                  ("max_length", self.max_length >= 8), ("logging_steps", self.logging_steps >= 1),
                  ("warmup_ratio", 0 <= self.warmup_ratio < 1), ("save_steps", self.save_steps >= 0),
                  ("epochs", self.epochs > 0 or self.max_steps > 0)]
        for name, ok in checks:
            if not ok:
                raise SafealignError(f"invalid value {getattr(self, name)!r}", field=f"train.{name}")
        if self.precision not in PRECISIONS:
            raise SafealignError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})",
                                 field="train.precision")

    def trainer_kwargs(self, seed: int | None = None) -> dict[str, Any]:
        """Keyword arguments for any TRL config / ``TrainingArguments`` (all but ``output_dir`` and ``max_length``).

        ``seed`` overrides ``self.seed``. Precision and gradient checkpointing are set explicitly because TRL's
        defaults (bf16 autocast, checkpointing on) make a CPU step several times slower.
        """
        bf16, fp16 = resolve_precision(self.precision)
        kw: dict[str, Any] = dict(
            learning_rate=self.lr, num_train_epochs=self.epochs, max_steps=self.max_steps if self.max_steps > 0 else -1,
            per_device_train_batch_size=self.batch_size, gradient_accumulation_steps=self.grad_accum,
            seed=self.seed if seed is None else seed, logging_steps=self.logging_steps, warmup_steps=self.warmup_ratio,
            lr_scheduler_type=self.lr_scheduler, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            save_strategy="steps" if self.save_steps > 0 else "no", save_steps=max(self.save_steps, 1),
            save_total_limit=1, bf16=bf16, fp16=fp16, report_to="none", dataloader_num_workers=0,
            dataloader_pin_memory=_has_cuda(),
        )
        name = _checkpointing_arg()
        kw[name] = self.gradient_checkpointing
        if self.gradient_checkpointing:
            kw[f"{name}_kwargs"] = {"use_reentrant": False}
        if (bf16 or fp16) and not _has_cuda():
            kw["use_cpu"] = True  # transformers accepts CPU mixed precision only when asked for explicitly
        return kw


def _checkpointing_arg() -> str:
    """``activation_checkpointing`` where ``TrainingArguments`` has it (transformers 5.x, where the old name warns
    that it is deprecated), else ``gradient_checkpointing``."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str) -> tuple[bool, bool]:
    """(bf16, fp16) for ``TrainConfig.precision``. ``auto``: bf16 autocast where the hardware has bf16 units
    (``native_bf16``), else fp32 — TRL's default, bf16 everywhere, makes a step ~10x slower on an AVX2-only CPU."""
    if precision == "auto":
        return native_bf16(), False
    return precision == "bf16", precision == "fp16"


def prepare_output_dir(out: str | Path, overwrite: bool) -> tuple[Path, bool]:
    """Create ``out``; returns (path, resuming). A finished run is refused unless ``overwrite``."""
    out = Path(out)
    meta = out / "safealign.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if info.get("finished") and not overwrite:
            raise SafealignError("holds a finished run; pass --overwrite to replace it", file=str(out), field="out")
        if overwrite:  # a finished run is replaced; an unfinished one starts over
            shutil.rmtree(out)
        else:
            return out, True
    elif not overwrite and _holds_other_files(out):
        raise SafealignError("exists and is not a safealign run dir; pass --overwrite or choose another", file=str(out), field="out")
    out.mkdir(parents=True, exist_ok=True)
    for p in io.leftover_temps(out / "safealign.json"):  # a marker whose writer was killed mid-write
        p.unlink()
    return out, False


def _holds_other_files(out: Path) -> bool:
    """Whether ``out`` exists and holds anything but what a run killed while writing its marker leaves (the
    marker's temp file, ``.safealign.json.<pid>.tmp``): such a dir starts the run afresh instead of being refused."""
    if not out.exists():
        return False
    if not out.is_dir():
        return True
    leftover = set(io.leftover_temps(out / "safealign.json"))
    return any(p not in leftover for p in out.iterdir())


def write_meta(out: Path, **fields: Any) -> None:
    """Update ``safealign.json`` atomically."""
    meta = out / "safealign.json"
    info = json.loads(meta.read_text()) if meta.exists() else {"created": time.time()}
    info.update(fields)
    io.write_json(meta, info)


def write_config(out: Path, cfg: Any) -> None:
    """Write the resolved config (a config dataclass or a plain dict) to ``config.yaml``."""
    import yaml

    text = yaml.safe_dump(cfg, sort_keys=False) if isinstance(cfg, dict) else dump_yaml(cfg)
    io.write_text(out / "config.yaml", text)


def log_event(out: Path, **fields: Any) -> None:
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        io.append_jsonl(f, [{"time": time.time(), **fields}])


def write_card(out: Path, method: str, base_model: str, summary: str, details: dict[str, Any]) -> None:
    lines = [f"# {out.name}", "", f"Trained with safealign `{method}` from `{base_model}`.", "", summary, "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in details.items()]
    lines += ["", "Load it anywhere with `--model " + str(out) + "`.", ""]
    io.write_text(out / "README.md", "\n".join(lines))


def jsonl_log_callback(out: Path):
    """A transformers TrainerCallback that appends every log dict (loss per step) to ``log.jsonl``."""
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and state.is_world_process_zero:
                log_event(out, step=state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    return JsonlLog()


def progress_callback(desc: str):
    """A TrainerCallback showing a rich progress bar (steps, loss) on the main process; see ``use_rich_progress``."""
    from transformers import TrainerCallback

    from safealign.progress import progress_bar

    class RichProgress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            if state.is_world_process_zero:
                self.bar = progress_bar()
                self.bar.start()
                self.task = self.bar.add_task(desc, total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(self.task, description=f"{desc} (loss {logs['loss']:.4f})")

        def on_train_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return RichProgress()


def use_rich_progress(trainer: Any, desc: str) -> None:
    """Replace the trainer's tqdm bar and printed log dicts by one rich progress bar (the loss goes to log.jsonl)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(desc))


def records_fingerprint(records: list[Any]) -> str:
    """A short hash of training records (any dataclasses), to tell whether a run resumes on the same data."""
    from dataclasses import asdict

    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def read_meta(out: str | Path) -> dict[str, Any] | None:
    meta = Path(out) / "safealign.json"
    return json.loads(meta.read_text()) if meta.exists() else None


def is_finished(out: str | Path) -> bool:
    """Whether ``out`` holds a finished run (its weights are complete and usable as ``--model``)."""
    return bool((read_meta(out) or {}).get("finished"))


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def last_checkpoint(out: str | Path) -> str | None:
    """The newest complete ``checkpoints/checkpoint-N`` of a run dir, or None."""
    d = checkpoint_dir(out)
    if not d.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(d))


def start_run(out_dir: str | Path, overwrite: bool, *, method: str, base_model: str, config: Any,
              fingerprint: str, meta: dict[str, Any] | None = None) -> tuple[Path, str | None]:
    """Prepare a run dir on every process; returns (dir, checkpoint to resume from or None).

    Every process makes the same read-only checks first, so a refused dir fails everywhere alike (no process
    waits forever at a barrier); then the main process creates or clears the dir and writes ``safealign.json``
    (``finished: false``), then ``config.yaml``. An unfinished run resumes only with the same method, base
    model and data (``fingerprint``) and the same settings, but for those in ``CHANGEABLE_ON_RESUME`` (a longer run:
    ``train.max_steps``, ``train.epochs``; checkpoint and log intervals): ``config.yaml`` always holds what runs.
    """
    state = distributed_state()
    out = Path(out_dir)
    info = read_meta(out)
    if not overwrite:
        if info is not None and info.get("finished"):
            raise SafealignError("holds a finished run; pass --overwrite to replace it", file=str(out), field="out")
        if info is not None:
            same = (info.get("method"), info.get("base_model"), info.get("data_fingerprint")) == \
                (method, base_model, fingerprint)
            if not same:
                raise SafealignError("holds an unfinished run of another method, model or data; pass --overwrite to "
                                     "start over", file=str(out), field="out")
            changed = changed_settings(out, config)
            if changed:
                raise SafealignError(f"holds an unfinished run with other settings ({'; '.join(changed)}): rerun "
                                     "with the recorded settings to resume it, or pass --overwrite to start over",
                                     file=str(out), field=changed[0].split(":")[0])
        elif _holds_other_files(out):
            raise SafealignError("exists and is not a safealign run dir; pass --overwrite or choose another",
                                 file=str(out), field="out")
    state.wait_for_everyone()
    if state.is_main_process:
        out, _ = prepare_output_dir(out, overwrite)
        # the marker first: a run killed before it is written leaves an empty dir, after it a dir that resumes (a
        # config.yaml without it read as "not a safealign run dir" and the rerun refused to resume)
        write_meta(out, method=method, base_model=base_model, finished=False, data_fingerprint=fingerprint,
                   **(meta or {}))
        write_config(out, config)
    state.wait_for_everyone()
    resume = last_checkpoint(out)
    if state.is_main_process:
        log_event(out, event="resume" if resume else "start", checkpoint=resume, processes=state.num_processes)
    return out, resume


CHANGEABLE_ON_RESUME = {"train.max_steps", "train.epochs", "train.save_steps", "train.logging_steps"}


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def changed_settings(out: Path, config: Any) -> list[str]:
    """``key: recorded -> new`` for every setting of ``config`` that differs from the run dir's ``config.yaml``
    (but those a resume may change); empty when it has none recorded."""
    import yaml

    recorded = out / "config.yaml"
    if not recorded.exists():
        return []
    new = yaml.safe_load(yaml.safe_dump(config, sort_keys=False) if isinstance(config, dict) else dump_yaml(config))
    old = _flat(yaml.safe_load(recorded.read_text(encoding="utf-8")) or {})
    new = _flat(new or {})
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in CHANGEABLE_ON_RESUME]


def distributed_state():
    """accelerate's process state, set up once per process; call it before anything else asks for one.

    Several processes launched on a machine without an accelerator (``accelerate launch`` with
    ``configs/accelerate/ddp_cpu.yaml``, or ``torchrun``) join one gloo process group on CPU: accelerate
    itself would leave each of them training alone, and the Trainer follows ``ACCELERATE_USE_CPU``.
    """
    import torch
    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"
    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))


def is_main_process() -> bool:
    """True outside ``accelerate launch`` and on its main process."""
    return distributed_state().is_main_process


def score_labelled_tokens_only() -> None:
    """Make TRL's fused LM head score only the labelled positions on CPU too.

    On CUDA/XPU it projects only the positions that have a label (the response tokens); elsewhere it scores
    every position — prompt and padding included, a third or more of a batch — to keep tile shapes fixed for
    compiling backends (Neuron). A CPU compiles nothing, so the SFT and DPO steps drop 15-25% of their time
    with the compact path. A no-op when TRL no longer has this switch.
    """
    try:
        import trl.trainer.utils as trl_utils
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:
        return
    if getattr(trl_utils, "_use_triton", None) is _use_triton:
        trl_utils._use_triton = lambda device: device.type == "cpu" or _use_triton(device)


def training_device() -> str:
    """The device this process trains on (accelerate's choice: its GPU under ``accelerate launch``, else the CPU)."""
    return str(distributed_state().device)


def load_policy(spec: str, lora: LoraConfig | None = None, gradient_checkpointing: bool = False,
                num_labels: int | None = None):
    """(model, tokenizer) to train: fp32 weights (a LoRA dir is merged onto its base), train mode, right padding.
    ``num_labels``: a sequence classifier with a new score head of that many outputs (a reward model) instead of
    the causal LM.

    With ``lora.quantize`` (QLoRA) the weights are loaded quantized onto the training device instead and made
    ready for k-bit training by PEFT (norms in fp32, input gradients on); the adapter is added by the trainer."""
    from safealign.models import load_causal_lm, load_sequence_classifier

    def load(**kw):
        if num_labels is None:
            return load_causal_lm(spec, **kw)
        return load_sequence_classifier(spec, num_labels=num_labels, **kw)

    quantize = lora.quantize if lora is not None else "none"
    if quantize == "none":
        model, tok = load(quantize="none")
    else:
        from peft import prepare_model_for_kbit_training

        model, tok = load(quantize=quantize, device=training_device())
        if hasattr(model, "merge_and_unload"):  # an adapter dir trained quantized: continue from its merged weights
            raise SafealignError("a QLoRA run cannot start from an unmerged adapter dir; train that model with "
                                 "lora.merge: true, or start from its base", file=spec, field="model")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model.train()
    tok.padding_side = "right"
    return model, tok


def trainable_in_fp32_unless_bf16(trainer: Any) -> None:
    """QLoRA under TRL: it casts every trainable parameter to bf16 (the QLoRA paper's choice), which is right under
    bf16 autocast but breaks an fp32 step (a reward model's new score head meets fp32 hidden states) and is emulated,
    slow bf16 on a CPU without bf16 units. Without bf16 autocast the trainable parameters go back to fp32."""
    import torch

    from safealign.models import is_quantized

    if trainer.args.bf16 or not is_quantized(trainer.model):
        return
    for p in trainer.model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.to(torch.float32)


def _finalize_weights(staging: Path, out: Path, tokenizer: Any, lora: LoraConfig, base_model: str) -> str:
    """Move what ``trainer.save_model`` wrote into ``out``: merged weights, a LoRA adapter, or full weights."""
    from safealign.models import adapter_base, load_causal_lm, quantized_dtype, resolve_model

    if (staging / "adapter_config.json").exists():
        # a base that is itself an adapter was merged before training, so its new adapter only fits merged
        if lora.merge or adapter_base(resolve_model(base_model)) is not None:
            from peft import PeftModel

            # QLoRA too: merged onto the unquantized base, saved in the compute dtype it trained in (bf16 on most
            # GPUs: half the disk of fp32 for a 7B model)
            dtype = None if lora.quantize == "none" else quantized_dtype(training_device())
            model, _ = load_causal_lm(base_model, dtype=dtype, quantize="none")
            model = PeftModel.from_pretrained(model, str(staging)).merge_and_unload()
            model.save_pretrained(out, safe_serialization=True)
            kind = "merged"
        else:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                os.replace(staging / name, out / name)
            kind = "adapter"
    else:
        for f in staging.iterdir():
            if f.name == "config.json" or f.name == "generation_config.json" or f.suffix == ".safetensors" \
                    or f.name.endswith(".safetensors.index.json"):
                os.replace(f, out / f.name)
        kind = "full"
    tokenizer.save_pretrained(out)
    return kind


def finish_run(trainer: Any, tokenizer: Any, out: Path, lora: LoraConfig, *, method: str, base_model: str,
               summary: str, details: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """After ``trainer.train()``: save the weights into ``out`` (merged LoRA, adapter, or full), drop the
    checkpoints, write the model card and mark the run finished. Call it on every process."""
    import math

    acc = trainer.accelerator
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses and not all(math.isfinite(x) for x in losses):
        raise SafealignError(f"training diverged (loss {losses[-1]}); lower train.lr or check the data",
                             file=str(out), field="train.lr")
    staging = out / ".staging"
    trainer.model.config.use_cache = True  # TRL turns the KV cache off for training; generation wants it back
    trainer.save_model(str(staging))  # every process: gathers ZeRO-3 / FSDP shards, the main one writes
    acc.wait_for_everyone()
    if acc.is_main_process:
        kind = _finalize_weights(staging, out, tokenizer, lora, base_model)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
        info = read_meta(out) or {}
        seconds = round(time.time() - info.get("created", time.time()), 1)
        final = {"weights": kind, "steps": trainer.state.global_step,
                 "final_loss": losses[-1] if losses else None, "seconds": seconds,
                 # an adapter is loaded back on the base quantized as in training; merged weights are plain
                 "quantize": lora.quantize if kind == "adapter" else "none", "trained_quantized": lora.quantize}
        log_event(out, event="finished", **final)
        if lora.quantize != "none":
            details = {**details, "quantize": f"{lora.quantize} (QLoRA; bitsandbytes)"}
        write_card(out, method, base_model, summary, {**details, "weights": kind, "steps": final["steps"],
                                                       "final loss": final["final_loss"]})
        write_meta(out, finished=True, **final, **(meta or {}))
    acc.wait_for_everyone()
    return out


# ------------------------------------------------------------------------------------------- the dry run's view

CHARS_PER_TOKEN = 4.0  # what a dry run assumes, having no tokenizer loaded (English text, a LLaMA/SmolLM tokenizer)


def data_part(label: str, name: str, kind: str, take: int | None = None) -> tuple[str, int | None, float | None]:
    """One data source as a dry run sees it: ``(text, records used, mean characters per record or None)``.
    ``take``: the first / drawn N of it (0 or None: all). Nothing is downloaded; a source that is not here is
    counted from its documented size (or from ``take``) and says so."""
    from safealign.data import registry

    info = registry.peek(name, kind)
    n = info["n"]
    used = (min(take, n) if n is not None else take) if take else n
    if used is None:
        return f"{label}: {name} ({info['where']}; size unknown)", None, None
    of = f" of {n:,}" if n is not None and used != n else ""
    where = "" if info["where"] in (name, registry.split_name(name)[0]) else f"; {info['where']}"
    if n is None:
        where += "; counted from the config"
    return f"{used:,} {label}{of} ({name}{where})", used, info["chars"]


def lora_train_summary(lora: LoraConfig, train: TrainConfig) -> str:
    """The key settings of a training stage, one line."""
    if lora.enabled:
        adapter = (f"LoRA r={lora.r} alpha={lora.alpha} dropout={lora.dropout} on {lora.target_modules}"
                   f"{', merged' if lora.merge else ', adapter kept'}")
        adapter += f"; quantize {lora.quantize}" if lora.quantize != "none" else "; no quantization"
    else:
        adapter = "full fine-tuning"
    length = f"max_steps {train.max_steps}" if train.max_steps > 0 else f"epochs {train.epochs:g}"
    return (f"{adapter}; {length}, lr {_num(train.lr)}, batch {train.batch_size} x {train.grad_accum}, "
            f"max_length {train.max_length}, precision {train.precision}")


def _num(x: float) -> str:
    """2.75e-4, 1e-4: a learning rate as configs write it."""
    mantissa, exp = f"{x:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def training_work(train: TrainConfig, parts: list[tuple[int | None, float | None]], sequences: int = 1,
                  unit: str = "examples") -> str:
    """Examples, optimizer steps (one process) and tokens a training stage processes: ``parts`` are (records,
    mean chars) per source; a source without a known length counts ``max_length`` tokens a sequence (an upper
    bound, shown as <=). ``sequences``: sequences per record (DPO and RM pairs: 2)."""
    import math

    if any(n is None for n, _ in parts):
        return "size unknown (a data source is missing)"
    examples = sum(n for n, _ in parts)
    per_step = train.batch_size * train.grad_accum
    steps = train.max_steps if train.max_steps > 0 else math.ceil(train.epochs * math.ceil(examples / per_step))
    passes = steps * per_step / max(1, examples)
    bound = any(c is None for _, c in parts)
    tokens = sum(n * sequences * (train.max_length if c is None else min(train.max_length, c / CHARS_PER_TOKEN))
                 for n, c in parts) * passes
    return (f"{examples:,} {unit}, {steps:,} optimizer steps, {'<=' if bound else '~'} {human_count(tokens)} tokens "
            f"({'max_length a sequence where its length is not known here' if bound else f'~{CHARS_PER_TOKEN:g} chars a token'})")


def human_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"
