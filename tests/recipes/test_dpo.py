"""DPO end to end on a tiny real LM (conftest) and, marked slow, a few steps on the embedded SmolLM2: identical
pairs dropped and long ones counted, parameters change, the loss is finite, the dir reloads and generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.errors import SafealignError
from safealign.recipes import dpo

ROOT = Path(__file__).resolve().parents[2]
SAFE = ["I'm sorry, but I cannot help with that request because it could cause harm.",
        "I can't assist with illegal activities. Please reach out to a professional instead."]
UNSAFE = ["Sure! Step one: open the file. Step two: read the lines. Step three: print them.",
          "Here is a simple recipe: mix flour, water and salt, then bake for twenty minutes."]
PROMPTS = ["How do I make a bomb?", "How can I steal a car?", "How do I hurt someone?"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/recipes/conftest.py


def write_pairs(path: Path, extra: list[dict] = ()) -> Path:
    rows = [{"prompt": p, "chosen": SAFE[i % 2], "rejected": UNSAFE[(i + j) % 2]}
            for i, p in enumerate(PROMPTS) for j in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path


def tiny_config(model: Path, data: Path, *overrides: str) -> dpo.Config:
    return load_config(dpo.Config, ROOT / "configs" / "dpo.yaml",
                       [f"model={model}", f"data={data}", "limit=0", "train.max_length=96", "train.batch_size=2",
                        "train.max_steps=4", "train.lr=5e-3", "train.warmup_ratio=0", "lora.r=8", *overrides])


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("setup", ["lora-precomputed", "full-reference-copy"])
def test_dpo_trains_saves_and_reloads(tmp_path, tiny_lm_dir, setup):
    import torch

    from safealign.generate import GenParams, HFEngine
    from safealign.models import load_causal_lm

    same = {"prompt": "Hi", "chosen": "Hello there.", "rejected": " Hello there. "}
    long = {"prompt": "Tell me a story.", "chosen": SAFE[0] * 6, "rejected": UNSAFE[0]}
    data = write_pairs(tmp_path / "pairs.jsonl", [same, long])
    extra = [] if setup == "lora-precomputed" else ["lora.enabled=false", "precompute_ref=no", "train.lr=1e-3"]
    out = dpo.run(tiny_config(tiny_lm_dir, data, *extra), tmp_path / "dpo")

    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["method"] == "dpo" and meta["steps"] == 4
    assert meta["data"]["dropped_identical"] == 1 and meta["data"]["count"] == 7
    ev = events(out)
    data_ev = next(e for e in ev if e.get("event") == "data")
    assert data_ev["dropped_identical"] == 1 and data_ev["truncated"] == 1 and data_ev["pairs"] == 7
    assert data_ev["precompute_ref"] is (setup == "lora-precomputed")
    steps = [e for e in ev if "loss" in e]
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor([e["loss"] for e in steps])))
    assert "rewards/margins" in steps[-1]
    assert not (out / "checkpoints").exists()

    base, _ = load_causal_lm(str(tiny_lm_dir))
    trained, _ = load_causal_lm(str(out))
    b, t = base.state_dict(), trained.state_dict()
    assert any(not torch.equal(b[k], t[k]) for k in b), "no parameter changed"
    reply = HFEngine(str(out), show_progress=False).generate(["How do I make a bomb?"], GenParams(max_new_tokens=4))
    assert isinstance(reply[0][0], str)


def test_bad_pairs_and_settings_are_user_errors(tmp_path, tiny_lm_dir):
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}) + "\n")
    with pytest.raises(SafealignError, match="no usable preference pairs"):
        dpo.run(tiny_config(tiny_lm_dir, same), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    for bad, field in (("beta=0", "beta"), ("precompute_ref=maybe", "precompute_ref"), ("train.beta=1", "train.beta")):
        with pytest.raises(SafealignError) as e:
            tiny_config(tiny_lm_dir, same, bad)
        assert e.value.field == field
    # YAML reads yes/no as booleans; both spellings work
    assert tiny_config(tiny_lm_dir, same, "precompute_ref=no").precompute_ref == "no"
    assert tiny_config(tiny_lm_dir, same, "precompute_ref=yes").precompute_ref == "yes"


def test_precompute_only_when_every_pair_is_seen():
    cfg = dpo.Config(limit=100)
    cfg.train.max_steps, cfg.train.batch_size = 10, 4
    assert not dpo.should_precompute(cfg, 100)  # 40 of 100 pairs seen: per-step reference is less work
    assert dpo.should_precompute(cfg, 100, processes=3)  # 120 seen
    cfg.train.max_steps = 0
    assert dpo.should_precompute(cfg, 100)  # a full epoch
    cfg.precompute_ref = "no"
    assert not dpo.should_precompute(cfg, 100)


@pytest.mark.slow
def test_a_few_dpo_steps_on_the_embedded_model(tmp_path, data_dir):
    """Real SmolLM2-135M-Instruct, real PKU-SafeRLHF pairs: 3 steps of 1 pair, then reload and answer."""
    import torch

    from safealign.generate import GenParams, HFEngine

    cfg = load_config(dpo.Config, ROOT / "configs" / "dpo.yaml",
                      ["limit=3", "train.max_steps=3", "train.batch_size=1", "train.max_length=96", "lora.r=4"])
    out = dpo.run(cfg, tmp_path / "dpo")
    steps = [e for e in events(out) if "loss" in e]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor([e["loss"] for e in steps])))
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["base_model"] == "smollm2-135m-instruct" and len(meta["data"]["indices"]) == 3
    reply = HFEngine(str(out), show_progress=False).generate(["How do I pick a lock?"], GenParams(max_new_tokens=8))
    assert reply[0][0].strip()


def test_on_policy_pairs_from_the_models_own_answers(tmp_path, tiny_lm_dir, monkeypatch):
    """``data: on-policy``: the tiny model's own answers become the rejected side of harmful pairs (chosen: the
    dataset's safe answer) and the chosen side of benign pairs (rejected: a refusal); the answers are generated
    once into the cache, and DPO trains on the pairs."""
    from safealign.generate import read_generations

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    harmful, benign = tmp_path / "harmful.jsonl", tmp_path / "benign.jsonl"
    harmful.write_text("".join(json.dumps({"prompt": p, "response": SAFE[i % 2]}) + "\n" for i, p in enumerate(PROMPTS)))
    benign.write_text("".join(json.dumps({"prompt": f"Name a fruit number {i}.", "response": f"Apple {i}."}) + "\n"
                              for i in range(4)))
    cfg = tiny_config(tiny_lm_dir, "on-policy", f"on_policy.harmful={harmful}", f"on_policy.benign={benign}",
                      "on_policy.n_harmful=2", "on_policy.n_benign=3", "on_policy.max_new_tokens=6",
                      "train.max_steps=2")
    pairs, selection = dpo.select_pairs(cfg)
    answers = {g.prompt: g.response for g in read_generations(selection["answers"])}
    assert len(answers) == 5 and selection["source"] == "on-policy"
    harm = [p for p in pairs if p.prompt in PROMPTS]
    assert len(harm) == 2 - selection["harmful_already_refused"]
    for p in harm:
        assert p.chosen in SAFE and p.rejected == answers[p.prompt]
    reference = {f"Name a fruit number {i}.": f"Apple {i}." for i in range(4)}
    for p in (p for p in pairs if p.prompt not in PROMPTS):
        if dpo._is_refusal(answers[p.prompt]):  # the model refused: the dataset's answer over its refusal
            assert (p.chosen, p.rejected) == (reference[p.prompt], answers[p.prompt])
        else:  # the model answered: its answer over a stock refusal
            assert p.chosen == answers[p.prompt] and p.rejected in dpo.STOCK_REFUSALS
    stamp = Path(selection["answers"]).stat().st_mtime_ns
    assert dpo.select_pairs(cfg)[0] == pairs and Path(selection["answers"]).stat().st_mtime_ns == stamp  # reused
    out = dpo.run(cfg, tmp_path / "dpo")
    meta = json.loads((out / "safealign.json").read_text())
    assert meta["finished"] and meta["data"]["source"] == "on-policy" and meta["data"]["count"] == len(pairs)
