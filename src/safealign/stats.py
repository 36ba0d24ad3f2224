"""Rates, intervals and the small statistics every summary shares (the bottom layer: judges, eval, recipes and the
report all use this one module; it imports nothing of safealign).

    wilson(7, 20)              # (0.181, 0.567): the 95% interval of 7 successes in 20 trials
    rate(7, 20)                # 0.35
    rate_with_ci(flags)        # {"k", "n", "rate", "ci": [lo, hi]} of a list of booleans
    rate_ci(7, 20)             # the same from counts
    paired_delta(a_only, b_only, n)   # rate_b - rate_a of paired booleans, with its 95% interval
    paired_mean_delta(pairs)   # mean of b - a over paired numbers, with its 95% interval
    mcnemar_p(n01, n10)        # exact two-sided McNemar test
    precision_recall_f1(gold, pred)   # counts, precision, recall and F1 of the positive class
    f1_score(gold, pred)       # its F1 alone
    cohen_kappa(a, b)          # two readers' agreement on yes/no labels beyond chance
    paired_f1_delta(gold, a, b, groups)   # F1 of predictions b minus a's, with a bootstrap interval by group

One rule for nothing to count (n = 0): the rate is None and its interval the uninformative [0, 1] (Wilson at 0/0),
everywhere. The Wilson interval stays inside [0, 1] and is sensible at 0/n and n/n, where the normal approximation
collapses to a point.
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


def rate_ci(k: int, n: int, z: float = 1.96) -> dict[str, Any]:
    """``rate_with_ci`` from counts: {"k", "n", "rate", "ci": [lo, hi]} (rounded to 6 places)."""
    lo, hi = wilson(k, n, z)
    r = rate(k, n)
    return {"k": k, "n": n, "rate": None if r is None else round(r, 6), "ci": [round(lo, 6), round(hi, 6)]}


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None when there are no values."""
    v = list(values)
    return sum(v) / len(v) if v else None


def mcnemar_p(n01: int, n10: int) -> float:
    """Exact two-sided McNemar test (binomial on the discordant pairs)."""
    m = n01 + n10
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(n01, n10) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def paired_delta(a_only: int, b_only: int, n: int) -> tuple[float | None, list[float] | None]:
    """rate_b - rate_a on paired booleans, with a 95% Wald interval that uses the pairing (the variance of the
    per-item difference: (discordant - (b_only - a_only)^2 / n) / n^2). None, None when n = 0."""
    if not n:
        return None, None
    d = (b_only - a_only) / n
    se = math.sqrt(max(0.0, (a_only + b_only) - (b_only - a_only) ** 2 / n)) / n
    return round(d, 6), [round(d - 1.96 * se, 6), round(d + 1.96 * se, 6)]


def paired_mean_delta(pairs: Sequence[tuple[float, float]]) -> dict[str, Any] | None:
    """Over paired numbers (a, b): ``n``, ``mean_a``, ``mean_b``, ``delta`` (mean of b - a) and ``delta_ci`` (95%,
    normal approximation on the per-item differences). None with fewer than two pairs."""
    n = len(pairs)
    if n < 2:
        return None
    diffs = [b - a for a, b in pairs]
    d = sum(diffs) / n
    se = math.sqrt(sum((x - d) ** 2 for x in diffs) / (n - 1) / n)
    return {"n": n, "mean_a": round(sum(a for a, _ in pairs) / n, 6), "mean_b": round(sum(b for _, b in pairs) / n, 6),
            "delta": round(d, 6), "delta_ci": [round(d - 1.96 * se, 6), round(d + 1.96 * se, 6)]}


def bootstrap_median_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median (resampling with replacement); (nan, nan) with no values."""
    import random

    vals = list(values)
    if not vals:
        return (math.nan, math.nan)
    if len(vals) == 1:
        return (vals[0], vals[0])
    rng = random.Random(seed)
    n = len(vals)
    return _percentile_interval(sorted(median(rng.choices(vals, k=n)) for _ in range(n_boot)), level)


def _percentile_interval(ordered: Sequence[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap statistics sorted ascending (at least one)."""
    k = len(ordered)
    return (ordered[int(math.floor((1 - level) / 2 * k))], ordered[min(k - 1, int(math.ceil((1 + level) / 2 * k)) - 1)])


def precision_recall_f1(gold: Sequence[bool], pred: Sequence[bool]) -> dict[str, Any]:
    """``{"tp", "fp", "fn", "precision", "recall", "f1"}`` of the positive class: precision None when nothing is
    predicted positive, recall and F1 None when there is no positive label."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred must have the same length, got {len(gold)} and {len(pred)}")
    tp = sum(bool(g and p) for g, p in zip(gold, pred))
    fp = sum(bool(p and not g) for g, p in zip(gold, pred))
    fn = sum(bool(g and not p) for g, p in zip(gold, pred))
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fn else None}


def f1_score(gold: Sequence[bool], pred: Sequence[bool]) -> float | None:
    """F1 of the positive class; None when there is no positive label."""
    return precision_recall_f1(gold, pred)["f1"]


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two readers' yes/no labels of the same items: (observed agreement - chance agreement) /
    (1 - chance agreement), chance from each reader's own rate of yes. None with no items, or when chance agreement
    is 1 (both readers gave one and the same label to everything)."""
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    n = len(a)
    if not n:
        return None
    observed = sum(bool(x) == bool(y) for x, y in zip(a, b)) / n
    pa, pb = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def paired_f1_delta(gold: Sequence[bool], pred_a: Sequence[bool], pred_b: Sequence[bool],
                    groups: Sequence[Any] | None = None, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any] | None:
    """F1(b) - F1(a) of two classifiers' predictions on the same items, with a paired percentile-bootstrap interval
    that resamples whole ``groups`` (e.g. the prompt: several responses to one prompt are not independent; default:
    each item its own group). ``{"a", "b", "delta", "ci"}``; None when there is no positive label."""
    import random

    if len(gold) != len(pred_a) or len(gold) != len(pred_b):
        raise ValueError("gold and both predictions must have the same length")
    a, b = f1_score(gold, pred_a), f1_score(gold, pred_b)
    if a is None or b is None:
        return None
    by_group: dict[Any, list[int]] = {}
    for i, g in enumerate(groups if groups is not None else range(len(gold))):
        by_group.setdefault(g, []).append(i)
    clusters = list(by_group.values())
    rng = random.Random(seed)
    deltas = []
    for _ in range(n_boot):
        idx = [i for c in rng.choices(clusters, k=len(clusters)) for i in c]
        g = [gold[i] for i in idx]
        fa, fb = f1_score(g, [pred_a[i] for i in idx]), f1_score(g, [pred_b[i] for i in idx])
        if fa is not None and fb is not None:
            deltas.append(fb - fa)
    ci = [round(v, 6) for v in _percentile_interval(sorted(deltas), level)] if deltas else None
    return {"a": round(a, 6), "b": round(b, 6), "delta": round(b - a, 6), "ci": ci}
