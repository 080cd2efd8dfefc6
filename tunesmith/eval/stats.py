"""Confidence intervals and paired significance tests for evaluation results.

Every regimen is reported with a 95% percentile-bootstrap confidence interval over items,
and two regimens evaluated on the same items are compared with a paired bootstrap (any
metric) or McNemar's exact test (0/1 per-item scores). All resampling is deterministic
for a given seed so reports are reproducible.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tunesmith.errors import TunesmithError

Statistic = Callable[[list[Any]], float]

# Resample in blocks of at most this many drawn indices, so a large eval set (10^5 items x
# 1000 resamples) does not allocate a 10^8-entry index matrix at once.
_MAX_BLOCK = 2_000_000


def _check(n: int, n_resamples: int, confidence: float) -> None:
    if n == 0:
        raise TunesmithError("cannot compute a confidence interval over zero items")
    if n_resamples < 1:
        raise TunesmithError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise TunesmithError(f"confidence must be between 0 and 1, got {confidence}")


def _index_blocks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of item indices drawn with replacement, `n_resamples` rows in total."""
    rng = np.random.default_rng(seed)
    rows_per_block = max(1, _MAX_BLOCK // n)
    done = 0
    while done < n_resamples:
        rows = min(rows_per_block, n_resamples - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def _resampled(values: Sequence[Any], statistic: Statistic | None, n_resamples: int, seed: int):
    """(observed statistic, array of the statistic over bootstrap resamples)."""
    n = len(values)
    if statistic is None:
        arr = np.asarray(values, dtype=float)
        observed = float(arr.mean())
        stats = np.concatenate([arr[idx].mean(axis=1) for idx in _index_blocks(n, n_resamples, seed)])
        return observed, stats
    items = list(values)
    observed = float(statistic(items))
    stats = [
        float(statistic([items[i] for i in row]))
        for idx in _index_blocks(n, n_resamples, seed)
        for row in idx
    ]
    return observed, np.asarray(stats, dtype=float)


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[Any],
    *,
    statistic: Statistic | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    bias_corrected: bool = False,
) -> dict[str, float]:
    """Percentile-bootstrap CI over items: {"value", "low", "high", "n"}.

    With `statistic=None`, `values` are per-item scores and the statistic is their mean
    (vectorised). Otherwise `values` may be any items and `statistic(list_of_items)` is
    recomputed on each resample, e.g. corpus BLEU over (prediction, references) pairs.
    `bias_corrected` shifts the interval by the bootstrap's estimate of the statistic's bias
    (mean over resamples minus the observed value): for statistics that resampling with
    replacement pushes one way, such as distinct-n (a repeated answer adds no new n-grams), whose
    plain percentile interval can miss the observed value altogether.
    """
    _check(len(values), n_resamples, confidence)
    observed, stats = _resampled(values, statistic, n_resamples, seed)
    low, high = _percentiles(stats, confidence)
    if bias_corrected:
        bias = float(stats.mean()) - observed
        low, high = low - bias, high - bias
    return {"value": observed, "low": low, "high": high, "n": len(values)}


def paired_bootstrap(
    a: Sequence[Any],
    b: Sequence[Any],
    *,
    statistic: Statistic | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of stat(b) - stat(a): {"diff", "low", "high", "p_value", "n"}.

    `a[i]` and `b[i]` are the two systems' results on item i; both are resampled with the
    same indices, which keeps the per-item pairing (and so the test's power). The two-sided
    p-value is 2 * (count + 1) / (n_resamples + 1), capped at 1, where count is the number
    of resampled differences on the other side of zero from the observed one (zero counts
    as the other side); an observed difference of exactly zero gives p = 1.
    """
    if len(a) != len(b):
        raise TunesmithError(f"paired_bootstrap needs the same items: {len(a)} vs {len(b)} results")
    _check(len(a), n_resamples, confidence)
    # Reusing the seed for both systems draws the very same index rows for a and b.
    obs_a, stats_a = _resampled(a, statistic, n_resamples, seed)
    obs_b, stats_b = _resampled(b, statistic, n_resamples, seed)
    diff = obs_b - obs_a
    diffs = stats_b - stats_a
    low, high = _percentiles(diffs, confidence)
    if diff > 0:
        count = int(np.sum(diffs <= 0))
    elif diff < 0:
        count = int(np.sum(diffs >= 0))
    else:
        count = n_resamples
    p_value = 1.0 if diff == 0 else min(1.0, 2.0 * (count + 1) / (n_resamples + 1))
    return {"diff": diff, "low": low, "high": high, "p_value": p_value, "n": len(a)}


def _as_binary(xs: Sequence[Any], name: str) -> list[int]:
    out = []
    for x in xs:
        if x not in (0, 1):  # accepts bools and 0.0 / 1.0
            raise TunesmithError(f"mcnemar: {name} must hold 0/1 per item, got {x!r}")
        out.append(int(x))
    return out


def mcnemar(a: Sequence[Any], b: Sequence[Any]) -> dict[str, Any]:
    """McNemar's exact test on paired 0/1 results: {"b", "c", "p_value", "method"}.

    b = items system a got right and system b got wrong, c = the reverse. Under the null
    the discordant pairs split Binomial(b + c, 1/2); p = min(1, 2 * P(X <= min(b, c))),
    and p = 1 when there are no discordant pairs.
    """
    if len(a) != len(b):
        raise TunesmithError(f"mcnemar needs the same items: {len(a)} vs {len(b)} results")
    xa, xb = _as_binary(a, "a"), _as_binary(b, "b")
    n10 = sum(1 for x, y in zip(xa, xb) if x == 1 and y == 0)
    n01 = sum(1 for x, y in zip(xa, xb) if x == 0 and y == 1)
    n = n10 + n01
    if n == 0:
        p_value = 1.0
    else:
        tail = sum(math.comb(n, i) for i in range(min(n10, n01) + 1))
        # Exact integers until the last step: int / int rounds correctly even for huge n.
        p_value = min(1.0, 2 * tail / 2**n)
    return {"b": n10, "c": n01, "p_value": p_value, "method": "exact binomial"}


def sign_flip_test(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Paired sign-flip permutation test of mean(b) - mean(a): {"diff", "p_value", "n", "method"}.

    Under the null the two systems are exchangeable on every item, so each per-item difference
    b[i] - a[i] is as likely with either sign. The two-sided p-value is the share of sign
    assignments whose |mean difference| reaches the observed one: exact (all 2^n assignments)
    for n <= 16 non-zero differences, else (count + 1) / (n_resamples + 1) over seeded random
    assignments, which never gives p = 0. No differences at all gives p = 1.
    """
    if len(a) != len(b):
        raise TunesmithError(f"sign_flip_test needs the same items: {len(a)} vs {len(b)} results")
    _check(len(a), n_resamples, 0.5)
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    diff = float(d.mean())
    nz = d[d != 0]  # zero differences are the same under every sign
    method = "paired sign-flip permutation"
    if nz.size == 0:
        return {"diff": diff, "p_value": 1.0, "n": len(a), "method": method + " (exact)"}
    # Compare sums, not means, with a relative tolerance: a flip that reproduces the observed
    # sum up to float rounding must count as reaching it.
    observed = abs(float(nz.sum())) * (1 - 1e-12)
    if nz.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** nz.size)[:, None] >> np.arange(nz.size)) & 1)
        p = float(np.mean(np.abs(signs @ nz) >= observed))
        return {"diff": diff, "p_value": p, "n": len(a), "method": method + " (exact)"}
    rng = np.random.default_rng(seed)
    rows_per_block, count, done = max(1, _MAX_BLOCK // nz.size), 0, 0
    while done < n_resamples:
        rows = min(rows_per_block, n_resamples - done)
        signs = rng.integers(0, 2, size=(rows, nz.size), dtype=np.int8) * 2 - 1
        count += int(np.sum(np.abs(signs @ nz) >= observed))
        done += rows
    p = (count + 1) / (n_resamples + 1)
    return {"diff": diff, "p_value": p, "n": len(a), "method": f"{method} ({n_resamples} random sign flips)"}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order (None stays None and is not counted).

    With m p-values sorted ascending p(1) <= ... <= p(m), the adjusted p(i) is
    max_{j <= i} min(1, (m - j + 1) * p(j)): rejecting every hypothesis whose adjusted p is
    below alpha keeps the family-wise error rate at alpha, with more power than Bonferroni.
    """
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    m, out, running = len(idx), list(p_values), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out
