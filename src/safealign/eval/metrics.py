"""Rates with 95% Wilson score intervals, and the small statistics the summaries share.

    wilson(7, 20)        # (0.181, 0.567): the 95% interval of 7 successes in 20 trials
    rate(7, 20)          # 0.35; rate(0, 0) is None (no items, no rate)
    rate_with_ci(flags)  # {"k", "n", "rate", "ci": [lo, hi]} of a list of booleans

The Wilson interval stays inside [0, 1] and is sensible at 0/n and n/n, where the normal
approximation collapses to a point; with n = 0 it is the uninformative (0.0, 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (z = 1.96: 95%)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(k: int, n: int) -> float | None:
    """``k / n``, or None when there is nothing to count (n = 0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return k / n if n else None


def rate_with_ci(flags: Iterable[bool], z: float = 1.96) -> dict[str, Any]:
    """The share of True in ``flags`` with its Wilson interval: {"k", "n", "rate", "ci": [lo, hi]}."""
    values = [bool(f) for f in flags]
    k, n = sum(values), len(values)
    lo, hi = wilson(k, n, z)
    return {"k": k, "n": n, "rate": rate(k, n), "ci": [lo, hi]}


def median(values: Sequence[float]) -> float | None:
    """The median of the finite values, or None when there are none."""
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def accuracy(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, Any]:
    """Agreement of ``predicted`` with ``gold`` (a judge against labels), with its Wilson interval."""
    if len(predicted) != len(gold):
        raise ValueError("predicted and gold differ in length")
    return rate_with_ci(p == g for p, g in zip(predicted, gold))
