"""Tests for tunesmith.eval.stats: bootstrap CIs, paired bootstrap and McNemar's exact test."""

from __future__ import annotations

import pytest

import tunesmith.eval.stats as stats
from tunesmith.errors import TunesmithError
from tunesmith.eval.metrics import bleu
from tunesmith.eval.stats import bootstrap_ci, mcnemar, paired_bootstrap

# ---------------------------------------------------------------- bootstrap_ci


def test_constant_values_give_degenerate_interval():
    ci = bootstrap_ci([0.75] * 50)
    assert ci["value"] == pytest.approx(0.75)
    assert ci["low"] == pytest.approx(0.75) and ci["high"] == pytest.approx(0.75)
    assert ci["n"] == 50


def test_binary_half_ci_width():
    # p = 0.5, n = 400: standard error sqrt(0.25/400) = 0.025, so the 95% CI is about
    # 0.5 +- 1.96*0.025 = [0.451, 0.549].
    ci = bootstrap_ci([0, 1] * 200)
    assert ci["value"] == 0.5
    assert 0.43 < ci["low"] < 0.47
    assert 0.53 < ci["high"] < 0.57


def test_deterministic_for_a_seed():
    values = [i % 7 / 7 for i in range(91)]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_blocked_resampling_matches_single_block(monkeypatch):
    values = [i % 5 for i in range(37)]
    whole = bootstrap_ci(values, n_resamples=300)
    monkeypatch.setattr(stats, "_MAX_BLOCK", 100)  # forces ~3 rows per block
    assert bootstrap_ci(values, n_resamples=300) == whole


def test_custom_statistic_over_items():
    values = [i % 5 for i in range(40)]
    # A Python mean over the same resampled indices gives the numpy path's answer.
    by_fn = bootstrap_ci(values, statistic=lambda xs: sum(xs) / len(xs), n_resamples=200)
    by_np = bootstrap_ci(values, n_resamples=200)
    for key in ("value", "low", "high"):
        assert by_fn[key] == pytest.approx(by_np[key])
    # Corpus BLEU bootstrapped by resampling (prediction, references) items: identical
    # corpora give BLEU 100 on every resample.
    items = [("the cat sat on the mat", ["the cat sat on the mat"]), ("a dog ran home", ["a dog ran home"])]
    ci = bootstrap_ci(items, statistic=lambda it: bleu([p for p, _ in it], [r for _, r in it]), n_resamples=20)
    assert ci["value"] == pytest.approx(100.0)
    assert ci["low"] == pytest.approx(100.0) and ci["high"] == pytest.approx(100.0)


def test_bad_arguments():
    with pytest.raises(TunesmithError):
        bootstrap_ci([])
    with pytest.raises(TunesmithError):
        bootstrap_ci([1.0], confidence=1.5)
    with pytest.raises(TunesmithError):
        bootstrap_ci([1.0], n_resamples=0)


# ------------------------------------------------------------ paired_bootstrap


def test_paired_bootstrap_detects_clear_difference():
    a = [1] * 30 + [0] * 70
    b = [1] * 70 + [0] * 30
    r = paired_bootstrap(a, b)
    assert r["diff"] == pytest.approx(0.4)  # 0.70 - 0.30
    assert r["p_value"] < 0.01  # no resample crosses zero: p = 2 * 1/1001
    assert r["p_value"] == pytest.approx(2 / 1001)
    assert 0.25 < r["low"] < 0.4 < r["high"] < 0.55
    assert r["n"] == 100


def test_paired_bootstrap_null_difference():
    a = [1, 0] * 50
    b = list(a)
    b[1] = 1  # one discordant item: diff = +0.01
    r = paired_bootstrap(a, b)
    assert r["diff"] == pytest.approx(0.01)
    # A resample holds that item zero times with probability (1 - 1/100)^100 ~ 0.37, so
    # about 37% of differences are 0 -> p ~ 2 * 0.37 ~ 0.73.
    assert r["p_value"] > 0.2
    assert r["low"] <= 0 <= r["high"]
    # Exactly equal systems: p = 1.
    assert paired_bootstrap(a, a)["p_value"] == 1.0


def test_paired_bootstrap_deterministic_and_sign():
    a = [0.2, 0.4, 0.1, 0.9, 0.5] * 10
    b = [x + 0.05 for x in a]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    # Swapping the systems flips the sign and keeps the p-value.
    ab, ba = paired_bootstrap(a, b), paired_bootstrap(b, a)
    assert ab["diff"] == pytest.approx(-ba["diff"])
    assert ab["p_value"] == pytest.approx(ba["p_value"])
    with pytest.raises(TunesmithError):
        paired_bootstrap([1, 0], [1])


# ---------------------------------------------------------------------- mcnemar


def test_mcnemar_hand_computed():
    # 1 item a-right/b-wrong (b = 1), 7 items a-wrong/b-right (c = 7), 4 concordant.
    a = [1] + [0] * 7 + [1, 1, 0, 0]
    b = [0] + [1] * 7 + [1, 1, 0, 0]
    r = mcnemar(a, b)
    assert (r["b"], r["c"]) == (1, 7)
    # n = 8 discordant: P(X <= 1) = (C(8,0) + C(8,1)) / 2^8 = 9/256; p = 2 * 9/256 = 0.0703125
    assert r["p_value"] == pytest.approx(0.0703125)
    assert r["method"] == "exact binomial"


def test_mcnemar_edge_cases():
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # no discordant pairs
    # b = 0, c = 5: p = 2 * C(5,0)/2^5 = 2/32 = 0.0625
    assert mcnemar([0] * 5, [1] * 5)["p_value"] == pytest.approx(0.0625)
    # b = c = 3: 2 * (1+6+15+20)/64 = 84/64 > 1 -> capped at 1
    assert mcnemar([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])["p_value"] == 1.0
    # bools and 0.0/1.0 floats are accepted; other values are not
    assert mcnemar([True, False], [1.0, 1.0])["c"] == 1
    with pytest.raises(TunesmithError, match="0/1"):
        mcnemar([0.5], [1])
    with pytest.raises(TunesmithError):
        mcnemar([1, 0], [1])


# ---------------------------------------------------------------- sign_flip_test, holm


def test_sign_flip_exact_p_by_hand():
    # differences b - a = [2, -1, 1]: the 8 sign assignments sum to 4, 2, 2, 0, 0, -2, -2, -4;
    # six reach |2| (the observed sum), so p = 6/8.
    r = stats.sign_flip_test([0, 1, 0], [2, 0, 1])
    assert r["p_value"] == pytest.approx(0.75) and r["diff"] == pytest.approx(2 / 3)
    # three +1 differences and a tie: only all-plus and all-minus reach |3| of 2^3 = 8 -> 0.25
    assert stats.sign_flip_test([0, 0, 0, 0], [1, 1, 1, 0])["p_value"] == pytest.approx(0.25)
    assert stats.sign_flip_test([0.3, 0.5], [0.3, 0.5])["p_value"] == 1.0


def test_sign_flip_equals_mcnemar_on_binary_scores():
    # on 0/1 scores the non-zero differences are the discordant pairs: the exact sign-flip test
    # is McNemar's exact binomial test (b = 1, c = 7: 2 * (1 + 8) / 2^8 = 0.0703125)
    a = [1] + [0] * 7 + [1, 0]
    b = [0] + [1] * 7 + [1, 0]
    assert stats.sign_flip_test(a, b)["p_value"] == pytest.approx(mcnemar(a, b)["p_value"]) == pytest.approx(0.0703125)


def test_sign_flip_random_assignments_never_give_zero_and_are_seeded():
    # 40 differences all +1: no random assignment reaches the observed sum except (with chance
    # 2^-39) all-plus or all-minus, so p = (0 + 1) / (999 + 1)
    r = stats.sign_flip_test([0] * 40, [1] * 40, n_resamples=999)
    assert r["p_value"] == pytest.approx(1 / 1000) and "999 random sign flips" in r["method"]
    a, b = [0.1 * (i % 7) for i in range(50)], [0.1 * (i % 5) for i in range(50)]
    assert stats.sign_flip_test(a, b, seed=3) == stats.sign_flip_test(a, b, seed=3)
    with pytest.raises(TunesmithError):
        stats.sign_flip_test([1, 2], [1])


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1 (0.5 x 2)
    assert stats.holm([0.04995]) == [0.04995]  # a family of one is not adjusted
    assert stats.holm([]) == [] and stats.holm([None]) == [None]
    # raw 0.04995 and 0.03 over 2 comparisons: 0.03 x 2 = 0.06 first, then max(0.06, 0.04995 x 1) = 0.06
    assert stats.holm([0.04995, 0.03]) == pytest.approx([0.06, 0.06])


def test_bias_corrected_interval_covers_distinct_n():
    """Resampling answers with replacement repeats some, which adds no new n-grams: distinct-n's
    plain percentile interval lies below the observed value; the bias-corrected one is shifted by
    (mean over resamples - observed) and covers it."""
    import numpy as np

    from tunesmith.eval.metrics import distinct_n
    from tunesmith.eval.stats import _resampled, bootstrap_ci

    texts = [f"answer number {i} says something {i % 3}" for i in range(30)]
    stat = lambda ps: distinct_n(ps, 2)  # noqa: E731
    plain = bootstrap_ci(texts, statistic=stat, n_resamples=200, seed=0)
    fixed = bootstrap_ci(texts, statistic=stat, n_resamples=200, seed=0, bias_corrected=True)
    assert plain["high"] < plain["value"]  # the defect: the interval misses the value
    assert fixed["low"] <= fixed["value"] <= fixed["high"]
    observed, stats = _resampled(texts, stat, 200, 0)
    bias = float(np.mean(stats)) - observed
    assert fixed["low"] == pytest.approx(plain["low"] - bias) and fixed["high"] == pytest.approx(plain["high"] - bias)
