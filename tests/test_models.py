import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safealign import models
from safealign.errors import SafealignError


def test_format_prompt_chat_alpaca_raw(tiny_lm_dir):
    tok = models.load_tokenizer(str(tiny_lm_dir))
    chat = models.format_prompt(tok, "Hi there", template="auto")
    assert chat.startswith("<|im_start|>user\nHi there") and chat.endswith("<|im_start|>assistant\n")
    alp = models.format_prompt(tok, "Do X", "with Y", template="alpaca")
    assert "### Instruction:\nDo X" in alp and "### Input:\nwith Y" in alp and alp.endswith("### Response:\n")
    assert "### Input" not in models.format_prompt(tok, "Do X", template="alpaca")
    assert models.format_prompt(tok, "Do X", template="raw") == "Do X"
    tok.chat_template = None
    assert models.format_prompt(tok, "Do X").startswith("Below is an instruction")  # auto falls back to Alpaca
    with pytest.raises(SafealignError, match="template"):
        models.format_prompt(tok, "x", template="nope")


def test_resolve_model_errors_and_hub_ids(tmp_path):
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(SafealignError, match="does not exist"):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(SafealignError, match="not a model directory"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(SafealignError, match="GGUF file not found"):
        models.resolve_model(str(tmp_path / "x.gguf"))


def test_lora_adapter_dir_loads_merged_on_its_base(tiny_lm_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / "safealign.json").write_text(json.dumps({"base_model": str(tiny_lm_dir)}))
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        want = peft_model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)(ids).logits
    model, tok = models.load_causal_lm(str(adapter))
    with torch.no_grad():
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-4)
    assert tok.pad_token is not None and tok.padding_side == "left"
    assert models.fingerprint(str(adapter)) != models.fingerprint(str(tiny_lm_dir))
    assert models.fingerprint(str(tiny_lm_dir)) == models.fingerprint(str(tiny_lm_dir))


@pytest.mark.slow
def test_embedded_conversion_is_safe_under_concurrency(cache_dir):
    """Two processes convert the embedded GGUF at once into an empty cache: one valid folder results."""
    code = ("from safealign.models import resolve_model, load_causal_lm; p = resolve_model('smollm2-135m-instruct');"
            "m, t = load_causal_lm(p); print(p)")
    env = {**os.environ, "SAFEALIGN_CACHE": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:]
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    final = Path(paths.pop())
    assert models.verify_converted(final)
    leftovers = [d for d in final.parent.iterdir() if d != final]
    assert leftovers == []
    listed = {r["name"]: r for r in models.list_models()}
    assert str(final) == listed[models.EMBEDDED_NAME]["where"]


def test_inference_device_and_precision_follow_the_hardware_and_env(tiny_lm_dir, monkeypatch):
    import torch

    monkeypatch.setenv("SAFEALIGN_DEVICE", "cpu")
    monkeypatch.delenv("SAFEALIGN_PRECISION", raising=False)
    assert models.inference_device() == "cpu"
    model, _ = models.load_causal_lm(str(tiny_lm_dir))
    placed = models.for_inference(model)  # auto: bf16 only where the CPU has bf16 units
    p = next(placed.parameters())
    assert p.device.type == "cpu" and p.dtype == (torch.bfloat16 if models.cpu_bf16() else torch.float32)
    assert models.inference_precision() == ("bf16" if models.cpu_bf16() else "fp32")
    monkeypatch.setenv("SAFEALIGN_PRECISION", "fp32")
    assert next(models.for_inference(model).parameters()).dtype == torch.float32
    assert next(models.for_inference(model, precision="bf16").parameters()).dtype == torch.bfloat16
    with pytest.raises(SafealignError, match="unknown precision"):
        models.inference_precision("int4")
    monkeypatch.delenv("SAFEALIGN_DEVICE")
    assert models.inference_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_bf16_needs_bf16_units_not_only_onednn(monkeypatch):
    """oneDNN says it runs bf16 on any AVX512 CPU; without AVX512-BF16 / AMX-BF16 units it emulates it (slower than
    fp32), so ``cpu_bf16`` also asks the CPU. Checked against this machine's own flags, then for each kind of CPU
    by the capabilities torch reports (the hardware cannot be swapped in a test)."""
    import torch

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("SAFEALIGN_PRECISION", raising=False)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(cpuinfo.read_text().split())
        assert models.cpu_bf16_units() == bool({"avx512_bf16", "amx_bf16"} & flags)
        if not {"avx512_bf16", "amx_bf16"} & flags:
            assert models.cpu_bf16() is False and models.inference_precision("auto", "cpu") == "fp32"
    real = torch.cpu.get_capabilities()
    onednn = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for kind, expected in (({"avx512_bf16": False, "amx_bf16": False}, False),  # AVX2, or AVX512 without bf16
                           ({"avx512_bf16": True, "amx_bf16": False}, True),  # Cooper Lake, Zen 4/5
                           ({"avx512_bf16": True, "amx_bf16": True}, True)):  # Sapphire Rapids and later
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda kind=kind: {**real, **kind})
        assert models.cpu_bf16_units() is expected
        assert models.cpu_bf16() is (expected and onednn)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN capped below its bf16 instructions: emulated
    assert models.cpu_bf16() is False


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a GPU")
def test_generation_runs_on_the_gpu_in_bf16(tiny_lm_dir):
    import torch

    from safealign.generate import GenParams, HFEngine

    engine = HFEngine(str(tiny_lm_dir), show_progress=False)
    p = next(engine.model.parameters())
    assert p.device.type == "cuda" and p.dtype in (torch.bfloat16, torch.float16)
    outs = engine.generate(["hello there", "a longer prompt than the first one"], GenParams(max_new_tokens=5))
    assert len(outs) == 2 and all(len(o) == 1 and isinstance(o[0], str) for o in outs)
