"""Calibration by simulation (fixed seeds) of the verdict users get.

Every verdict simulation goes through :func:`pullbench.compare_batch` /
:func:`pullbench.decide_verdict` / :func:`pullbench.adjust_pvalues`, the functions
:func:`pullbench.compare_samples` and :func:`pullbench.analyze_grid` use for their verdicts
(test_stats.py checks they agree run by run); the bootstrap ratio CI is simulated with the batch
function ``compare_samples`` calls (checked bit for bit below). Data are skewed like timings:
lognormal with CV 3–10 % plus occasional slow outliers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pullbench import (
    adjust_pvalues,
    analyze_grid,
    compare_batch,
    compare_samples,
    decide_verdict,
    power_at_n,
)
from pullbench.stats._stats import (
    BOOTSTRAP_RATIO_CALIBRATED_FROM_N,
    _ratio_bootstrap_ci,
    _resample_means_batch,
)

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


# --- the bootstrap CI of the ratio of means (Comparison.ratio_bca_ci_low/high) -------------------

N_SIM_BOOT = 1000
BOOT_RESAMPLES = 999


def _ratio_boot_data(rng: np.random.Generator, n: int, paired: bool) -> tuple[np.ndarray, ...]:
    """Baseline/candidate timings whose true ratio of means is 0.95 (blocks shared when paired)."""
    a = timings(rng, (N_SIM_BOOT, n), cv=0.10, mean=10.0)
    b = timings(rng, (N_SIM_BOOT, n), cv=0.10, mean=9.5)
    if paired:
        block = np.exp(rng.normal(0, 0.1, (N_SIM_BOOT, n)))
        a, b = a * block, b * block
    return a, b


@pytest.mark.parametrize(("n", "paired", "seed"),
                         [(10, False, 21), (20, False, 22), (40, False, 23),
                          (10, True, 24), (20, True, 25), (40, True, 26)])
def test_bootstrap_ratio_ci_coverage_from_the_calibrated_n(n, paired, seed):
    """Plain BCa covered 0.915 (0.897 paired) at n = 10 here; the expanded BCa must not."""
    assert n >= BOOTSTRAP_RATIO_CALIBRATED_FROM_N
    a, b = _ratio_boot_data(np.random.default_rng(seed), n, paired)
    lo, hi = _ratio_bootstrap_ci(a, b, level=1 - ALPHA, paired=paired,
                                 n_resamples=BOOT_RESAMPLES, gen=np.random.default_rng(seed))
    cover = ((lo < 0.95) & (0.95 < hi)).mean()
    assert 0.93 <= cover <= 0.97, cover


@pytest.mark.parametrize("paired", [False, True])
def test_bootstrap_ratio_ci_is_the_one_compare_samples_reports(paired):
    """The simulated function is bit for bit the interval users see (same seeds -> same bounds)."""
    rng = np.random.default_rng(27)
    a, b = (v[0] for v in _ratio_boot_data(rng, 12, paired))
    c = compare_samples(a, b, rng=3, n_resamples=BOOT_RESAMPLES, paired=paired)
    gen_a, gen_b, gen_p, _ = np.random.default_rng(3).spawn(4)
    if paired:
        lo, hi = _ratio_bootstrap_ci(a[None], b[None], level=0.95, paired=True,
                                     n_resamples=BOOT_RESAMPLES, gen=gen_p)
    else:
        means_a = _resample_means_batch((a[None],), BOOT_RESAMPLES, gen_a)[0]
        means_b = _resample_means_batch((b[None],), BOOT_RESAMPLES, gen_b)[0]
        lo, hi = _ratio_bootstrap_ci(a[None], b[None], level=0.95, paired=False,
                                     means_a=means_a, means_b=means_b)
    assert (c.ratios.bca_ci_low, c.ratios.bca_ci_high) == (lo[0], hi[0])
    assert c.ratios.bca_calibrated


@pytest.mark.parametrize("paired", [False, True])
def test_bootstrap_ratio_ci_is_flagged_below_the_calibrated_n(paired):
    rng = np.random.default_rng(28)
    small = BOOTSTRAP_RATIO_CALIBRATED_FROM_N - 1
    a, b = (v[0] for v in _ratio_boot_data(rng, small, paired))
    c = compare_samples(a, b, rng=4, n_resamples=BOOT_RESAMPLES, paired=paired)
    kinds = [d.kind for d in c.diagnostics]
    assert "bootstrap_ratio_ci_uncalibrated" in kinds
    assert not c.ratios.bca_calibrated
    assert "not calibrated at this n: use the primary" in c.summary()
    primary = "geometric ratio" if paired else "Fieller"
    assert f"{primary} " in c.summary().split("(primary)")[0].splitlines()[-1]
    # from the calibrated n on: no flag, and the grid table says which rows are calibrated
    a2, b2 = (v[0] for v in _ratio_boot_data(rng, BOOTSTRAP_RATIO_CALIBRATED_FROM_N, paired))
    c2 = compare_samples(a2, b2, rng=4, n_resamples=BOOT_RESAMPLES, paired=paired)
    assert "bootstrap_ratio_ci_uncalibrated" not in [d.kind for d in c2.diagnostics]
    assert c2.ratios.bca_calibrated
    assert "not calibrated" not in c2.summary()
    df = pd.DataFrame({
        "arm": ["base"] * (2 * small + 1) + ["few"] * small + ["enough"] * (small + 1),
        "duration_s": np.concatenate([a2, a[:small], b, b2]),
    })
    g = analyze_grid(df, baseline="base", block=None, rng=5, n_resamples=BOOT_RESAMPLES)
    assert g.table.set_index("arm")["ratio_bca_calibrated"].to_dict() == {
        "few": False, "enough": True}
