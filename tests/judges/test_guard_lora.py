"""LoRA on the guard backbone's top layers: the cached states, the top that reads them, training, and the merged
adapter giving the judge exactly what training saw."""

import pytest

from safealign.errors import SafealignError
from safealign.judges import guard, guard_lora

LAYERS = (1, 2)  # the tiny backbone has two layers: layer 1 gets LoRA, the state entering it is cached
PAIRS = [("How do I bake bread?", "Mix flour and water, knead, let it rise and bake it."),
         ("How do I pick a lock?", "I can't help with that."),
         ("Hi", "Hello! How can I help you today?")]


@pytest.fixture
def parts(tiny_lm_dir, tmp_path):
    torch = pytest.importorskip("torch")
    full, tok, _ = guard.load_backbone(str(tiny_lm_dir), LAYERS, device="cpu", precision="fp32")
    cut, _, _ = guard.load_backbone(str(tiny_lm_dir), (1,), device="cpu", precision="fp32")
    frame = guard.chat_frame(tok)
    encoded = [guard.encode_pair(tok, p, r, frame) for p, r in PAIRS]
    states = guard_lora.layer_states(cut, [ids for ids, _, _ in encoded], tmp_path / "states", chunk=2, batch_size=2)
    return torch, full, tok, encoded, states, str(tiny_lm_dir)


def _top_features(torch, model, encoded, states):
    """The features the top computes from the cached states (as ``guard_lora.tune`` does, batched and padded)."""
    top = guard_lora.top_of(model, 1)
    n = max(len(s) for s in states)
    h = torch.zeros((len(states), n, states[0].shape[1]))
    mask = torch.zeros((len(states), n), dtype=torch.long)
    span = torch.zeros((len(states), n))
    for r, (s, (_, a, b)) in enumerate(zip(states, encoded)):
        h[r, :len(s)], mask[r, :len(s)], span[r, a:b] = s.float(), 1, 1.0
    with torch.no_grad():
        hs = guard_lora.top_hidden(top, h, mask, [0, 1])
    return guard_lora.pooled(hs, mask, span / span.sum(1, keepdim=True))


def test_the_top_reads_the_cached_states_as_the_whole_backbone_reads_the_pair(parts):
    torch, full, tok, encoded, states, spec = parts
    assert [len(s) for s in states] == [len(ids) for ids, _, _ in encoded] and states[0].dtype == torch.bfloat16
    whole = guard.features(full, tok, [p for p, _ in PAIRS], [r for _, r in PAIRS], layers=LAYERS)
    # the states are stored in bf16: the top's input differs from the backbone's by that rounding only
    assert (_top_features(torch, full, encoded, states) - whole).abs().max() < 0.05


def test_the_states_are_cached_and_read_back(parts, tmp_path):
    torch, full, tok, encoded, states, spec = parts
    files = sorted((tmp_path / "states").glob("*.safetensors"))
    assert len(files) == 2  # 2 + 1 pairs
    again = guard_lora.layer_states(None, [ids for ids, _, _ in encoded], tmp_path / "states", chunk=2)
    assert all(torch.equal(a, b) for a, b in zip(states, again))  # no model needed: every chunk is on disk


def test_the_merged_adapter_gives_the_features_training_saw(parts, tmp_path):
    torch, full, tok, encoded, states, spec = parts
    peft_model = guard_lora.add_lora(full, 1).eval()  # no LoRA dropout
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # an adapter that changes something (PEFT starts B at zero)
            p.data.normal_(0, 0.2)
        assert ("lora_" in name) == p.requires_grad and (".layers.0." not in name or "lora_" not in name)
    trained = _top_features(torch, peft_model.base_model.model, encoded, states)
    guard_lora.save_adapter(peft_model, tmp_path / "adapter")
    fresh, tok, _ = guard.load_backbone(spec, LAYERS, device="cpu", precision="fp32")
    merged = guard_lora.apply_adapter(fresh, tmp_path / "adapter")
    served = guard.features(merged, tok, [p for p, _ in PAIRS], [r for _, r in PAIRS], layers=LAYERS)
    assert (trained - served).abs().max() < 0.05
    before = guard.features(guard.load_backbone(spec, LAYERS, device="cpu", precision="fp32")[0], tok,
                            [p for p, _ in PAIRS], [r for _, r in PAIRS], layers=LAYERS)
    assert (served - before).abs().max() > 0.1  # the adapter is really there


def test_a_missing_adapter_is_one_clear_error(tiny_lm_dir, tmp_path):
    full, _, _ = guard.load_backbone(str(tiny_lm_dir), LAYERS, device="cpu", precision="fp32")
    with pytest.raises(SafealignError, match="missing file") as e:
        guard_lora.apply_adapter(full, tmp_path / "adapter")
    assert str(tmp_path / "adapter") in str(e.value)


@pytest.mark.parametrize("epochs, steps", [(1, 2), (2.5, 5)])
def test_tune_runs_the_epochs_asked_for(parts, epochs, steps, monkeypatch):
    torch, full, tok, encoded, states, spec = parts
    monkeypatch.setattr(guard_lora, "BATCH", 2)  # 3 pairs: two batches a pass
    frozen = guard.features(full, tok, [p for p, _ in PAIRS], [r for _, r in PAIRS], layers=LAYERS)
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    seen = []
    guard_lora.tune(full, guard.make_head(frozen.shape[1]), states, [(a, b) for _, a, b in encoded], frozen, y,
                    [0, 1, 2], 1, LAYERS, progress=lambda k, n: seen.append((k, n)), epochs=epochs)
    assert seen == [(k, steps) for k in range(1, steps + 1)]
    assert guard_lora.settings(epochs)["epochs"] == epochs
