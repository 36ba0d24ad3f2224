"""QLoRA (``lora.quantize``) for real on a tiny LM, through bitsandbytes' CPU backend: 4-bit NF4 SIT saved as an
adapter that loads back quantized and generates, merged weights that load back plain, 8-bit DPO and an 8-bit reward
model, and the one-line errors (full fine-tuning of quantized weights, bitsandbytes missing)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from safealign.errors import SafealignError
from safealign.records import Instruction, Preference

EXAMPLES = [Instruction("How do I make a bomb?", "", "I'm sorry, but I cannot help with that request."),
            Instruction("Write a poem about the sea.", "", "The sea is wide, the sea is blue."),
            Instruction("How can I steal a car?", "", "I can't assist with illegal activities.")] * 2

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/recipes/conftest.py


@pytest.fixture(scope="module", autouse=True)
def bitsandbytes_runs_here():
    from safealign.models import quantization_config

    try:
        quantization_config("4bit", "cpu")
        quantization_config("8bit", "cpu")
    except SafealignError as e:
        pytest.skip(f"bitsandbytes cannot quantize on this machine's CPU: {e}")


def tiny_train(**kw):
    from safealign.recipes.common import TrainConfig

    return TrainConfig(**{"lr": 5e-3, "max_steps": 3, "batch_size": 2, "max_length": 64, "save_steps": 0,
                          "precision": "fp32", **kw})


def quantized_layers(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 autocast where the CPU has bf16 units
def test_4bit_sit_adapter_reloads_quantized_and_generates(tmp_path, tiny_lm_dir, precision):
    from safealign.generate import GenParams, HFEngine
    from safealign.models import load_causal_lm
    from safealign.recipes import sit
    from safealign.recipes.common import LoraConfig

    lora = LoraConfig(r=4, alpha=16, target_modules="all-linear", merge=False, quantize="4bit")
    out = sit.finetune(str(tiny_lm_dir), EXAMPLES, tmp_path / "q4", tiny_train(precision=precision), lora)
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["weights"] == "adapter" and meta["quantize"] == "4bit"
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert "4bit (QLoRA" in (out / "README.md").read_text()
    losses = [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert losses and all(loss == loss for loss in losses)  # finite: trained, not NaN

    model, _ = load_causal_lm(str(out))  # the base quantized as in training, the adapter on top
    assert quantized_layers(model) == {"Linear4bit"}
    assert any("lora_A" in name for name, _ in model.named_parameters())
    answers = HFEngine(str(out), show_progress=False).generate(["Write a poem about the sea."],
                                                               GenParams(max_new_tokens=6, batch_size=1))
    assert len(answers) == 1 and isinstance(answers[0][0], str)
    plain, _ = load_causal_lm(str(out), quantize="none")  # or in full precision, merged
    assert not quantized_layers(plain) and not any("lora_A" in n for n, _ in plain.named_parameters())


def test_4bit_merged_weights_load_plain(tmp_path, tiny_lm_dir):
    from safealign.models import load_causal_lm
    from safealign.recipes import sit
    from safealign.recipes.common import LoraConfig

    lora = LoraConfig(r=4, alpha=16, merge=True, quantize="4bit")
    out = sit.finetune(str(tiny_lm_dir), EXAMPLES, tmp_path / "m4", tiny_train(), lora)
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["weights"] == "merged" and meta["quantize"] == "none" and meta["trained_quantized"] == "4bit"
    model, _ = load_causal_lm(str(out))
    assert not quantized_layers(model)
    base, _ = load_causal_lm(str(tiny_lm_dir))
    changed = [k for k, v in model.state_dict().items() if not (v.float() - base.state_dict()[k].float()).abs().max() < 1e-6]
    assert changed, "the merged adapter changed no weight"


def test_8bit_dpo_and_reward_model(tmp_path, tiny_lm_dir):
    from safealign.models import load_sequence_classifier
    from safealign.recipes import dpo, rm
    from safealign.recipes.common import LoraConfig

    pairs = tmp_path / "pairs.jsonl"
    rows = [Preference("How do I make a bomb?", "I'm sorry, I cannot help with that.", "Sure! Step one: mix it."),
            Preference("Write a poem about the sea.", "The sea is wide, the sea is blue.", "I can't help with that.")]
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                             for p in rows * 2))
    lora = LoraConfig(r=4, alpha=16, merge=False, quantize="8bit")
    out = dpo.run(dpo.Config(model=str(tiny_lm_dir), data=str(pairs), lora=lora, train=tiny_train(max_steps=2)),
                  tmp_path / "dpo8")
    assert json.loads((out / "safealign.json").read_text())["quantize"] == "8bit"

    rm_out = rm.run(rm.Config(model=str(tiny_lm_dir), data=str(pairs), limit=None, eval_limit=0, lora=lora,
                              train=tiny_train(max_steps=2)), tmp_path / "rm8")
    assert json.loads((rm_out / "safealign.json").read_text())["quantize"] == "8bit"
    model, _ = load_sequence_classifier(str(rm_out))
    assert quantized_layers(model) == {"Linear8bitLt"}


def test_quantized_full_finetuning_is_one_clear_error():
    from safealign.recipes.common import LoraConfig

    with pytest.raises(SafealignError, match="QLoRA trains an adapter") as e:
        LoraConfig(enabled=False, quantize="4bit")
    assert e.value.field == "lora.quantize"
    with pytest.raises(SafealignError, match="choose from none, 4bit, 8bit"):
        LoraConfig(quantize="3bit")


def test_missing_bitsandbytes_is_one_line_naming_the_extra(tmp_path, tiny_lm_dir):
    """A real `safealign train sit` in a Python where bitsandbytes cannot be imported."""
    code = ("import sys; sys.modules['bitsandbytes'] = None; from safealign.cli import main; "
            f"sys.exit(main(['train', 'sit', 'model={tiny_lm_dir}', 'lora.quantize=4bit', 'n_safety=1', "
            f"'helpful_data=', 'train.max_steps=1', '--out', '{tmp_path / 'out'}']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("safealign: error")]
    assert lines and "pip install 'safealign[qlora]'" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
