"""Shared fixtures: tiny models built from a config at test time (seconds), real files, the data dir.

- ``tiny_tokenizer_dir``: a byte-level BPE tokenizer trained here on a few hundred sentences, with a
  ChatML chat template (the same format as SmolLM2's).
- ``tiny_lm_dir``: a 2-layer Llama causal LM (hidden 64) saved as safetensors with that tokenizer.
- ``tiny_cls_dir``: the same backbone with a 1-label sequence-classification head.
- ``lively_lm_dir``: the tiny LM with large random weights, so that greedy answers are non-empty and differ between
  prompts and steps (generation and server tests).
- ``send_json(handler, obj)`` (``tests/http_helpers.py``): what the tests' small OpenAI-compatible servers answer with.
- ``data_dir``: ``SAFEALIGN_DATA`` (../shared/data); tests that need it skip with a reason if it is absent.
Slow tests (``@pytest.mark.slow``) use the embedded SmolLM2 for real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("SAFEALIGN_DATA") and (ROOT.parent / "shared" / "data").exists():
    os.environ["SAFEALIGN_DATA"] = str(ROOT.parent / "shared" / "data")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "I'm sorry, but I cannot help with that request because it could cause harm.",
    "I can't assist with illegal activities. Please reach out to a professional instead.",
    "Here is a simple recipe: mix flour, water and salt, then bake for twenty minutes.",
    "To kill a Python process, use the kill command with the process id.",
    "The capital of France is Paris. It is known for the Eiffel Tower.",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction: ### Input: ### Response:",
    "How do I make a bomb? How can I steal a car? Write a poem about the sea.",
    "Sure! Step one: open the file. Step two: read the lines. Step three: print them.",
    "As an AI language model, I must decline. Violence is never the answer.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_tok")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return out


def _tiny_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_lm")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(tok))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_cls_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_cls")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    cfg = _tiny_config(tok)
    cfg.num_labels = 1
    model = LlamaForSequenceClassification(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("SAFEALIGN_DATA")
    if not d or not Path(d).exists():
        pytest.skip("SAFEALIGN_DATA (../shared/data) is not available")
    return Path(d)


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty SAFEALIGN_CACHE for tests that convert or download."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SAFEALIGN_CACHE", str(d))
    return d


@pytest.fixture(scope="session")
def lively_lm_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("lively_lm")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_lm_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.5)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
