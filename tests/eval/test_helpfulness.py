"""Helpfulness metrics against references: real rouge-score, sacrebleu, the embedded MiniLM embedder, and a
real (tiny) reward model through the `rm:` judge."""

import json

import pytest

from safealign.eval import helpfulness
from safealign.models import load_embedder
from safealign.records import Generation

REF_1 = "Water boils at 100 degrees Celsius at sea level."
REF_2 = "The capital of France is Paris, a city on the Seine."


def gens():
    return [
        Generation("h-0", "At what temperature does water boil?", REF_1, "m", reference=REF_1),  # exact copy
        Generation("h-1", "What is the capital of France?", "Paris is the capital of France.", "m", reference=REF_2),
        Generation("h-2", "At what temperature does water boil?", "I like green turtles and jazz.", "m", reference=REF_1),
        Generation("h-3", "Say hello.", "Hello!", "m"),  # no reference: reward only
    ]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_metrics_per_item_and_summary(tmp_path, embedder):
    s = helpfulness.evaluate(gens(), out_dir=tmp_path, embedder=embedder)
    items = {it["id"]: it for it in map(json.loads, (tmp_path / "helpful_items.jsonl").read_text().splitlines())}
    exact, close, off = items["h-0"], items["h-1"], items["h-2"]
    for name in ("rouge_1", "rouge_2", "rouge_l", "bleu", "semantic_similarity"):
        assert exact[name] == pytest.approx(1.0, abs=1e-5)
        assert off[name] < close[name] < 1.0, name
    assert off["rouge_1"] == 0.0 and off["semantic_similarity"] < 0.3 and close["semantic_similarity"] > 0.7
    assert set(items["h-3"]) == {"id", "sample"}  # nothing to compare with
    assert (s["n"], s["n_with_reference"], s["reward"], s["scorer"]) == (4, 3, None, None)
    assert s["rouge_1"] == pytest.approx(close["rouge_1"], abs=1e-6)  # the median of three
    for name in ("rouge_l", "bleu", "semantic_similarity"):
        lo, hi = s["ci"][name]
        assert lo <= s[name] <= hi
    assert 0 < s["bleu_corpus"] < 1 and "bertscore" not in s  # bert-score is not installed here


def test_reward_from_rm_judge(tiny_cls_dir, embedder):
    from safealign.judges import get_judge

    g = gens()
    s = helpfulness.evaluate(g, scorer=f"rm:{tiny_cls_dir}", embedder=embedder)
    direct = [v.score for v in get_judge(f"rm:{tiny_cls_dir}").judge([x.prompt for x in g], [x.response for x in g])]
    assert s["scorer"] == f"rm:{tiny_cls_dir}"
    assert s["reward"] == pytest.approx(helpfulness.median(direct), abs=1e-5)
    assert s["ci"]["reward"][0] <= s["reward"] <= s["ci"]["reward"][1]


def test_bootstrap_interval():
    assert helpfulness.bootstrap_median_ci([0.5]) == (0.5, 0.5)
    vals = [i / 99 for i in range(100)]
    lo, hi = helpfulness.bootstrap_median_ci(vals)
    assert 0.35 < lo < 0.5 < hi < 0.65  # the median's spread over 100 uniform values
    assert helpfulness.bootstrap_median_ci(vals) == (lo, hi)  # fixed seed
