import math

import pytest

from safealign.stats import accuracy, median, rate, rate_with_ci, wilson


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
