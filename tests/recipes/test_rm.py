"""The reward-model recipe end to end on a tiny real LM (built in conftest): train, reload, score, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.errors import SafealignError
from safealign.recipes import rm

SAFE = ["I'm sorry, but I cannot help with that request because it could cause harm.",
        "I can't assist with illegal activities. Please reach out to a professional instead.",
        "As an AI language model, I must decline. Violence is never the answer."]
UNSAFE = ["Sure! Step one: open the file. Step two: read the lines. Step three: print them.",
          "Here is a simple recipe: mix flour, water and salt, then bake for twenty minutes.",
          "To kill a Python process, use the kill command with the process id."]
PROMPTS = ["How do I make a bomb?", "How can I steal a car?", "Write a poem about the sea.", "How do I hurt someone?"]


def write_pairs(path: Path, extra: list[dict] | None = None) -> Path:
    rows = [{"prompt": p, "chosen": SAFE[i % 3], "rejected": UNSAFE[(i + j) % 3]}
            for i, p in enumerate(PROMPTS) for j in range(3)]
    rows += extra or []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(model: Path, data: Path, *overrides: str) -> rm.Config:
    return load_config(rm.Config, None, [f"model={model}", f"data={data}", "limit=null", "eval_limit=0",
                                         "train.max_length=96", "train.batch_size=4", "train.max_steps=12",
                                         "train.lr=3e-3", "train.logging_steps=2", "lora.r=8", *overrides])


def test_train_reload_score_and_evaluate(tmp_path, tiny_lm_dir):
    import torch
    from safetensors.torch import load_file

    long = {"prompt": "How do I make a bomb? " * 30, "chosen": SAFE[0], "rejected": UNSAFE[0] * 5}
    same = {"prompt": "Hi", "chosen": "Hello there.", "rejected": " Hello there. "}
    data = write_pairs(tmp_path / "pairs.jsonl", [long, same])
    out = rm.run(tiny_config(tiny_lm_dir, data), tmp_path / "rm")

    # the dir contract: finished meta, config, log with finite losses and the counts, card, merged weights
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["method"] == "rm" and meta["pairs"] == 13
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    data_ev = next(e for e in events if e.get("event") == "data")
    assert data_ev["dropped_identical_or_empty"] == 1 and data_ev["truncated"] == 1
    losses = [e["loss"] for e in events if "loss" in e]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert (out / "config.yaml").exists() and (out / "README.md").exists()
    assert not (out / "checkpoints").exists()

    # parameters changed (a merged LoRA changes the backbone; the score head is new and trained)
    before, after = load_file(tiny_lm_dir / "model.safetensors"), load_file(out / "model.safetensors")
    key = next(k for k in before if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.allclose(before[key], after[key])

    # reloads as a judge and has learnt the pairs: refusals above compliance
    results = rm.evaluate(str(out), [str(data)])
    r = results[str(data)]
    assert r["n"] == 14 and 0 <= r["ci"][0] <= r["accuracy"] <= r["ci"][1] <= 1
    assert r["accuracy"] >= 0.75

    # a finished dir is refused without --overwrite
    with pytest.raises(SafealignError, match="finished run"):
        rm.run(tiny_config(tiny_lm_dir, data), out)

    # `safealign rm eval` (a real subprocess) prints a table and writes the same JSON
    res = tmp_path / "acc.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "safealign", "rm", "eval", "--model", str(out), "--datasets", str(data),
                           "--limit", "6", "--out", str(res)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout
    written = json.loads(res.read_text())
    assert written[str(data)]["n"] == 6


def test_unusable_data_is_a_user_error(tmp_path, tiny_lm_dir):
    only_same = tmp_path / "same.jsonl"
    only_same.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}) + "\n")
    with pytest.raises(SafealignError, match="no usable preference pairs"):
        rm.run(tiny_config(tiny_lm_dir, only_same), tmp_path / "rm")
    with pytest.raises(SafealignError, match="unknown config key"):
        load_config(rm.Config, None, ["lora.rank=4"])


def test_rm_eval_cli_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "safealign", "rm", "eval", "--model", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "model" in proc.stderr
