"""What every recipe shares: TrainConfig (validation, trainer settings TRL accepts), run dirs (refuse, replace,
resume only the same run), data fingerprints."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.errors import SafealignError
from safealign.recipes import common
from safealign.recipes.common import TrainConfig
from safealign.records import Instruction, Preference


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/recipes/conftest.py


def test_train_config_rejects_bad_values_and_unknown_keys(tmp_path):
    with pytest.raises(SafealignError) as e:
        TrainConfig(precision="bf17")
    assert e.value.field == "train.precision"
    with pytest.raises(SafealignError) as e:
        TrainConfig(batch_size=0)
    assert e.value.field == "train.batch_size"
    with pytest.raises(SafealignError) as e:
        TrainConfig(warmup_ratio=1.5)
    assert e.value.field == "train.warmup_ratio"

    from safealign.recipes import sit

    cfg_file = tmp_path / "sit.yaml"
    cfg_file.write_text("n_safety: 10\ntrain:\n  lr: 1e-4\n  batchsize: 2\n")
    with pytest.raises(SafealignError) as e:
        load_config(sit.Config, cfg_file)
    assert e.value.field == "train.batchsize" and str(cfg_file) in str(e.value)
    cfg_file.write_text("n_safety: 10\ntrain:\n  lr: 1e-4\n  max_steps: 7\n")
    cfg = load_config(sit.Config, cfg_file, ["train.batch_size=3"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.batch_size, cfg.n_safety) == (1e-4, 7, 3, 10)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_trainer_kwargs_build_real_trl_configs(tmp_path, precision):
    """The shared settings construct SFT/DPO/Reward configs as they are (bf16 on a CPU needs use_cpu)."""
    from trl import DPOConfig, RewardConfig, SFTConfig

    t = TrainConfig(precision=precision, max_steps=5, warmup_ratio=0.1, gradient_checkpointing=False)
    kw = t.trainer_kwargs(seed=7)
    assert kw["seed"] == 7 and "max_length" not in kw and "output_dir" not in kw
    for cls in (SFTConfig, DPOConfig, RewardConfig):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = cls(output_dir=str(tmp_path), **kw)
        assert args.max_steps == 5 and args.gradient_checkpointing is False
        assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]  # no deprecated name passed
        # TRL's default is bf16 everywhere; ours is bf16 only on hardware with bf16 units
        expected = {"fp32": False, "bf16": True, "auto": common.native_bf16()}[precision]
        assert args.bf16 is expected and not args.fp16
    assert common.resolve_precision("fp16") == (False, True)
    on = DPOConfig(output_dir=str(tmp_path), **TrainConfig(gradient_checkpointing=True).trainer_kwargs())
    assert on.gradient_checkpointing is True and on.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_records_fingerprint_tells_data_apart():
    a = [Instruction("a", "", "b"), Instruction("c", "", "d")]
    assert common.records_fingerprint(a) == common.records_fingerprint([Instruction("a", "", "b"),
                                                                          Instruction("c", "", "d")])
    assert common.records_fingerprint(a) != common.records_fingerprint(a[::-1])
    fp = common.records_fingerprint
    assert fp([Preference("p", "x", "y")]) != fp([Preference("p", "y", "x")])


def _start(out: Path, overwrite: bool = False, fingerprint: str = "f1", base: str = "m"):
    return common.start_run(out, overwrite, method="sit", base_model=base, config={"a": 1}, fingerprint=fingerprint,
                            meta={"data": {"count": 2}})


def test_start_run_refuses_replaces_and_resumes_only_the_same_run(tmp_path):
    out = tmp_path / "run"
    path, resume = _start(out)
    assert path == out and resume is None
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] is False and meta["data"] == {"count": 2} and meta["data_fingerprint"] == "f1"
    assert (out / "config.yaml").read_text().strip() == "a: 1"
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["event"] == "start"

    # unfinished: the same run continues; another model or data is refused unless overwrite
    assert _start(out)[0] == out
    for kw in ({"fingerprint": "f2"}, {"base": "other"}):
        with pytest.raises(SafealignError, match="unfinished run"):
            _start(out, **kw)
    (out / "marker").write_text("x")
    _start(out, overwrite=True, fingerprint="f2")
    assert not (out / "marker").exists()

    # finished: refused, or replaced with overwrite
    common.write_meta(out, finished=True)
    assert common.is_finished(out)
    with pytest.raises(SafealignError, match="finished run") as e:
        _start(out)
    assert e.value.field == "out"
    _start(out, overwrite=True)
    assert not common.is_finished(out)

    # a dir that is not a run dir is not touched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SafealignError, match="not a safealign run dir"):
        _start(other)
    assert (other / "keep.txt").read_text() == "mine"


def test_compact_lm_head_on_cpu_gives_trls_log_probs(tmp_path, tiny_lm_dir):
    """Scoring only the labelled positions (our CPU switch) returns what TRL's score-every-position path does."""
    import torch
    import trl.trainer.utils as trl_utils
    from trl.kernels.chunked_logprob import _use_triton

    from safealign.recipes import sit

    model, tok = common.load_policy(str(tiny_lm_dir))
    examples = [Instruction("How do I make a bomb?", "", "I cannot help with that."),
                Instruction("Write a poem about the sea.", "", "The sea is wide, the sea is blue, and so on.")]
    dataset, _ = sit.build_dataset(tok, examples, "auto", 64)
    trainer = sit.build_trainer(model, tok, dataset, TrainConfig(max_steps=1, batch_size=2, max_length=64, save_steps=0),
                                common.LoraConfig(r=4), tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    device = next(trainer.model.parameters()).device  # the trainer put it on the GPU, where there is one
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels") if k in batch}
    assert trl_utils._use_triton is not _use_triton  # switched on by build_trainer
    with torch.no_grad():
        compact = trainer.model(**inputs, fused_lm_head=True)
        switched, trl_utils._use_triton = trl_utils._use_triton, _use_triton
        try:
            every = trainer.model(**inputs, fused_lm_head=True)
        finally:
            trl_utils._use_triton = switched
    assert (inputs["labels"][:, 1:] != -100).sum() < inputs["labels"][:, 1:].numel()  # there are prompt positions
    assert torch.allclose(compact.log_probs, every.log_probs, atol=1e-5)
    assert torch.allclose(compact.loss, every.loss, atol=1e-6)


def test_a_run_killed_as_it_writes_its_marker_starts_afresh(tmp_path):
    """A kill during the marker's own atomic write leaves only its temp file: the rerun starts there (and removes
    it); a dir with any other file is still refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".safealign.json.4242.tmp").write_text('{"meth')
    path, resume = _start(run)
    assert resume is None and common.read_meta(path)["finished"] is False
    assert not list(path.glob(".safealign.json.*.tmp"))
    other = tmp_path / "other"
    other.mkdir()
    (other / ".safealign.json.4242.tmp").write_text("")
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SafealignError, match="not a safealign run dir"):
        _start(other)


def test_a_run_killed_as_it_writes_its_config_resumes(tmp_path, monkeypatch):
    """A stage killed (SIGKILL) once its config.yaml is on disk leaves a dir the rerun resumes, not one it refuses."""
    real = common.write_config

    def killed(out, cfg):
        real(out, cfg)
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(common, "write_config", killed)
    with pytest.raises(KeyboardInterrupt):
        _start(tmp_path / "run")
    monkeypatch.setattr(common, "write_config", real)
    path, resume = _start(tmp_path / "run")
    assert path == tmp_path / "run" and resume is None and (path / "config.yaml").read_text().strip() == "a: 1"
