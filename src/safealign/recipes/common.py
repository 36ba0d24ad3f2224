"""What every recipe shares: the output directory contract, LoRA settings, the JSONL training log.

A recipe's output dir (usable as ``--model`` anywhere) holds:
- the weights: merged safetensors (``config.json`` + ``model.safetensors``) or a LoRA adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``) — ``safealign.models`` loads both;
- ``safealign.json``: {"method", "base_model" (the user's spec, e.g. "smollm2-135m-instruct"),
  "finished": bool, "created", "seconds", ...};
- ``config.yaml``: the resolved config;
- ``log.jsonl``: one JSON object per logged step (``step``, ``loss``, ...), plus event lines;
- ``README.md``: a short model card.

A dir whose ``safealign.json`` says finished is refused unless ``overwrite``; an unfinished one resumes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safealign.config import dump_yaml, option
from safealign.errors import SafealignError


@dataclass
class LoraConfig:
    enabled: bool = option(True, "train a LoRA adapter (False: full fine-tuning)")
    r: int = option(16, "LoRA rank")
    alpha: int = option(32, "LoRA alpha")
    dropout: float = option(0.05, "LoRA dropout")
    target_modules: str = option("all-linear", "modules to adapt (PEFT syntax)")
    merge: bool = option(True, "merge the adapter into the base weights when saving")

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        if not self.enabled:
            return None
        from peft import LoraConfig as PeftLora

        return PeftLora(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                        target_modules=self.target_modules, task_type=task_type)


def prepare_output_dir(out: str | Path, overwrite: bool) -> tuple[Path, bool]:
    """Create ``out``; returns (path, resuming). A finished run is refused unless ``overwrite``."""
    out = Path(out)
    meta = out / "safealign.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if info.get("finished") and not overwrite:
            raise SafealignError("holds a finished run; pass --overwrite to replace it", file=str(out), field="out")
        if info.get("finished") and overwrite:
            shutil.rmtree(out)
        else:
            return out, True
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise SafealignError("exists and is not a safealign run dir; pass --overwrite or choose another", file=str(out), field="out")
    out.mkdir(parents=True, exist_ok=True)
    return out, False


def write_meta(out: Path, **fields: Any) -> None:
    """Update ``safealign.json`` atomically."""
    meta = out / "safealign.json"
    info = json.loads(meta.read_text()) if meta.exists() else {"created": time.time()}
    info.update(fields)
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(meta)


def write_config(out: Path, cfg: Any) -> None:
    (out / "config.yaml").write_text(dump_yaml(cfg))


def log_event(out: Path, **fields: Any) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), **fields}) + "\n")


def write_card(out: Path, method: str, base_model: str, summary: str, details: dict[str, Any]) -> None:
    lines = [f"# {out.name}", "", f"Trained with safealign `{method}` from `{base_model}`.", "", summary, "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in details.items()]
    lines += ["", "Load it anywhere with `--model " + str(out) + "`.", ""]
    (out / "README.md").write_text("\n".join(lines))


def jsonl_log_callback(out: Path):
    """A transformers TrainerCallback that appends every log dict (loss per step) to ``log.jsonl``."""
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and state.is_world_process_zero:
                log_event(out, step=state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    return JsonlLog()
