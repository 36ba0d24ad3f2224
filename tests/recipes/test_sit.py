"""SIT / supervised fine-tuning end to end on a tiny real LM (conftest): train, save (merged, adapter, full),
reload and generate; response-only loss; truncation counts; resume after a crash; the data mix record; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.data import registry
from safealign.errors import SafealignError
from safealign.recipes import sit
from safealign.recipes.common import LoraConfig, TrainConfig
from safealign.records import Instruction

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [Instruction("How do I make a bomb?", "", "I'm sorry, but I cannot help with that request."),
            Instruction("Write a poem about the sea.", "", "The sea is wide, the sea is blue."),
            Instruction("Summarise the text.", "The capital of France is Paris.", "Paris is France's capital."),
            Instruction("How can I steal a car?", "", "I can't assist with illegal activities.")] * 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/recipes/conftest.py


def tiny_train(**kw) -> TrainConfig:
    return TrainConfig(**{"lr": 5e-3, "max_steps": 4, "batch_size": 2, "max_length": 64, "save_steps": 0, **kw})


def weights(model_dir) -> dict:
    from safealign.models import load_causal_lm

    model, _ = load_causal_lm(str(model_dir))
    return {k: v.clone() for k, v in model.state_dict().items()}


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["merged", "adapter", "full"])
def test_finetune_trains_saves_and_reloads(tmp_path, tiny_lm_dir, kind):
    import torch

    from safealign.generate import GenParams, HFEngine

    lora = LoraConfig(enabled=kind != "full", merge=kind == "merged", r=8)
    train = tiny_train(lr=5e-3 if kind != "full" else 1e-3)
    out = sit.finetune(str(tiny_lm_dir), EXAMPLES, tmp_path / "m", train, lora)

    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["weights"] == kind and meta["steps"] == 4
    assert meta["base_model"] == str(tiny_lm_dir)
    losses = [e["loss"] for e in events(out) if "loss" in e]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert (out / "README.md").exists() and (out / "config.yaml").exists()
    assert not (out / "checkpoints").exists() and not (out / ".staging").exists()
    assert not (out / "training_args.bin").exists()
    assert (out / "adapter_config.json").exists() == (kind == "adapter")
    if kind != "adapter":  # TRL turns the KV cache off while training; the saved model has it on again
        assert json.loads((out / "config.json").read_text())["use_cache"] is True

    before, after = weights(tiny_lm_dir), weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed"
    engine = HFEngine(str(out), show_progress=False)
    reply = engine.generate(["How do I make a bomb?"], GenParams(max_new_tokens=4, batch_size=1))
    assert isinstance(reply[0][0], str)


def test_loss_is_on_the_response_only_and_long_examples_are_counted(tmp_path, tiny_lm_dir):
    from safealign.recipes.common import load_policy

    model, tok = load_policy(str(tiny_lm_dir))
    long = Instruction("Explain. " * 40, "", "Short answer.")  # the prompt alone is over max_length
    cut = Instruction("Say it.", "", "word " * 80)  # the response runs past max_length
    dataset, counts = sit.build_dataset(tok, [*EXAMPLES[:2], long, cut], "auto", max_length=56)
    assert counts == {"examples": 4, "truncated": 1, "dropped_prompt_too_long": 1, "max_length": 56}
    with pytest.raises(SafealignError, match="longer than train.max_length"):
        sit.build_dataset(tok, [long], "auto", max_length=56)

    trainer = sit.build_trainer(model, tok, dataset, tiny_train(max_length=56), LoraConfig(r=4), tmp_path)
    rows = list(trainer.train_dataset)
    assert len(rows) == 3  # TRL drops the example with no response left
    for row in rows:
        assert len(row["input_ids"]) <= 56
        labels = row["labels"]
        first = next(i for i, x in enumerate(labels) if x != -100)
        assert first > 5 and all(x == -100 for x in labels[:first])  # the whole (chat-formatted) prompt is masked
        assert tok.decode([t for t in row["input_ids"][:first]]).startswith("<|im_start|>user")
    full = sit.build_trainer(load_policy(str(tiny_lm_dir))[0], tok, dataset, tiny_train(max_length=56),
                             LoraConfig(r=4), tmp_path / "b", completion_only_loss=False)
    assert all(x != -100 for x in next(iter(full.train_dataset))["labels"])


def test_crash_then_resume_from_last_checkpoint(tmp_path, tiny_lm_dir):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise RuntimeError("power cut")

    out = tmp_path / "m"
    train = tiny_train(max_steps=5, save_steps=2)
    with pytest.raises(RuntimeError, match="power cut"):
        sit.finetune(str(tiny_lm_dir), EXAMPLES, out, train, LoraConfig(r=4), callbacks=[Crash()])
    assert not json.loads((out / "safealign.json").read_text())["finished"]
    assert (out / "checkpoints" / "checkpoint-2").is_dir()

    # other data is not resumed onto this run
    with pytest.raises(SafealignError, match="unfinished run"):
        sit.finetune(str(tiny_lm_dir), EXAMPLES[:3], out, train, LoraConfig(r=4))
    # nor other settings: refused before anything is written, naming what differs (config.yaml = what runs)
    recorded = (out / "config.yaml").read_text()
    with pytest.raises(SafealignError, match=r"other settings \(train.lr: 0.005 -> 0.01\)") as e:
        sit.finetune(str(tiny_lm_dir), EXAMPLES, out, tiny_train(max_steps=5, save_steps=2, lr=1e-2), LoraConfig(r=4))
    assert e.value.field == "train.lr"
    with pytest.raises(SafealignError, match=r"lora.r: 4 -> 8"):
        sit.finetune(str(tiny_lm_dir), EXAMPLES, out, train, LoraConfig(r=8))
    assert (out / "config.yaml").read_text() == recorded
    sit.finetune(str(tiny_lm_dir), EXAMPLES, out, train, LoraConfig(r=4))
    resumed = [e for e in events(out) if e.get("event") == "resume"]
    assert resumed and resumed[0]["checkpoint"].endswith("checkpoint-2")
    steps = [e["step"] for e in events(out) if "loss" in e]
    assert steps[-2:] == [4, 5] and 3 in steps
    assert json.loads((out / "safealign.json").read_text())["steps"] == 5

    with pytest.raises(SafealignError, match="finished run"):
        sit.finetune(str(tiny_lm_dir), EXAMPLES, out, train, LoraConfig(r=4))
    with pytest.raises(SafealignError, match="no training examples"):
        sit.finetune(str(tiny_lm_dir), [], tmp_path / "empty", train, LoraConfig(r=4))


def test_run_records_the_data_mix(tmp_path, tiny_lm_dir, data_dir):
    cfg = load_config(sit.Config, ROOT / "configs" / "sit.yaml",
                      [f"model={tiny_lm_dir}", "helpful_limit=6", "n_safety=5", "seed=3", "train.max_steps=1",
                       "train.batch_size=2", "train.max_length=64", "lora.r=4"])
    out = sit.run(cfg, tmp_path / "sit")
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["method"] == "sit" and meta["finished"]
    helpful, safety = meta["data"]["helpful"], meta["data"]["safety"]
    assert helpful["count"] == 6 and helpful["file_items"] == "alpaca_test.json [200, 206)"
    assert "alpaca-test:eval" in helpful["held_out"]
    assert safety["count"] == 5 and safety["seed"] == 3 and len(set(safety["indices"])) == 5
    again, selection = sit.select_data(cfg)
    assert selection["safety"]["indices"] == safety["indices"] and len(again) == 11

    for bad, match in ((["n_safety=100000"], "asks for 100000"),
                       (["helpful_data=", "n_safety=0"], "no training examples")):
        with pytest.raises(SafealignError, match=match):
            sit.select_data(load_config(sit.Config, None, bad))


def test_contrast_data_is_mixed_in_and_bad_lines_are_named(tmp_path, data_dir):
    cfg = load_config(sit.Config, None, ["helpful_limit=3", "n_safety=2", "contrast_data=safealign-contrast",
                                         "n_contrast=4"])
    examples, selection = sit.select_data(cfg)
    assert selection["contrast"] == {"source": "safealign-contrast", "count": 4, "items": "first 4"}
    packaged = registry.load_instructions("safealign-contrast")
    assert examples[-4:] == packaged[:4] and len(examples) == 9
    assert all(e.instruction.strip() and e.output.strip() for e in packaged)

    bad = tmp_path / "contrast.jsonl"
    bad.write_text('{"prompt": "How do I kill a stuck process?", "response": "Use kill <pid>."}\n{"prompt": 3}\n')
    with pytest.raises(SafealignError) as e:
        sit.select_data(load_config(sit.Config, None, ["n_safety=0", f"contrast_data={bad}"]))
    assert str(e.value).startswith(f"{bad}:2: field 'prompt'")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "safealign", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_cli_train_refuses_finished_and_names_unknown_keys(tmp_path, tiny_lm_dir, data_dir):
    out = tmp_path / "run"
    args = ["train", "sit", "--config", str(ROOT / "configs" / "sit.yaml"), "--out", str(out), f"model={tiny_lm_dir}",
            "helpful_limit=2", "n_safety=2", "train.max_steps=1", "train.batch_size=2", "train.max_length=48",
            "lora.r=4"]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(out)
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "holds a finished run; pass --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_cli_names_unknown_keys_and_lists_settings(tmp_path, capsys):
    from safealign.cli import main

    assert main(["train", "sit", "--out", str(tmp_path / "x"), "train.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "field 'train.learning_rate': unknown config key" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert main(["train", "dpo", "--help-config"]) == 0
    listing = capsys.readouterr().out
    assert "beta = 0.1" in listing and "train.precision = 'auto'" in listing
    assert main(["train", "sit"]) == 2 and "--out is required" in capsys.readouterr().err
