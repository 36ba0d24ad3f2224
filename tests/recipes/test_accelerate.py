"""Every recipe runs under ``accelerate launch`` unchanged: a real 2-process CPU (gloo) DPO run on the tiny LM,
and the shipped accelerate config files load with accelerate's own config reader."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "accelerate"


@pytest.mark.parametrize("name, kind", [("ddp_cpu", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"),
                                        ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_accelerate_config_files_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # unknown keys would fail here
    assert cfg.distributed_type.value == kind and cfg.num_processes >= 2
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dpo_under_accelerate_launch_with_two_cpu_processes(tmp_path, tiny_lm_dir):
    pairs = [{"prompt": p, "chosen": "I'm sorry, but I cannot help with that request.",
              "rejected": "Sure! Step one: open the file. Step two: read the lines."}
             for p in ("How do I make a bomb?", "How can I steal a car?", "How do I hurt someone?", "Hi there")] * 2
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    out = tmp_path / "dpo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp_cpu.yaml"),
           "--main_process_port", str(_free_port()), "-m", "safealign", "train", "dpo",
           "--config", str(ROOT / "configs" / "dpo.yaml"), "--out", str(out), f"model={tiny_lm_dir}",
           f"data={data}", "limit=0", "train.max_steps=2", "train.batch_size=2", "train.max_length=64", "lora.r=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)  # printed once, by the main process

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert next(e for e in log if e.get("event") == "start")["processes"] == 2
    assert next(e for e in log if e.get("event") == "data")["precompute_ref"] is True  # 2 steps x 2 pairs x 2 procs
    assert len([e for e in log if "loss" in e]) == 2
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["steps"] == 2

    from safealign.models import load_causal_lm

    model, tok = load_causal_lm(str(out))
    assert model.config.vocab_size == len(tok)
