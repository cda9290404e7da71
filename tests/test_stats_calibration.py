"""Calibration by simulation (fixed seeds) of the verdict users get.

Every simulation goes through :func:`pullbench.compare_batch` / :func:`pullbench.decide_verdict`
/ :func:`pullbench.adjust_pvalues`, the functions :func:`pullbench.compare_samples` and
:func:`pullbench.analyze_grid` use for their verdicts (test_stats.py checks they agree run by
run). Data are skewed like timings: lognormal with CV 3–10 % plus occasional slow outliers.
"""

from __future__ import annotations

import numpy as np
import pytest

from pullbench import adjust_pvalues, compare_batch, decide_verdict, power_at_n

N_SIM = 4000
ALPHA = 0.05


def timings(rng: np.random.Generator, shape: tuple[int, ...], *, cv: float, mean: float = 10.0,
            p_outlier: float = 0.02) -> np.ndarray:
    """Lognormal run times (mean ``mean``, CV ``cv``); a ``p_outlier`` share 10–30 % slower."""
    s = np.sqrt(np.log1p(cv**2))
    x = rng.lognormal(np.log(mean) - s**2 / 2, s, size=shape)
    slow = rng.random(shape) < p_outlier
    return np.where(slow, x * rng.uniform(1.1, 1.3, size=shape), x)


def _positive(verdict: np.ndarray) -> np.ndarray:
    return np.isin(verdict, ["faster", "slower"])


@pytest.mark.parametrize(
    ("n", "cv", "p_outlier", "seed"),
    [(10, 0.05, 0.02, 1), (20, 0.10, 0.02, 2), (30, 0.05, 0.02, 3), (10, 0.03, 0.0, 4),
     (50, 0.10, 0.05, 5)],
)
def test_aa_false_positive_rate_of_the_verdict(n, cv, p_outlier, seed):
    rng = np.random.default_rng(seed)
    a = timings(rng, (N_SIM, n), cv=cv, p_outlier=p_outlier)
    b = timings(rng, (N_SIM, n), cv=cv, p_outlier=p_outlier)
    rate = _positive(compare_batch(a, b, margin=0.02, alpha=ALPHA).verdict).mean()
    assert 0.03 <= rate <= 0.07, rate


def test_aa_false_positive_rate_paired_blocks_with_drift():
    rng = np.random.default_rng(6)
    block = np.exp(rng.normal(0, 0.1, (N_SIM, 20)))  # shared per-block cache/thermal state
    a = timings(rng, (N_SIM, 20), cv=0.05) * block
    b = timings(rng, (N_SIM, 20), cv=0.05) * block
    rate = _positive(compare_batch(a, b, paired=True, alpha=ALPHA).verdict).mean()
    assert 0.03 <= rate <= 0.07, rate


@pytest.mark.parametrize(("n", "seed"), [(20, 7), (30, 8)])
def test_ratio_ci_coverage(n, seed):
    rng = np.random.default_rng(seed)
    true_ratio = 0.95  # same outlier process in both arms: ratio of means is exactly 0.95
    a = timings(rng, (N_SIM, n), cv=0.10, mean=10.0)
    b = timings(rng, (N_SIM, n), cv=0.10, mean=9.5)
    r = compare_batch(a, b, alpha=ALPHA)
    cover = ((r.ratio_ci_low < true_ratio) & (true_ratio < r.ratio_ci_high)).mean()
    assert 0.93 <= cover <= 0.97, cover


def test_paired_ratio_ci_coverage():
    rng = np.random.default_rng(9)
    block = np.exp(rng.normal(0, 0.1, (N_SIM, 20)))
    a = timings(rng, (N_SIM, 20), cv=0.05, p_outlier=0.0) * block
    b = timings(rng, (N_SIM, 20), cv=0.05, mean=9.7, p_outlier=0.0) * block
    r = compare_batch(a, b, paired=True, alpha=ALPHA)
    cover = ((r.ratio_ci_low < 0.97) & (0.97 < r.ratio_ci_high)).mean()
    assert 0.93 <= cover <= 0.97, cover


def test_power_for_a_5_percent_effect_at_n_30_matches_analytic():
    rng = np.random.default_rng(10)
    cv, n = 0.10, 30
    a = timings(rng, (N_SIM, n), cv=cv, mean=10.0, p_outlier=0.0)
    b = timings(rng, (N_SIM, n), cv=cv, mean=9.5, p_outlier=0.0)
    simulated = (compare_batch(a, b, alpha=ALPHA).verdict == "faster").mean()
    analytic = power_at_n(n, delta=0.5, sd_a=cv * 10.0, sd_b=cv * 9.5, alpha=ALPHA)
    assert abs(simulated - analytic) <= 0.05, (simulated, analytic)


def test_holm_controls_familywise_error_over_a_20_arm_null_grid():
    rng = np.random.default_rng(11)
    n_grid, arms, n = 2000, 20, 20
    base = timings(rng, (n_grid, 1, n), cv=0.05)
    cand = timings(rng, (n_grid, arms, n), cv=0.05)
    r = compare_batch(np.broadcast_to(base, cand.shape), cand, alpha=ALPHA)
    verdict = decide_verdict(adjust_pvalues(r.p_value, "holm"),
                             adjust_pvalues(r.tost_p_value, "holm"), r.candidate_better, ALPHA)
    fwer = _positive(verdict).any(axis=1).mean()
    unadjusted = (r.p_value < ALPHA).any(axis=1).mean()
    assert fwer <= 0.05, fwer
    assert unadjusted > 0.3  # the problem Holm solves is real in this simulation


def test_equivalence_declared_for_true_zero_effect_with_enough_runs():
    rng = np.random.default_rng(12)
    a = timings(rng, (N_SIM, 300), cv=0.03)
    b = timings(rng, (N_SIM, 300), cv=0.03)
    r = compare_batch(a, b, margin=0.02, alpha=ALPHA)
    # equivalence whenever the test is not (falsely) significant: about 1 - alpha
    assert (r.verdict == "equivalent").mean() >= 0.90
    assert (r.tost_p_value < ALPHA).mean() >= 0.99


@pytest.mark.parametrize(("n", "paired"), [(10, False), (100, False), (300, False), (30, True)])
def test_equivalence_never_declared_for_a_true_5_percent_effect_at_2_percent_margin(n, paired):
    rng = np.random.default_rng(13 + n)
    a = timings(rng, (N_SIM, n), cv=0.05)
    b = timings(rng, (N_SIM, n), cv=0.05, mean=10.5)
    r = compare_batch(a, b, margin=0.02, alpha=ALPHA, paired=paired)
    assert (r.verdict == "equivalent").mean() <= ALPHA


def test_tost_size_at_the_margin_boundary():
    """A true effect exactly at the margin is declared equivalent at most alpha of the time."""
    rng = np.random.default_rng(14)
    a = timings(rng, (N_SIM, 200), cv=0.03, p_outlier=0.0)
    b = timings(rng, (N_SIM, 200), cv=0.03, mean=10.0 * 1.02, p_outlier=0.0)
    rate = (compare_batch(a, b, margin=0.02, alpha=ALPHA).tost_p_value < ALPHA).mean()
    assert rate <= ALPHA + 0.01, rate


def test_paired_power_matches_simulation_of_the_paired_verdict():
    rng = np.random.default_rng(15)
    n, sigma, effect = 20, 0.03, 0.02
    block = np.exp(rng.normal(0, 0.2, (N_SIM, n)))  # large drift between blocks
    a = 10 * block * np.exp(rng.normal(0, sigma, (N_SIM, n)))
    b = 10 * (1 - effect) * block * np.exp(rng.normal(0, sigma, (N_SIM, n)))
    simulated = (compare_batch(a, b, paired=True, alpha=ALPHA).verdict == "faster").mean()
    analytic = power_at_n(n, delta=-np.log1p(-effect), sd_a=np.sqrt(2) * sigma, alpha=ALPHA,
                          paired=True)
    assert abs(simulated - analytic) <= 0.05, (simulated, analytic)
