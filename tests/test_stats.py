import math

import pytest

from safealign.stats import (accuracy, cohen_kappa, f1_score, median, paired_f1_delta, precision_recall_f1, rate, rate_with_ci,
                             wilson)


def test_wilson_matches_the_closed_form():
    lo, hi = wilson(7, 20)
    assert lo == pytest.approx(0.1812, abs=1e-4) and hi == pytest.approx(0.5671, abs=1e-4)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)


def test_wilson_edges_stay_in_range_and_widen_with_small_n():
    assert wilson(0, 10)[0] == 0.0 and 0.2 < wilson(0, 10)[1] < 0.35
    assert wilson(10, 10)[1] == 1.0 and 0.65 < wilson(10, 10)[0] < 0.8
    assert wilson(0, 0) == (0.0, 1.0)
    w_small, w_big = wilson(5, 10), wilson(500, 1000)
    assert (w_small[1] - w_small[0]) > (w_big[1] - w_big[0])
    assert wilson(7, 20, z=2.576)[0] < wilson(7, 20)[0]  # 99% is wider than 95%
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_rate_and_rate_with_ci():
    assert rate(3, 4) == 0.75 and rate(0, 0) is None
    r = rate_with_ci([True, False, True, True])
    assert r["k"] == 3 and r["n"] == 4 and r["rate"] == 0.75 and r["ci"] == list(wilson(3, 4))
    assert rate_with_ci([])["rate"] is None


def test_median_and_accuracy():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert median([]) is None and median([math.nan, 1.0]) == 1.0
    acc = accuracy([True, True, False], [True, False, False])
    assert acc["k"] == 2 and acc["n"] == 3


def test_f1_score_by_hand():
    gold = [True, True, True, False, False]
    assert f1_score(gold, [True, True, False, True, False]) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_score([False, False], [True, False]) is None  # no positive label


def test_cohen_kappa_by_hand():
    # 10 items: both yes on 4, both no on 4, a yes / b no on 1, a no / b yes on 1: observed 0.8; each says yes half
    # the time, so chance 0.5 and kappa (0.8 - 0.5) / 0.5 = 0.6
    a = [True] * 5 + [False] * 5
    b = [True] * 4 + [False] + [True] + [False] * 4
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(a, [not x for x in a]) == pytest.approx(-1.0)
    # a reader who always says yes agrees 70% with one who says yes 70% of the time, and no better than chance
    assert cohen_kappa([True] * 10, [True] * 7 + [False] * 3) == pytest.approx(0.0)
    assert cohen_kappa([], []) is None and cohen_kappa([True, True], [True, True]) is None
    with pytest.raises(ValueError):
        cohen_kappa([True], [])


def test_precision_recall_f1_counts_by_hand():
    d = precision_recall_f1([True, True, True, False, False], [True, True, False, True, False])
    assert (d["tp"], d["fp"], d["fn"]) == (2, 1, 1)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(2 / 3)
    none = precision_recall_f1([True, False], [False, False])  # nothing predicted positive
    assert none["precision"] is None and none["recall"] == 0.0 and none["f1"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        precision_recall_f1([True], [True, False])


def test_paired_f1_delta_sees_a_clear_gap_and_not_a_tie():
    gold = [i % 2 == 0 for i in range(200)]
    perfect, coin = list(gold), [i % 4 in (0, 1) for i in range(200)]  # coin: right on half the positives
    d = paired_f1_delta(gold, coin, perfect)
    assert d["b"] == 1.0 and d["a"] == pytest.approx(0.5) and d["delta"] == pytest.approx(0.5)
    assert 0 < d["ci"][0] <= 0.5 <= d["ci"][1]
    same = paired_f1_delta(gold, coin, coin)
    assert same["delta"] == 0 and same["ci"] == [0, 0]
    swapped = paired_f1_delta(gold, perfect, coin)
    assert swapped["delta"] == pytest.approx(-0.5) and swapped["ci"][1] < 0


def test_paired_f1_delta_resamples_whole_groups():
    # 10 prompts x 10 responses; b is right on every response of prompts 0-4 only: by prompt the interval is wider
    gold = [True, False] * 50
    a = [False] * 100
    b = [g if i < 50 else False for i, g in enumerate(gold)]
    by_row = paired_f1_delta(gold, a, b, n_boot=500)
    by_prompt = paired_f1_delta(gold, a, b, groups=[i // 10 for i in range(100)], n_boot=500)
    assert by_row["delta"] == by_prompt["delta"]
    assert by_prompt["ci"][1] - by_prompt["ci"][0] > by_row["ci"][1] - by_row["ci"][0]
    assert paired_f1_delta([False, False], [True, False], [False, False]) is None
    with pytest.raises(ValueError):
        paired_f1_delta([True], [True, False], [True])
