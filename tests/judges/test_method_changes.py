"""A judge's change of safe % / refusal % from the base model to a method, beside the labels' change."""

import pytest

from safealign.judges import get_judge, method_changes
from safealign.judges.method_changes import BASE


def _row(model: str, prompt: str, response: str, safe, refusal):
    return {"prompt": prompt, "response": response, "safe": safe, "refusal": refusal,
            "source": f"smollm2-135m-instruct{model} greedy (64 new tokens), premise prompt written for safealign"}


ROWS = [  # four prompts; DPO makes p1 and p2 safe by the labels, p3 is unlabelled for DPO
    _row("", "p1", "b1", False, False), _row(" + DPO (make demo: on-policy pairs)", "p1", "d1", True, True),
    _row("", "p2", "b2", False, False), _row(" + DPO (make demo: on-policy pairs)", "p2", "d2", True, False),
    _row("", "p3", "b3", True, False), _row(" + DPO (make demo: on-policy pairs)", "p3", "d3", None, None),
    _row("", "p4", "b4", True, False), _row(" + DPO (make demo: on-policy pairs)", "p4", "d4", True, False),
    {"prompt": "p1", "response": "x", "safe": True, "refusal": True, "source": "hand-written"},
]


@pytest.mark.parametrize("source, model", [
    ("smollm2-135m-instruct greedy (64 new tokens), i-cona-70", "base"),
    ("smollm2-135m-instruct + SIT + RAFT (make demo: T=1, K=4) greedy (64 new tokens), i-cona-70", "SIT + RAFT"),
    ("smollm2-135m-instruct + DPO (make demo: on-policy pairs) greedy (64 new tokens), pku-safe-pairs:test prompt",
     "DPO"),
    ("smollm2-135m-instruct greedy (32 new tokens), i-cona-50", None),  # not the demo's length
    ("hand-written", None),
])
def test_model_name_reads_the_demo_models_from_the_source(source, model):
    assert method_changes.model_name(source) == model


def test_changes_are_paired_by_prompt_over_labelled_answers():
    answers = method_changes.demo_answers(ROWS)
    assert sorted(answers) == ["DPO", BASE] and sorted(answers[BASE]) == ["p1", "p2", "p3", "p4"]
    # a judge that calls every answer safe and none a refusal: its change is 0, the labels' +2/3 (p3 unlabelled)
    flat = {(m, p): {"safe": True, "refusal": False} for m in answers for p in answers[m]}
    got = method_changes.measure(answers, flat)["DPO"]
    assert got["safe"]["n"] == 3 and got["safe"]["labels"] == pytest.approx(2 / 3) and got["safe"]["judge"] == 0
    assert got["safe"]["bias"] == pytest.approx(-2 / 3) and got["safe"]["bias_ci"][1] < 0
    assert got["refusal"]["labels"] == pytest.approx(1 / 3) and got["refusal"]["bias"] == pytest.approx(-1 / 3)
    # a judge that reads the labels exactly has no bias, and an interval of width 0
    exact = {(m, p): {"safe": bool(r["safe"]), "refusal": bool(r["refusal"])} for m in answers
             for p, r in answers[m].items()}
    same = method_changes.measure(answers, exact)["DPO"]["safe"]
    assert same["bias"] == 0 and same["bias_ci"] == [0, 0] and same["labels"] == same["judge"]


def test_the_held_out_set_has_the_demo_models_answers_and_keywords_measures_them(data_dir):
    answers = method_changes.demo_answers()
    assert set(answers) == {BASE, "SIT", "SIT + RAFT", "DPO"} and all(len(v) >= 180 for v in answers.values())
    judge = get_judge("keywords")
    keys = [(m, p) for m in answers for p in answers[m]]
    found = judge.judge([p for _, p in keys], [answers[m][p]["response"] for m, p in keys])
    verdicts = {k: {"safe": v.safe, "refusal": v.refusal} for k, v in zip(keys, found)}
    got = method_changes.measure(answers, verdicts)
    assert set(got) == {"SIT", "SIT + RAFT", "DPO"} and all(c["safe"]["n"] >= 160 for c in got.values())
    # the same figures from the verdicts on a flat list of pairs, as the guard's training computes them
    again = method_changes.from_predictions([p for _, p in keys], [answers[m][p]["response"] for m, p in keys],
                                            [v.safe for v in found], [v.refusal for v in found])
    assert again == got
    # with the base model's answers missing, no change can be measured
    rest = [(m, p) for m, p in keys if m != BASE]
    assert method_changes.from_predictions([p for _, p in rest], [answers[m][p]["response"] for m, p in rest],
                                           [True] * len(rest), [False] * len(rest)) == {}
