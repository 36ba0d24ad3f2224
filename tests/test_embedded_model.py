"""Integration tests on the real embedded SmolLM2-135M-Instruct (marked slow; run by `make test`)."""

import pytest

from safealign.data import registry
from safealign.generate import GenParams, HFEngine, generate_to_file


@pytest.fixture(scope="module")
def smol():
    return HFEngine("smollm2-135m-instruct")


@pytest.mark.slow
def test_embedded_model_generates_on_a_benchmark(smol, tmp_path, data_dir):
    recs = registry.load_eval("i-cona", limit=3)
    gens = generate_to_file(smol, recs, GenParams(max_new_tokens=24), tmp_path / "g.jsonl")
    assert len(gens) == 3 and all(len(g.response.split()) >= 3 for g in gens)
    assert gens[0].model.startswith("smollm2-135m-instruct@")


@pytest.mark.slow
def test_batched_greedy_equals_one_at_a_time(smol):
    """Left padding, batches and continuous batching do not change greedy outputs in fp32 (in bf16 the rounding
    differs with the batch's shape, so answers may part after a few tokens: benchmarks/generation.py counts it)."""
    texts = ["What is the capital of France?", "Write one sentence about the sea and the wind and the sky.",
             "Hi", "List three fruits."]
    p = GenParams(max_new_tokens=16, batch_size=4, precision="fp32")
    batched = smol.generate(texts, p)
    single = [smol.generate([t], p)[0] for t in texts]
    assert batched == single
