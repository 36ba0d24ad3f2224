"""LoRA on the top layers of the guard judge's backbone, trained with its head: the guard reads with a backbone
adapted to the task, not only a frozen one.

Why only the top layers (measured on 2 CPU cores with AVX512-BF16): a training step through the whole 30-layer
backbone costs hours per epoch here. The layers below ``tune_from`` stay frozen, so their output — the hidden state
that enters layer ``tune_from`` at every token — is computed once per pair (a forward pass, bf16 where the CPU has
bf16 units) and cached on disk (``layer_states``); training then runs only layers ``tune_from``.. (LoRA on every
linear map, fp32 weights under bf16 autocast) and the head, from those states. At inference the adapter is merged
into the backbone (``apply_adapter``): reading a pair costs what the frozen judge cost.

The adapter's tensors name the full backbone's layers (PEFT's ``layers_to_transform``), so ``adapter/`` in a judge
dir loads onto the backbone as PEFT saves it (``adapter_model.safetensors`` + ``adapter_config.json``).
Functions here take what they need as arguments; ``guard.train`` and ``GuardJudge`` call them.

Not the shipped judge (``safealign judge train --judge guard --lora``): measured on 2 cores with AVX512-BF16, 20,105
pairs, the states took 14.4 minutes, one epoch (1,052 steps of 16 pairs, 1.2 s each) 21.8, the whole run 42.4 (peak
memory 12 GB: the states of every pair are held in memory, ~3.4 GB in bf16); its held-out scores are in
``guard``'s docstring — below the frozen head's on GPTFuzz and on SmolLM2's answers. On a GPU the same code runs
(states and training on the device, bf16 autocast where it has bf16) in minutes, where more epochs and lower
``tune_from`` become affordable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK = 16
ALPHA = 32
DROPOUT = 0.05
EPOCHS = 1
LR_LORA = 3e-4
LR_HEAD = 1e-3
BATCH = 16
WEIGHT_DECAY = 1e-2
ADAPTER = "adapter"  # the adapter's folder in a judge dir


def settings(epochs: float = EPOCHS) -> dict[str, Any]:
    return {"rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "targets": list(TARGETS), "epochs": epochs,
            "lr_lora": LR_LORA, "lr_head": LR_HEAD, "batch": BATCH, "weight_decay": WEIGHT_DECAY}


# ---------------------------------------------------------------- the states that enter layer tune_from


def _chunk_file(cache: Path, encoded: Sequence[list[int]]) -> Path:
    h = hashlib.sha256(json.dumps([list(e) for e in encoded]).encode())
    return cache / (h.hexdigest()[:24] + ".safetensors")


def layer_states(cut_backbone, encoded: Sequence[list[int]], cache: Path, chunk: int = 512, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """Per pair, the hidden states [tokens, hidden] (bf16) that enter the first layer past ``cut_backbone``'s
    (a decoder cut after ``tune_from`` layers): the input of its final norm. Chunks of ``chunk`` pairs are cached
    in ``cache`` by their token ids (atomic files: a killed run resumes at the first missing chunk)."""
    import torch
    from safetensors.torch import load, save

    from safealign.io import write_bytes

    cache.mkdir(parents=True, exist_ok=True)
    captured: dict[str, Any] = {}
    hook = None
    out: list[Any] = [None] * len(encoded)
    try:
        for c in range(0, len(encoded), chunk):
            part = encoded[c:c + chunk]
            f = _chunk_file(cache, part)
            if f.exists():
                flat = load(f.read_bytes())["h"]
            else:
                if hook is None:
                    hook = cut_backbone.norm.register_forward_pre_hook(lambda m, a: captured.__setitem__("h", a[0]))
                device = next(cut_backbone.parameters()).device
                rows: list[Any] = [None] * len(part)
                order = sorted(range(len(part)), key=lambda i: len(part[i]))
                with torch.inference_mode():
                    for b in range(0, len(order), batch_size):
                        idx = order[b:b + batch_size]
                        n = max(len(part[i]) for i in idx)
                        ids = torch.zeros((len(idx), n), dtype=torch.long)
                        mask = torch.zeros((len(idx), n), dtype=torch.long)
                        for r, i in enumerate(idx):
                            ids[r, :len(part[i])] = torch.tensor(part[i])
                            mask[r, :len(part[i])] = 1
                        cut_backbone(input_ids=ids.to(device), attention_mask=mask.to(device))
                        for r, i in enumerate(idx):
                            rows[i] = captured["h"][r, :len(part[i])].to(torch.bfloat16).cpu()
                flat = torch.cat(rows)
                write_bytes(f, save({"h": flat.contiguous()}))
            for i, piece in enumerate(torch.split(flat, [len(e) for e in part])):
                out[c + i] = piece
            if progress:
                progress(min(c + chunk, len(encoded)), len(encoded))
    finally:
        if hook is not None:
            hook.remove()
    return out


# ---------------------------------------------------------------- the tuned top


def add_lora(backbone, tune_from: int):
    """The backbone (a decoder, all its layers) with LoRA on every linear map of layers ``tune_from``..; returns
    the PEFT model (its adapter names the full backbone's layers)."""
    from peft import LoraConfig, get_peft_model

    n = len(backbone.layers)
    return get_peft_model(backbone, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                               target_modules=list(TARGETS), layers_pattern="layers",
                                               layers_to_transform=list(range(tune_from, n))))


def top_of(backbone, tune_from: int):
    """A decoder made of ``backbone``'s own layers ``tune_from``.. and final norm (the same modules: training it
    trains them), fed with ``inputs_embeds`` = the states that enter layer ``tune_from``; ``top_hidden`` reads it."""
    import torch

    cfg = copy.deepcopy(backbone.config)
    cfg.num_hidden_layers = len(backbone.layers) - tune_from
    cfg.vocab_size, cfg.pad_token_id = 1, None  # no embeddings of its own
    top = type(backbone)(cfg)
    top.layers = torch.nn.ModuleList(list(backbone.layers[tune_from:]))
    top.norm, top.rotary_emb = backbone.norm, backbone.rotary_emb
    return top


def top_hidden(top, states, mask, at: Sequence[int]) -> list[Any]:
    """The top's hidden state after k of its layers, for each k in ``at``: 0 is its input, ``len(top.layers)`` its
    output after the final norm — the backbone's hidden state ``tune_from + k`` as ``output_hidden_states`` gives
    it (raw layer outputs, the last one normed). Read with forward hooks: transformers records
    ``output_hidden_states`` with hooks of its own that do not follow layers moved into another model."""
    n = len(top.layers)
    got: dict[int, Any] = {}
    hooks = [top.layers[k - 1].register_forward_hook(
        lambda m, a, out, k=k: got.__setitem__(k, out[0] if isinstance(out, tuple) else out)) for k in at if 0 < k < n]
    try:
        last = top(inputs_embeds=states, attention_mask=mask, use_cache=False).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return [states if k == 0 else last if k == n else got[k] for k in at]


def pooled(hidden: Sequence[Any], mask, spans):
    """Per pair and per hidden state in ``hidden``: the last real token's state and the mean over the response's
    tokens (``spans``: [batch, tokens] weights summing to 1 over the response)."""
    import torch

    last = mask.sum(1) - 1
    rows = torch.arange(len(last), device=last.device)
    parts = []
    for h in hidden:
        h = h.float()
        parts.append(h[rows, last])
        parts.append(torch.einsum("bt,btd->bd", spans, h))
    return torch.cat(parts, 1)


def tune(backbone, head, states: Sequence[Any], spans: Sequence[tuple[int, int]], frozen_x, y, train_idx: Sequence[int],
         tune_from: int, layers: Sequence[int], seed: int = 0, progress: Callable[[int, int], None] | None = None,
         epochs: float = EPOCHS):
    """Train LoRA on layers ``tune_from``.. of ``backbone`` (fp32, in place) together with ``head`` (fresh; its
    standardisation set from ``frozen_x``) on the pairs ``train_idx``: masked two-output BCE, each output balanced
    by pos_weight (as ``guard.fit_head``), AdamW, one-cycle schedule, batches of ``BATCH`` pairs of similar length
    in shuffled order, ``epochs`` passes over them (a fraction: that share of one pass). ``frozen_x``: the frozen
    features of every pair (columns of layers <= ``tune_from`` are used as they are); ``states``/``spans``: per pair,
    the states entering layer ``tune_from`` and the response's [start, end). Returns the PEFT-wrapped backbone."""
    import torch

    from safealign.models import native_bf16

    torch.manual_seed(seed)
    peft_model = add_lora(backbone, tune_from)
    top = top_of(peft_model.base_model.model, tune_from)
    n_frozen = 2 * backbone.config.hidden_size * sum(1 for k in layers if k <= tune_from)
    tuned_at = [k - tune_from for k in layers if k > tune_from]
    width = states[train_idx[0]].shape[1]
    device = next(backbone.parameters()).device
    frozen_x, y, head = frozen_x.to(device), y.to(device), head.to(device)

    def logits(idx):
        n = max(len(states[i]) for i in idx)
        h = torch.zeros((len(idx), n, width))
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        span = torch.zeros((len(idx), n))
        for r, i in enumerate(idx):
            h[r, :len(states[i])] = states[i].float()
            mask[r, :len(states[i])] = 1
            span[r, spans[i][0]:spans[i][1]] = 1.0
        h, mask, span = h.to(device), mask.to(device), (span / span.sum(1, keepdim=True)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=native_bf16()):
            hs = top_hidden(top, h, mask, tuned_at)
        return head(torch.cat([frozen_x[idx, :n_frozen], pooled(hs, mask, span)], 1))

    tr = list(train_idx)
    head.mean.copy_(frozen_x[tr].mean(0))
    head.std.copy_(frozen_x[tr].std(0).clamp(min=1e-3))
    mask_y = ~torch.isnan(y)
    target = torch.nan_to_num(y, nan=0.0)
    pos = (target[tr] * mask_y[tr]).sum(0).clamp(min=1)
    neg = ((1 - target[tr]) * mask_y[tr]).sum(0).clamp(min=1)
    pos_weight = (neg / pos).clamp(0.25, 4.0)
    lora = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora, "lr": LR_LORA}, {"params": list(head.parameters()), "lr": LR_HEAD}],
                            weight_decay=WEIGHT_DECAY)
    by_length = sorted(tr, key=lambda i: len(states[i]))
    batches = [by_length[b:b + BATCH] for b in range(0, len(by_length), BATCH)]
    total = max(1, round(len(batches) * epochs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [LR_LORA, LR_HEAD], total_steps=total, pct_start=0.05)
    rng = random.Random(seed)
    top.train()
    head.train()
    step = 0
    while step < total:
        rng.shuffle(batches)
        for idx in batches[:total - step]:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(idx), target[idx], reduction="none",
                                                                        pos_weight=pos_weight)
            loss = (loss * mask_y[idx]).sum() / mask_y[idx].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(step, total)
    top.eval()
    head.eval()
    return peft_model


# ---------------------------------------------------------------- saving and loading


def save_adapter(peft_model, folder: Path) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT's layout; no path of this machine in it)."""
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    cfg_file = folder / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = None
    cfg_file.write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")


def apply_adapter(backbone, folder: Path):
    """``backbone`` with the adapter in ``folder`` merged into its weights (in the backbone's dtype): reading a
    pair then costs what the frozen backbone costs. One clear error for a missing or corrupt adapter."""
    from peft import PeftModel
    from safetensors import SafetensorError

    weights = folder / "adapter_model.safetensors"
    for f in (weights, folder / "adapter_config.json"):
        if not f.is_file():
            raise SafealignError("not a trained guard judge: missing file", file=str(f), field="judge")
    try:
        merged = PeftModel.from_pretrained(backbone, str(folder)).merge_and_unload()
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise SafealignError(f"corrupt adapter ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                             file=str(weights), field="judge") from None
    for p in merged.parameters():
        p.requires_grad = False
    return merged.eval()
