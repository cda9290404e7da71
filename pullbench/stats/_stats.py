"""Statistics that decide: Welch, bootstrap (BCa) CIs, TOST equivalence, paired analysis, grids.

Conventions (read these before interpreting a result)
------------------------------------------------------
- ``a`` is the **baseline**, ``b`` the **candidate**. Differences are ``b - a`` and ratios are
  ``b / a`` (``ratio_of_means = mean(b) / mean(a)``). For durations (``lower_is_better=True``)
  a ratio below 1 means the candidate is faster.
- **Verdict** (one of ``"faster"``, ``"slower"``, ``"equivalent"``, ``"inconclusive"``) about the
  candidate relative to the baseline:

  * ``faster`` / ``slower``: the primary two-sided test rejects "no difference" at ``alpha``;
    the direction follows the estimate and ``lower_is_better``.
  * ``equivalent``: not significant, and TOST at ``alpha`` shows the ratio inside the equivalence
    region (the ``1 - 2 alpha`` CI lies inside it).
  * ``inconclusive``: neither. "Not significant" is never reported as "the same".

  ``significant_but_small`` flags a significant result whose point estimate lies inside the
  equivalence region (real, but smaller than what the user declared to matter).
- **Equivalence margin** ``m`` (relative, e.g. 0.02): the equivalence region is
  ``1/(1+m) <= b/a <= 1+m`` -- "neither arm is more than ``m`` faster than the other", the
  symmetric (on a log scale) reading of hyperfine's "X ran 1.02 times faster than Y". For the
  unpaired Welch analysis this is the difference region ``-m*mean(b) <= b - a <= m*mean(a)``
  with plug-in means (so the binding bound is ``m`` times the faster arm's mean); for the paired
  analysis it is exactly ``|mean log(b/a)| <= log(1+m)``.
- **Primary test**: Welch's t-test on the raw values (independent runs), or, when runs were
  interleaved in complete blocks, the paired t-test on per-block log ratios (``log b_i - log a_i``),
  whose CI is a CI of the geometric mean of per-block ratios.
- Every bootstrap takes a seed: pass ``rng`` (int, ``numpy.random.Generator`` or None); the seed
  actually used is recorded in the result so the analysis can be rerun bit for bit.

The functions that make the decision (:func:`compare_batch`, :func:`decide_verdict`,
:func:`adjust_pvalues`) are vectorised over leading axes; :func:`compare_samples` and
:func:`analyze_grid` call exactly these, so the calibration tests check the verdict users get.
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from .._errors import StatsInputError
from ._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_POWER
from ._diagnostics import DegenerateSampleWarning, Diagnostic, diagnose, diagnose_pair
from ._power import minimum_detectable_effect, power_at_n, runs_needed, welch_df

__all__ = [
    "VERDICTS",
    "BatchComparison",
    "Comparison",
    "FactorialResult",
    "GridResult",
    "MedianEstimates",
    "PairedTest",
    "RatioEstimates",
    "SummaryComparison",
    "TostTest",
    "WelchTest",
    "adjust_pvalues",
    "analyze_grid",
    "bca_interval",
    "compare_all_pairs",
    "compare_batch",
    "compare_from_summary",
    "compare_samples",
    "decide_verdict",
    "factorial_anova",
]

logger = logging.getLogger(__name__)

VERDICTS = ("faster", "slower", "equivalent", "inconclusive")

# Smallest run count per arm (blocks when paired) from which the reported bootstrap CI of the
# ratio of means (expanded BCa) is checked to cover 93-97 % at 95 %
# (tests/test_stats_calibration.py); below it Comparison.ratios.bca_calibrated is False and a
# diagnostic points to the primary interval.
BOOTSTRAP_RATIO_CALIBRATED_FROM_N = 10

# Bound on (resamples x observations) held in memory at once by the bootstrap.
_BOOT_CHUNK_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------- helpers


def _resolve_seed(rng: np.random.Generator | int | None) -> int:
    """Turn the ``rng`` argument into a recordable integer seed."""
    if rng is None:
        return secrets.randbits(63)  # fresh OS entropy, recorded so the run can be repeated
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63 - 1))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return int(rng)
    raise StatsInputError(
        f"rng must be None, a non-negative int seed or a numpy.random.Generator, got {rng!r}"
    )


def _check_params(margin: float, alpha: float) -> None:
    if not (np.isfinite(margin) and 0 < margin < 1):
        raise StatsInputError(
            f"margin must be a relative effect in (0, 1), e.g. 0.02 for 2%, got {margin}"
        )
    if not 0 < alpha < 0.5:
        raise StatsInputError(f"alpha must be in (0, 0.5), got {alpha}")


def _as_sample(values: Any, name: str) -> np.ndarray:
    """Validate one sample of positive measurements; raise StatsInputError naming the problem."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise StatsInputError(f"{name}: values must be numbers ({exc})") from exc
    if x.ndim != 1:
        raise StatsInputError(f"{name}: expected a 1-D sequence of values, got shape {x.shape}")
    if x.size < 2:
        raise StatsInputError(
            f"{name}: need at least 2 runs to estimate variability, got {x.size}; add runs"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise StatsInputError(
            f"{name}: {int(bad.sum())} NaN/infinite values (first at position "
            f"{int(np.flatnonzero(bad)[0])}); drop failed runs (status != 'ok') before comparing"
        )
    if np.any(x <= 0):
        raise StatsInputError(
            f"{name}: {int((x <= 0).sum())} values are zero or negative (min {x.min():g}); "
            "durations and throughputs must be positive -- check the clock and the units"
        )
    return x


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def decide_verdict(
    p_value: Any,
    tost_p_value: Any,
    candidate_better: Any,
    alpha: float,
) -> np.ndarray:
    """The one verdict rule used everywhere (vectorised).

    Parameters
    ----------
    p_value : array_like
        Two-sided p-value of the primary test of "no difference" (possibly multiplicity-adjusted).
    tost_p_value : array_like
        TOST p-value for equivalence within the margin (possibly adjusted).
    candidate_better : array_like of bool
        True where the point estimate favours the candidate (lower duration when
        ``lower_is_better``).
    alpha : float
        Significance level.

    Returns
    -------
    numpy.ndarray of str
        ``"faster"`` / ``"slower"`` where ``p_value < alpha``; else ``"equivalent"`` where
        ``tost_p_value < alpha``; else ``"inconclusive"``. NaN p-values give ``"inconclusive"``.
    """
    p = np.asarray(p_value, dtype=float)
    tp = np.asarray(tost_p_value, dtype=float)
    better = np.asarray(candidate_better, dtype=bool)
    significant = p < alpha
    out = np.where(
        significant,
        np.where(better, "faster", "slower"),
        np.where(tp < alpha, "equivalent", "inconclusive"),
    )
    return out.astype(object) if out.ndim else out


def _candidate_better(ratio: Any, lower_is_better: bool) -> Any:
    """Whether the point estimate (ratio candidate/baseline) favours the candidate."""
    return np.less(ratio, 1) if lower_is_better else np.greater(ratio, 1)


def _significant_but_small(p_value: Any, ratio: Any, margin: float, alpha: float) -> Any:
    """Significant, with the ratio inside the equivalence region ``(1/(1+m), 1+m)``."""
    return (np.less(p_value, alpha) & np.greater(ratio, 1 / (1 + margin))
            & np.less(ratio, 1 + margin))


def adjust_pvalues(p_values: Any, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values along the last axis (vectorised).

    Parameters
    ----------
    p_values : array_like, shape (..., m)
        Raw p-values of one family per row. NaN entries are ignored (stay NaN, not counted).
    method : {"holm", "bh", "bonferroni", "none"}
        Holm step-down (controls the family-wise error rate), Benjamini–Hochberg step-up
        (controls the false discovery rate), Bonferroni, or no adjustment.

    Returns
    -------
    numpy.ndarray, shape (..., m)
        Adjusted p-values, same order as the input; agrees with
        ``statsmodels.stats.multitest.multipletests`` and ``scipy.stats.false_discovery_control``.

    Raises
    ------
    StatsInputError
        Unknown method or p-values outside [0, 1].
    """
    p = np.asarray(p_values, dtype=float)
    if method == "none":
        return p.copy()
    if method not in {"holm", "bh", "bonferroni"}:
        raise StatsInputError(
            f"unknown correction {method!r}; use 'holm', 'bh', 'bonferroni' or 'none'"
        )
    if np.any((p < 0) | (p > 1)):
        raise StatsInputError("p-values must lie in [0, 1]")
    if p.ndim == 0:
        return p.copy()
    nan = np.isnan(p)
    m = (~nan).sum(axis=-1, keepdims=True)
    if method == "bonferroni":
        return np.where(nan, np.nan, np.minimum(p * m, 1.0))
    # NaN sorts last; ranks among the non-NaN entries are 0..m-1.
    filled = np.where(nan, np.inf, p)
    order = np.argsort(filled, axis=-1, kind="stable")
    ps = np.take_along_axis(filled, order, axis=-1)
    rank = np.arange(p.shape[-1])
    if method == "holm":
        finite = np.isfinite(ps)
        adj = np.minimum((m - rank) * np.where(finite, ps, 0.0), 1.0)
        adj = np.where(finite, adj, -np.inf)
        adj = np.maximum.accumulate(adj, axis=-1)
    else:  # bh
        adj = ps * m / (rank + 1)
        adj = np.where(np.isfinite(ps), adj, np.inf)
        adj = np.minimum.accumulate(adj[..., ::-1], axis=-1)[..., ::-1]
        adj = np.minimum(adj, 1.0)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return np.where(nan, np.nan, out)


# ----------------------------------------------------------------------------- batch core


@dataclass(frozen=True, slots=True)
class BatchComparison:
    """Vectorised primary analysis of many (baseline, candidate) sample pairs.

    All attributes are arrays of the leading shape of the inputs. ``ratio`` and its CI refer to
    the primary estimand: the ratio of means ``mean(b)/mean(a)`` (Fieller CI, Welch df) for the
    unpaired analysis, the geometric mean of per-block ratios for the paired analysis.
    """

    test: str
    ratio: np.ndarray
    ratio_ci_low: np.ndarray
    ratio_ci_high: np.ndarray
    statistic: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    tost_p_value: np.ndarray
    candidate_better: np.ndarray
    verdict: np.ndarray
    significant_but_small: np.ndarray


def _fieller(mean_a: Any, va: Any, n_a: Any, mean_b: Any, vb: Any, n_b: Any,
             level: float) -> tuple[Any, Any, Any]:
    """Fieller CI for mean_b/mean_a with independent samples, unequal variances.

    ``va``, ``vb`` are squared standard errors. Degrees of freedom: Welch–Satterthwaite for
    ``mean_b - rho*mean_a`` at ``rho`` = the point estimate. Unbounded intervals give -inf/inf.
    """
    rho = mean_b / mean_a
    df = welch_df(rho**2 * va, vb, n_a, n_b)
    t = stats.t.ppf(0.5 + level / 2, df)
    a_coef = mean_a**2 - t**2 * va
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = mean_a**2 * vb + mean_b**2 * va - t**2 * va * vb
        root = t * np.sqrt(np.maximum(disc, 0))
        lo = (mean_a * mean_b - root) / a_coef
        hi = (mean_a * mean_b + root) / a_coef
    bounded = a_coef > 0
    lo = np.where(bounded, lo, -np.inf)
    hi = np.where(bounded, hi, np.inf)
    return lo, hi, df


@dataclass(frozen=True, slots=True)
class _WelchTost:
    """Welch's test, the Fieller ratio CI and TOST from per-arm moments (arrays or floats)."""

    difference: Any
    se: Any
    df: Any
    t: Any
    p_value: Any
    difference_ci_low: Any
    difference_ci_high: Any
    ratio: Any
    ratio_ci_low: Any
    ratio_ci_high: Any
    tost_p_value: Any


def _welch_tost(mean_a: Any, va: Any, n_a: Any, mean_b: Any, vb: Any, n_b: Any, *,
                margin: float, alpha: float) -> _WelchTost:
    """The one Welch/TOST kernel: raw runs (:func:`compare_batch`, :func:`compare_samples`) and
    summaries (:func:`compare_from_summary`) both come here.

    ``va``, ``vb`` are squared standard errors of the means (``var / n``). The test is of
    ``b - a``; the CI of the difference and Fieller's CI of ``mean_b / mean_a`` are at
    ``1 - alpha``; TOST tests the difference region ``-margin*mean_b <= b - a <= margin*mean_a``
    (the ratio region ``1/(1+margin) <= b/a <= 1+margin`` with plug-in means), as
    ``statsmodels.stats.weightstats.ttost_ind(b, a, ..., usevar="unequal")``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(va + vb)
        df = welch_df(va, vb, n_a, n_b)
        diff = mean_b - mean_a
        t = diff / se
        p = 2 * stats.t.sf(np.abs(t), df)
        tc = stats.t.ppf(1 - alpha / 2, df)
        lo, hi, _ = _fieller(mean_a, va, n_a, mean_b, vb, n_b, 1 - alpha)
        p_low = stats.t.sf((diff + margin * mean_b) / se, df)
        p_high = stats.t.cdf((diff - margin * mean_a) / se, df)
        return _WelchTost(
            difference=diff, se=se, df=df, t=t, p_value=p, difference_ci_low=diff - tc * se,
            difference_ci_high=diff + tc * se, ratio=mean_b / mean_a, ratio_ci_low=lo,
            ratio_ci_high=hi, tost_p_value=np.maximum(p_low, p_high),
        )


def _welch_moments(x: np.ndarray, y: np.ndarray, *, margin: float, alpha: float) -> _WelchTost:
    """:func:`_welch_tost` of raw runs along the last axis."""
    n_a, n_b = x.shape[-1], y.shape[-1]
    return _welch_tost(x.mean(axis=-1), x.var(axis=-1, ddof=1) / n_a, n_a,
                       y.mean(axis=-1), y.var(axis=-1, ddof=1) / n_b, n_b,
                       margin=margin, alpha=alpha)


def compare_batch(
    a: Any,
    b: Any,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    lower_is_better: bool = True,
    paired: bool = False,
) -> BatchComparison:
    """Primary test, ratio CI, TOST and verdict for many experiments at once.

    Parameters
    ----------
    a, b : array_like, shape (..., n_a) and (..., n_b)
        Baseline and candidate runs along the last axis (positive, finite). With ``paired=True``
        the shapes must be equal and position ``i`` of ``a`` and ``b`` is one block.
    margin : float
        Relative equivalence margin (0.02 = 2 %); region ``1/(1+m) <= b/a <= 1+m``.
    alpha : float
        Significance level for the two-sided test and for each one-sided TOST test.
    lower_is_better : bool
        True for durations, False for throughputs.
    paired : bool
        Use the paired t-test on log ratios instead of Welch.

    Returns
    -------
    BatchComparison

    Raises
    ------
    StatsInputError
        Bad margin/alpha, fewer than 2 runs, or mismatched paired shapes.

    Notes
    -----
    This is the function :func:`compare_samples` and :func:`analyze_grid` use for their
    verdicts; it performs no input-value validation (NaN propagates to an "inconclusive"
    verdict), which the callers do.
    """
    _check_params(margin, alpha)
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape[-1] < 2 or y.shape[-1] < 2:
        raise StatsInputError("need at least 2 runs per arm")
    log_m = math.log1p(margin)
    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            if x.shape != y.shape:
                raise StatsInputError(
                    f"paired analysis needs one baseline and one candidate run per block; "
                    f"got shapes {x.shape} and {y.shape}"
                )
            d = np.log(y) - np.log(x)
            n = d.shape[-1]
            mean = d.mean(axis=-1)
            se = d.std(axis=-1, ddof=1) / math.sqrt(n)
            df = np.full(mean.shape, n - 1.0)
            t = mean / se
            p = 2 * stats.t.sf(np.abs(t), df)
            tc = stats.t.ppf(1 - alpha / 2, df)
            ratio, lo, hi = np.exp(mean), np.exp(mean - tc * se), np.exp(mean + tc * se)
            p_low = stats.t.sf((mean + log_m) / se, df)
            p_high = stats.t.cdf((mean - log_m) / se, df)
            tost = np.maximum(p_low, p_high)
            test = "paired_log_t"
        else:
            w = _welch_moments(x, y, margin=margin, alpha=alpha)
            t, df, p, tost = w.t, w.df, w.p_value, w.tost_p_value
            ratio, lo, hi = w.ratio, w.ratio_ci_low, w.ratio_ci_high
            test = "welch"
    better = _candidate_better(ratio, lower_is_better)
    verdict = decide_verdict(p, tost, better, alpha)
    small = _significant_but_small(p, ratio, margin, alpha)
    return BatchComparison(
        test=test, ratio=ratio, ratio_ci_low=lo, ratio_ci_high=hi, statistic=t, df=df,
        p_value=p, tost_p_value=tost, candidate_better=better, verdict=verdict,
        significant_but_small=small,
    )


# ----------------------------------------------------------------------------- bootstrap


def _row_quantiles(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row quantile ``q[i]`` of ``sorted_rows[i]`` (linear interpolation, as np.percentile)."""
    n_cols = sorted_rows.shape[1]
    pos = np.clip(q, 0.0, 1.0) * (n_cols - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_cols - 1)
    w = pos - lo
    rows = np.arange(sorted_rows.shape[0])
    out: np.ndarray = sorted_rows[rows, lo] * (1 - w) + sorted_rows[rows, hi] * w
    return out


def _bca_batch(
    theta_hat: np.ndarray,
    theta_star: np.ndarray,
    jackknife: Sequence[np.ndarray],
    confidence_level: float,
    expansion: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """BCa intervals for a batch: ``theta_hat`` (S,), ``theta_star`` (S, B) finite, jackknife
    arrays (S, n_j). ``expansion`` (S,) multiplies the normal quantile (1 = plain BCa).
    Rows whose bootstrap distribution is degenerate get NaN bounds."""
    theta_hat = np.asarray(theta_hat, dtype=float)
    theta_star = np.asarray(theta_star, dtype=float)
    below = (theta_star < theta_hat[:, None]).sum(axis=1)
    at_or_below = (theta_star <= theta_hat[:, None]).sum(axis=1)
    z0 = special.ndtri((below + at_or_below) / (2 * theta_star.shape[1]))
    nums = np.zeros(theta_hat.shape)
    dens = np.zeros(theta_hat.shape)
    for jk in jackknife:
        jk = np.asarray(jk, dtype=float)
        n = jk.shape[1]
        u = (n - 1) * (jk.mean(axis=1, keepdims=True) - jk)
        nums += (u**3).sum(axis=1) / n**3
        dens += (u**2).sum(axis=1) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a_hat = np.where(dens > 0, nums / (6 * np.where(dens > 0, dens, 1.0) ** 1.5), 0.0)
        z = special.ndtri((1 - confidence_level) / 2) * np.asarray(expansion, dtype=float)
        bounds = []
        for zz in (z, -z):
            num = z0 + zz
            bounds.append(special.ndtr(z0 + num / (1 - a_hat * num)))
    ok = np.isfinite(bounds[0]) & np.isfinite(bounds[1])
    srt = np.sort(theta_star, axis=1)
    lo = np.where(ok, _row_quantiles(srt, np.where(ok, bounds[0], 0.0)), np.nan)
    hi = np.where(ok, _row_quantiles(srt, np.where(ok, bounds[1], 1.0)), np.nan)
    return lo, hi


def bca_interval(
    theta_hat: float,
    theta_star: np.ndarray,
    jackknife: Sequence[np.ndarray],
    *,
    confidence_level: float = 0.95,
    expansion: float = 1.0,
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) bootstrap interval from precomputed replicates.

    Parameters
    ----------
    theta_hat : float
        The statistic on the original data.
    theta_star : ndarray, shape (B,)
        Bootstrap replicates of the statistic.
    jackknife : sequence of ndarray
        For each sample, the statistic with each observation of that sample left out (shape
        (n_j,)); the acceleration is estimated from them as in ``scipy.stats.bootstrap``
        (Efron & Tibshirani 1993, eq. 14.15, multi-sample form;
        scipy/scipy:scipy/stats/_resampling.py).
    confidence_level : float
        Two-sided coverage.
    expansion : float
        Factor (>= 1) applied to the normal quantile ``z_{alpha/2}`` before the BCa adjustment:
        the small-sample expansion of Hesterberg (2015, "What teachers should know about the
        bootstrap", The American Statistician 69(4), "expanded percentile interval"), which
        replaces ``z`` by ``sqrt(n/(n-1)) t_{alpha/2, n-1}``. 1 gives plain BCa.

    Returns
    -------
    (float, float)
        Interval bounds; ``(nan, nan)`` when the bootstrap distribution is degenerate (all
        replicates on one side of ``theta_hat``).
    """
    theta_star = np.asarray(theta_star, dtype=float)
    theta_star = theta_star[np.isfinite(theta_star)]
    if theta_star.size == 0:
        return (math.nan, math.nan)
    jk_rows = [np.asarray(jk, dtype=float)[None] for jk in jackknife]
    lo, hi = _bca_batch(np.array([theta_hat], dtype=float), theta_star[None], jk_rows,
                        confidence_level, expansion)
    return (float(lo[0]), float(hi[0]))


@dataclass(frozen=True, slots=True)
class _Resampled:
    """Bootstrap replicates of a sample's mean and median, plus jackknife leave-one-out values."""

    means: np.ndarray
    medians: np.ndarray
    jack_means: np.ndarray
    jack_medians: np.ndarray


def _jackknife_medians(x: np.ndarray) -> np.ndarray:
    s = np.sort(x)
    n = s.size
    rank = np.empty(n, dtype=int)
    rank[np.argsort(x, kind="stable")] = np.arange(n)
    # Median of n-1 values after removing the element of rank r.
    m = n - 1
    out = np.empty(n)
    if m % 2 == 1:
        k = m // 2  # index in the reduced sorted array
        out[:] = np.where(rank <= k, s[min(k + 1, n - 1)], s[k])
    else:
        k1, k2 = m // 2 - 1, m // 2
        v1 = np.where(rank <= k1, s[k1 + 1], s[k1])
        v2 = np.where(rank <= k2, s[min(k2 + 1, n - 1)], s[k2])
        out[:] = (v1 + v2) / 2
    return out


def _resample(x: np.ndarray, n_resamples: int, gen: np.random.Generator) -> _Resampled:
    n = x.size
    means = np.empty(n_resamples)
    medians = np.empty(n_resamples)
    rows = max(1, _BOOT_CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        sample = x[gen.integers(0, n, size=(stop - start, n))]
        means[start:stop] = sample.mean(axis=1)
        medians[start:stop] = np.median(sample, axis=1)
    total = x.sum()
    jack_means = (total - x) / (n - 1)
    return _Resampled(means, medians, jack_means, _jackknife_medians(x))


def _resample_means_batch(samples: Sequence[np.ndarray], n_resamples: int,
                          gen: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap means, shape (S, n_resamples), of each (S, n) array in ``samples``.

    All arrays in ``samples`` are resampled with the same indices (pairs kept together); pass one
    array per call for independent resampling.
    """
    n_rows, n = samples[0].shape
    out = [np.empty((n_rows, n_resamples)) for _ in samples]
    per_row = n_resamples * n * len(samples)
    if per_row <= _BOOT_CHUNK_ELEMENTS:
        k = max(1, _BOOT_CHUNK_ELEMENTS // per_row)
        for s0 in range(0, n_rows, k):
            s1 = min(n_rows, s0 + k)
            ii = gen.integers(0, n, size=(s1 - s0, n_resamples, n))
            rows = np.arange(s0, s1)[:, None, None]
            for o, smp in zip(out, samples, strict=True):
                o[s0:s1] = smp[rows, ii].mean(axis=2)
        return out
    step = max(1, _BOOT_CHUNK_ELEMENTS // (n * len(samples)))
    for r in range(n_rows):
        for start in range(0, n_resamples, step):
            stop = min(n_resamples, start + step)
            ii = gen.integers(0, n, size=(stop - start, n))
            for o, smp in zip(out, samples, strict=True):
                o[r, start:stop] = smp[r][ii].mean(axis=1)
    return out


def _ratio_expansion(x: np.ndarray, y: np.ndarray, level: float, paired: bool) -> np.ndarray:
    """Small-sample expansion factor of the normal quantile for the ratio of means, shape (S,).

    Hesterberg's expanded interval replaces ``z`` by ``sqrt(n/(n-1)) t_{n-1}``: the bootstrap
    variance of a mean is ``(n-1)/n`` times the unbiased one, and ``t`` replaces ``z``. For two
    independent samples the delta-method terms of ``log(mean b / mean a)`` are combined: the
    factor is ``sqrt(unbiased var / bootstrap var) * t_df / z`` with Welch's df.
    """
    zc = float(special.ndtri(0.5 + level / 2))
    if paired:
        n = x.shape[1]
        f = math.sqrt(n / (n - 1)) * float(stats.t.ppf(0.5 + level / 2, n - 1)) / zc
        return np.full(x.shape[0], f)
    n_a, n_b = x.shape[1], y.shape[1]
    ta = x.var(axis=1, ddof=1) / (n_a * x.mean(axis=1) ** 2)
    tb = y.var(axis=1, ddof=1) / (n_b * y.mean(axis=1) ** 2)
    se2 = ta + tb
    boot2 = ta * (n_a - 1) / n_a + tb * (n_b - 1) / n_b
    ok = se2 > 0
    safe_se2 = np.where(ok, se2, 1.0)
    df = safe_se2**2 / (ta**2 / (n_a - 1) + tb**2 / (n_b - 1) + np.where(ok, 0.0, 1.0))
    f = np.sqrt(safe_se2 / np.where(ok, boot2, 1.0)) * stats.t.ppf(0.5 + level / 2, df) / zc
    return np.where(ok, f, 1.0)


def _ratio_bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    *,
    level: float,
    paired: bool,
    n_resamples: int = 9999,
    gen: np.random.Generator | None = None,
    means_a: np.ndarray | None = None,
    means_b: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Expanded-BCa CI of ``mean(y)/mean(x)`` for a batch: ``x`` (S, n_a), ``y`` (S, n_b).

    The interval :class:`Comparison` reports as ``ratios.bca_ci_low/high``: BCa with the
    small-sample expansion of :func:`_ratio_expansion` (plain BCa under-covers at small n:
    0.915 at n = 10 on lognormal CV 10 % timings with 2 % outliers, 0.897 paired). Pairs are
    resampled jointly when ``paired``; otherwise precomputed bootstrap means (S, B) of either
    arm may be passed (shared baseline replicates), else they are drawn from ``gen``.
    """
    n_a, n_b = x.shape[1], y.shape[1]
    ma, mb = x.mean(axis=1), y.mean(axis=1)
    jk_a = (x.sum(axis=1, keepdims=True) - x) / (n_a - 1)
    jk_b = (y.sum(axis=1, keepdims=True) - y) / (n_b - 1)
    if paired:
        if gen is None:
            raise ValueError("gen is required to resample pairs")
        den, num = _resample_means_batch((x, y), n_resamples, gen)
        jackknife = [jk_b / jk_a]
    else:
        if means_a is None or means_b is None:
            if gen is None:
                raise ValueError("gen is required when bootstrap means are not given")
            if means_a is None:
                means_a = _resample_means_batch((x,), n_resamples, gen)[0]
            if means_b is None:
                means_b = _resample_means_batch((y,), n_resamples, gen)[0]
        den, num = means_a, means_b
        jackknife = [mb[:, None] / jk_a, jk_b / ma[:, None]]
    return _bca_batch(mb / ma, num / den, jackknife, level,
                      _ratio_expansion(x, y, level, paired))


def _hodges_lehmann(x: np.ndarray, y: np.ndarray, level: float,
                    gen: np.random.Generator) -> tuple[float, float, float, bool]:
    """Hodges–Lehmann shift (median of y_j - x_i) with the Moses distribution-free CI."""
    n_a, n_b = x.size, y.size
    total = n_a * n_b
    approx = total > 4_000_000
    if approx:
        diffs = y[gen.integers(0, n_b, 2_000_000)] - x[gen.integers(0, n_a, 2_000_000)]
    else:
        diffs = np.subtract.outer(y, x).ravel()
    diffs.sort()
    shift = float(np.median(diffs))
    z = stats.norm.ppf(0.5 + level / 2)
    k = math.floor(total / 2 - z * math.sqrt(total * (n_a + n_b + 1) / 12))
    if k < 0:
        return shift, -math.inf, math.inf, approx
    scale = diffs.size / total
    lo_i = min(diffs.size - 1, int(k * scale))
    hi_i = max(0, diffs.size - 1 - int(k * scale))
    return shift, float(diffs[lo_i]), float(diffs[hi_i]), approx


# ----------------------------------------------------------------------------- Comparison


@dataclass(frozen=True, slots=True)
class WelchTest:
    """Welch's t-test of ``b - a`` (``scipy.stats.ttest_ind(b, a, equal_var=False)``).

    Attributes
    ----------
    difference, difference_ci_low, difference_ci_high : float
        ``mean(b) - mean(a)`` and its Welch CI at ``1 - alpha`` (metric units).
    t, df, p_value : float
        Statistic, Welch–Satterthwaite degrees of freedom, two-sided p-value.
    """

    difference: float
    difference_ci_low: float
    difference_ci_high: float
    t: float
    df: float
    p_value: float


@dataclass(frozen=True, slots=True)
class TostTest:
    """Equivalence by two one-sided tests on the primary test's statistics.

    Attributes
    ----------
    p_value : float
        TOST p-value (the larger one-sided p).
    equivalence_ratio_low, equivalence_ratio_high : float
        The region of the ratio ``b/a``: ``[1/(1+margin), 1+margin]``.
    equivalent : bool
        ``p_value < alpha``.
    """

    p_value: float
    equivalence_ratio_low: float
    equivalence_ratio_high: float
    equivalent: bool


@dataclass(frozen=True, slots=True)
class RatioEstimates:
    """The ratio of means ``mean(b)/mean(a)`` with its two intervals.

    Attributes
    ----------
    ratio_of_means : float
    fieller_ci_low, fieller_ci_high : float
        Fieller's CI (Welch df; -inf/inf when unbounded): the primary interval when unpaired.
    bca_ci_low, bca_ci_high : float
        Bootstrap CI (pairs resampled jointly when paired): BCa with Hesterberg's small-sample
        expansion (``z`` -> ``sqrt(n/(n-1)) t``), because plain BCa under-covers at small n. A
        secondary interval: the verdict never rests on it.
    bca_calibrated : bool
        Whether that interval is used where its coverage was checked by simulation (at least
        ``BOOTSTRAP_RATIO_CALIBRATED_FROM_N`` = 10 runs per arm or blocks); when False a
        ``bootstrap_ratio_ci_uncalibrated`` diagnostic says to use the primary ratio CI.
    """

    ratio_of_means: float
    fieller_ci_low: float
    fieller_ci_high: float
    bca_ci_low: float
    bca_ci_high: float
    bca_calibrated: bool


@dataclass(frozen=True, slots=True)
class MedianEstimates:
    """Medians and rank-based (distribution-free) estimates of ``b`` against ``a``.

    Attributes
    ----------
    median_a, median_b : float
    difference, difference_ci_low, difference_ci_high : float
        ``median(b) - median(a)`` with BCa bootstrap CI (independent resampling).
    ratio, ratio_ci_low, ratio_ci_high : float
        ``median(b)/median(a)`` with BCa bootstrap CI.
    mannwhitney_u, mannwhitney_p : float
        Mann–Whitney U of ``b`` vs ``a`` (two-sided).
    prob_candidate_lower : float
        P(b < a) + P(b = a)/2 estimated from U (common-language effect size).
    hodges_lehmann_shift, hodges_lehmann_ci_low, hodges_lehmann_ci_high : float
        Median of all ``b_j - a_i`` with the Moses distribution-free CI.
    """

    median_a: float
    median_b: float
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    mannwhitney_u: float
    mannwhitney_p: float
    prob_candidate_lower: float
    hodges_lehmann_shift: float
    hodges_lehmann_ci_low: float
    hodges_lehmann_ci_high: float


@dataclass(frozen=True, slots=True)
class PairedTest:
    """The blocked analysis: paired t-test and Wilcoxon on per-block log ratios ``log(b_i/a_i)``.

    Attributes
    ----------
    n_pairs : int
        Blocks.
    t, df, p_value : float
        Paired t-test (``scipy.stats.ttest_1samp(log b - log a, 0)``).
    geometric_mean_ratio, ci_low, ci_high : float
        ``exp(mean log(b_i/a_i))`` with its t CI: the primary ratio when paired.
    wilcoxon_statistic, wilcoxon_p : float
        Wilcoxon signed-rank test.
    """

    n_pairs: int
    t: float
    df: float
    p_value: float
    geometric_mean_ratio: float
    ci_low: float
    ci_high: float
    wilcoxon_statistic: float
    wilcoxon_p: float


def _json_ready(value: Any) -> Any:
    """Nested dicts/lists with non-finite floats as None."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything pullbench knows about baseline ``a`` vs candidate ``b`` from raw runs.

    Direction: differences are ``b - a`` and ratios ``b / a`` (candidate over baseline), in the
    metric's units. For durations a ratio < 1 means the candidate is faster. The decision and
    the per-arm summaries are attributes; the tests and estimates behind them are grouped in
    sub-records (:attr:`welch`, :attr:`tost`, :attr:`ratios`, :attr:`medians`,
    :attr:`paired_test`).

    Attributes
    ----------
    baseline, candidate : str
        Arm names.
    n_a, n_b, mean_a, mean_b, sd_a, sd_b
        Per-arm run count and summaries (SD with ddof=1).
    primary_test : str
        ``"welch"`` or ``"paired_log_t"``: the test the verdict rests on.
    p_value, ratio, ratio_ci_low, ratio_ci_high : float
        The primary test's p-value and ratio estimate with its CI (Fieller for Welch, geometric
        ratio CI for paired).
    significant, significant_but_small : bool
        ``p_value < alpha``; significant with the point estimate inside the equivalence region.
    verdict : str
        ``"faster"``, ``"slower"``, ``"equivalent"`` or ``"inconclusive"`` (candidate vs baseline).
    welch : WelchTest
        Welch's test and the CI of the difference (reported even when the primary is paired).
    tost : TostTest
        Equivalence within the margin, on the primary test's statistics.
    ratios : RatioEstimates
        Ratio of means with Fieller's and the bootstrap CI.
    medians : MedianEstimates
        Medians, their difference and ratio, Mann–Whitney, Hodges–Lehmann.
    paired_test : PairedTest or None
        The blocked analysis; None when the runs were analysed as independent.
    hedges_g : float
        Standardised mean difference ``(mean b - mean a) / pooled SD`` with small-sample correction.
    margin, alpha, lower_is_better, n_resamples, seed
        The declared analysis settings and the bootstrap seed used.
    power_observed : float or None
        Power of this design (n, SDs; the primary test) to detect the observed effect.
    mde_relative : float or None
        Minimum detectable effect at 80 % power, as a fraction of the baseline.
    runs_needed_per_arm : int or None
        Runs per arm (blocks, when paired) for 80 % power at the observed effect; None when the
        observed effect is zero or more than a million runs would be needed.
    diagnostics : tuple of Diagnostic
        Structured warnings about either sample or the pair.
    """

    baseline: str
    candidate: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    primary_test: str
    p_value: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    significant: bool
    significant_but_small: bool
    verdict: str
    welch: WelchTest
    tost: TostTest
    ratios: RatioEstimates
    medians: MedianEstimates
    paired_test: PairedTest | None
    hedges_g: float
    margin: float
    alpha: float
    lower_is_better: bool
    n_resamples: int
    seed: int
    power_observed: float | None = None
    mde_relative: float | None = None
    runs_needed_per_arm: int | None = None
    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)

    @property
    def paired(self) -> bool:
        """True when the primary analysis is the blocked (paired) one."""
        return self.paired_test is not None

    @property
    def relative_change(self) -> float:
        """``ratio - 1`` of the primary estimate (negative = candidate lower)."""
        return self.ratio - 1

    def summary(self) -> str:
        """A few lines a maintainer can read: estimate, CI, tests, verdict and warnings."""
        lvl = 1 - self.alpha
        w, r, m, tost = self.welch, self.ratios, self.medians, self.tost
        lines = [
            f"{self.candidate} vs {self.baseline} (baseline): verdict {self.verdict.upper()}"
            + (" (significant but smaller than the margin)" if self.significant_but_small else ""),
            f"  n = {self.n_b} vs {self.n_a}; mean {self.mean_b:.6g} vs {self.mean_a:.6g} "
            f"(SD {self.sd_b:.3g} vs {self.sd_a:.3g}); median {m.median_b:.6g} vs "
            f"{m.median_a:.6g}",
            f"  primary test: {self.primary_test}, p = {self.p_value:.3g}; ratio "
            f"{self.ratio:.4f}, {lvl:.0%} CI [{self.ratio_ci_low:.4f}, {self.ratio_ci_high:.4f}]",
            f"  Welch: diff {w.difference:+.4g} [{w.difference_ci_low:+.4g}, "
            f"{w.difference_ci_high:+.4g}], t = {w.t:.3f}, df = {w.df:.2f}, p = {w.p_value:.3g}",
            f"  ratio of means {r.ratio_of_means:.4f}: Fieller [{r.fieller_ci_low:.4f},"
            f" {r.fieller_ci_high:.4f}]{'' if self.paired else ' (primary)'}, "
            f"bootstrap BCa [{r.bca_ci_low:.4f}, {r.bca_ci_high:.4f}]"
            + ("" if r.bca_calibrated else " (not calibrated at this n: use the primary)"),
            f"  median ratio {m.ratio:.4f} [{m.ratio_ci_low:.4f}, {m.ratio_ci_high:.4f}]; "
            f"Mann–Whitney p = {m.mannwhitney_p:.3g}; Hodges–Lehmann "
            f"{m.hodges_lehmann_shift:+.4g}; Hedges' g {self.hedges_g:+.2f}",
        ]
        if self.paired_test is not None:
            pt = self.paired_test
            lines.append(
                f"  paired ({pt.n_pairs} blocks): geometric ratio {pt.geometric_mean_ratio:.4f}"
                f" [{pt.ci_low:.4f}, {pt.ci_high:.4f}] (primary), t = {pt.t:.3f}, p = "
                f"{pt.p_value:.3g}; Wilcoxon p = {pt.wilcoxon_p:.3g}"
            )
        lines.append(
            f"  equivalence margin ±{self.margin:.1%} (ratio in [{tost.equivalence_ratio_low:.4f},"
            f" {tost.equivalence_ratio_high:.4f}]): TOST p = {tost.p_value:.3g}; "
            f"alpha = {self.alpha}; seed = {self.seed}"
        )
        lines.extend(f"  {d}" for d in self.diagnostics)
        return "\n".join(lines)

    def conclusion(self) -> str:
        """The plain-language conclusion a maintainer should be shown (one paragraph)."""
        lvl = 1 - self.alpha
        test = ("the paired t-test on per-block log ratios" if self.paired
                else "Welch's t-test")
        ci = (f"{lvl:.0%} CI of the ratio {self.candidate}/{self.baseline}: "
              f"[{self.ratio_ci_low:.4f}, {self.ratio_ci_high:.4f}]")
        if self.significant:
            text = (f"{self.candidate} is {self.verdict} than {self.baseline} by "
                    f"{abs(self.relative_change):.1%} ({test}, p = {self.p_value:.3g}; {ci}).")
            if self.significant_but_small:
                text += (f" The difference is real but smaller than the declared "
                         f"±{self.margin:.0%}.")
        elif self.tost.equivalent:
            text = (f"{self.candidate} and {self.baseline} are equivalent within "
                    f"±{self.margin:.0%} (TOST p = {self.tost.p_value:.3g}; {ci}).")
        else:
            text = (f"Inconclusive: no significant difference ({test}, p = {self.p_value:.3g}) "
                    f"and no equivalence within ±{self.margin:.0%} (TOST p = "
                    f"{self.tost.p_value:.3g}); {ci}.")
            if self.mde_relative is not None:
                text += (f" These runs could reliably detect only effects of about "
                         f"{self.mde_relative:.1%}")
                text += (f"; about {self.runs_needed_per_arm} runs per arm would detect the "
                         f"observed {abs(self.relative_change):.1%}." if self.runs_needed_per_arm
                         else ".")
        warn = [d.kind for d in self.diagnostics if d.severity == "warning"]
        if warn:
            text += f" Check the warnings first: {', '.join(sorted(set(warn)))}."
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict of every field (infinite CI bounds become None).

        The sub-records are nested under their names; ``paired`` and ``relative_change`` are
        added.
        """
        d: dict[str, Any] = _json_ready(asdict(self))
        d["paired"] = self.paired
        d["relative_change"] = _finite_or_none(self.relative_change)
        return d


def _compare(
    x: np.ndarray,
    y: np.ndarray,
    *,
    baseline: str,
    candidate: str,
    margin: float,
    alpha: float,
    seed: int,
    n_resamples: int,
    lower_is_better: bool,
    paired: bool,
    boot_a: _Resampled | None = None,
    extra_diagnostics: Sequence[Diagnostic] = (),
    order_a: Any = None,
    order_b: Any = None,
) -> Comparison:
    """Full comparison of validated samples (see compare_samples)."""
    level = 1 - alpha
    diags: list[Diagnostic] = list(extra_diagnostics)
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        raise StatsInputError(
            f"{baseline} and {candidate} are both constant ({x[0]:g} and {y[0]:g}): no variability "
            "to test against; use a finer clock or check that the runs really ran"
        )
    for arr, name in ((x, baseline), (y, candidate)):
        if np.ptp(arr) == 0:
            warnings.warn(
                f"{name}: all {arr.size} values are identical ({arr[0]:g}); the clock is too "
                "coarse or the runs were cached -- variance-based results rest on the other "
                "arm only",
                DegenerateSampleWarning, stacklevel=3,
            )
    if paired:
        d = np.log(y) - np.log(x)
        if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
            raise StatsInputError(
                f"{candidate}/{baseline}: every block has the same ratio ({math.exp(d[0]):g}); "
                "the paired test needs variability between blocks"
            )
    diags += diagnose(x, order=order_a, name=baseline)
    diags += diagnose(y, order=order_b, name=candidate)
    diags += diagnose_pair(x, y, name_a=baseline, name_b=candidate, paired=paired)

    batch = compare_batch(x[None], y[None], margin=margin, alpha=alpha,
                          lower_is_better=lower_is_better, paired=paired)
    gen = np.random.default_rng(seed)
    gen_a, gen_b, gen_p, gen_hl = gen.spawn(4)

    n_a, n_b = x.size, y.size
    ma, mb = float(x.mean()), float(y.mean())
    sa, sb = float(x.std(ddof=1)), float(y.std(ddof=1))
    # Welch's test is reported whatever the primary test (the same kernel as compare_batch)
    w = _welch_moments(x, y, margin=margin, alpha=alpha)
    welch = WelchTest(difference=float(w.difference), difference_ci_low=float(w.difference_ci_low),
                      difference_ci_high=float(w.difference_ci_high), t=float(w.t),
                      df=float(w.df), p_value=float(w.p_value))
    if not np.isfinite(w.ratio_ci_low):
        diags.append(Diagnostic(
            "unbounded_ratio_ci", "warning",
            "Fieller's CI for the ratio is unbounded: the baseline mean is not clearly above 0",
            baseline, {},
        ))

    # Bootstrap: independent resampling for means/medians of each arm.
    ra = boot_a if boot_a is not None else _resample(x, n_resamples, gen_a)
    rb = _resample(y, n_resamples, gen_b)
    med_a, med_b = float(np.median(x)), float(np.median(y))
    r_lo_b, r_hi_b = _ratio_bootstrap_ci(
        x[None], y[None], level=level, paired=paired, n_resamples=n_resamples, gen=gen_p,
        means_a=None if paired else ra.means[None], means_b=None if paired else rb.means[None],
    )
    r_lo, r_hi = float(r_lo_b[0]), float(r_hi_b[0])
    bca_calibrated = min(n_a, n_b) >= BOOTSTRAP_RATIO_CALIBRATED_FROM_N
    if not bca_calibrated:
        diags.append(Diagnostic(
            "bootstrap_ratio_ci_uncalibrated", "info",
            f"the bootstrap (BCa) CI of the ratio of means is checked to cover its "
            f"{level:.0%} only from {BOOTSTRAP_RATIO_CALIBRATED_FROM_N} "
            f"{'blocks' if paired else 'runs per arm'} (here {min(n_a, n_b)}); use the "
            + ("paired geometric-ratio t interval" if paired else "Fieller interval")
            + " (the primary ratio CI) instead",
            None, {"n": min(n_a, n_b), "calibrated_from_n": BOOTSTRAP_RATIO_CALIBRATED_FROM_N},
        ))
    md_lo, md_hi = bca_interval(med_b - med_a, rb.medians - ra.medians,
                                [med_b - ra.jack_medians, rb.jack_medians - med_a],
                                confidence_level=level)
    mr_lo, mr_hi = bca_interval(med_b / med_a, rb.medians / ra.medians,
                                [med_b / ra.jack_medians, rb.jack_medians / med_a],
                                confidence_level=level)
    if not (np.isfinite(r_lo) and np.isfinite(md_lo) and np.isfinite(mr_lo)):
        diags.append(Diagnostic(
            "bootstrap_degenerate", "warning",
            "a bootstrap distribution was degenerate (too few distinct values); its CI is NaN",
            None, {"ratio": [r_lo, r_hi], "median_difference": [md_lo, md_hi]},
        ))

    mw = stats.mannwhitneyu(y, x, alternative="two-sided")
    hl, hl_lo, hl_hi, hl_approx = _hodges_lehmann(x, y, level, gen_hl)
    if hl_approx:
        diags.append(Diagnostic("hodges_lehmann_subsampled", "info",
                                "Hodges–Lehmann computed on 2,000,000 random pairs", None, {}))
    sp = math.sqrt(((n_a - 1) * sa**2 + (n_b - 1) * sb**2) / (n_a + n_b - 2))
    j = 1 - 3 / (4 * (n_a + n_b) - 9)
    g = j * (mb - ma) / sp if sp > 0 else math.nan

    paired_test = None
    if paired:
        wx = stats.wilcoxon(np.log(y) - np.log(x))
        paired_test = PairedTest(
            n_pairs=n_a, t=float(batch.statistic[0]), df=float(batch.df[0]),
            p_value=float(batch.p_value[0]), geometric_mean_ratio=float(batch.ratio[0]),
            ci_low=float(batch.ratio_ci_low[0]), ci_high=float(batch.ratio_ci_high[0]),
            wilcoxon_statistic=float(wx.statistic), wilcoxon_p=float(wx.pvalue),
        )

    p = float(batch.p_value[0])
    tost = float(batch.tost_p_value[0])
    pw, mde_rel, need = _planning(x, y, paired=paired, alpha=alpha)
    return Comparison(
        baseline=baseline, candidate=candidate, n_a=n_a, n_b=n_b, mean_a=ma, mean_b=mb,
        sd_a=sa, sd_b=sb,
        primary_test=batch.test, p_value=p, ratio=float(batch.ratio[0]),
        ratio_ci_low=float(batch.ratio_ci_low[0]), ratio_ci_high=float(batch.ratio_ci_high[0]),
        significant=p < alpha, significant_but_small=bool(batch.significant_but_small[0]),
        verdict=str(batch.verdict[0]),
        welch=welch,
        tost=TostTest(p_value=tost, equivalence_ratio_low=1 / (1 + margin),
                      equivalence_ratio_high=1 + margin, equivalent=tost < alpha),
        ratios=RatioEstimates(ratio_of_means=mb / ma, fieller_ci_low=float(w.ratio_ci_low),
                              fieller_ci_high=float(w.ratio_ci_high), bca_ci_low=r_lo,
                              bca_ci_high=r_hi, bca_calibrated=bca_calibrated),
        medians=MedianEstimates(
            median_a=med_a, median_b=med_b, difference=med_b - med_a, difference_ci_low=md_lo,
            difference_ci_high=md_hi, ratio=med_b / med_a, ratio_ci_low=mr_lo,
            ratio_ci_high=mr_hi, mannwhitney_u=float(mw.statistic),
            mannwhitney_p=float(mw.pvalue),
            prob_candidate_lower=1 - float(mw.statistic) / (n_a * n_b),
            hodges_lehmann_shift=hl, hodges_lehmann_ci_low=hl_lo, hodges_lehmann_ci_high=hl_hi,
        ),
        paired_test=paired_test,
        hedges_g=float(g), margin=margin, alpha=alpha,
        lower_is_better=lower_is_better, n_resamples=n_resamples, seed=seed,
        power_observed=pw, mde_relative=mde_rel, runs_needed_per_arm=need,
        diagnostics=tuple(diags),
    )


def _planning(x: np.ndarray, y: np.ndarray, *, paired: bool,
              alpha: float) -> tuple[float | None, float | None, int | None]:
    """Power at the observed effect, relative MDE (80 %) and runs needed for the primary test."""
    if paired:
        d = np.log(y) - np.log(x)
        delta, sd_a, sd_b = abs(float(d.mean())), float(d.std(ddof=1)), None
    else:
        delta = abs(float(y.mean() - x.mean()))
        sd_a, sd_b = float(x.std(ddof=1)), float(y.std(ddof=1))
    kw: dict[str, Any] = {"sd_a": sd_a, "sd_b": sd_b, "alpha": alpha, "paired": paired}
    try:
        pw = float(power_at_n(x.size, n_b=y.size, delta=delta, **kw))
        mde = minimum_detectable_effect(x.size, n_b=y.size, **kw)
        mde_rel = math.expm1(mde) if paired else mde / float(x.mean())
    except (StatsInputError, ValueError):
        return None, None, None
    try:
        need: int | None = runs_needed(delta=delta, **kw) if delta > 0 else None
    except StatsInputError:
        need = None
    return pw, mde_rel, need


def compare_samples(
    a: Any,
    b: Any,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 9999,
    lower_is_better: bool = True,
    paired: bool = False,
    names: tuple[str, str] = ("a", "b"),
    order_a: Any = None,
    order_b: Any = None,
) -> Comparison:
    """Compare a baseline ``a`` with a candidate ``b`` from raw runs and give a verdict.

    Parameters
    ----------
    a, b : array_like, shape (n_a,) and (n_b,)
        Baseline and candidate measurements (positive, finite; e.g. ``duration_s``).
        With ``paired=True`` they must have equal length and ``a[i]``, ``b[i]`` ran in block ``i``.
    margin : float
        Smallest effect of interest, relative (0.02 = 2 %). Equivalence region for the ratio
        ``b/a``: ``[1/(1+margin), 1+margin]``. Recorded in the result.
    alpha : float
        Significance level (two-sided test; each TOST one-sided test).
    rng : numpy.random.Generator, int or None
        Seed source for the bootstrap; the integer seed used is recorded as ``seed``.
    n_resamples : int
        Bootstrap resamples (>= 100).
    lower_is_better : bool
        True for durations ("faster" = candidate lower), False for throughputs.
    paired : bool
        Runs were interleaved in blocks: primary test is the paired t on per-block log ratios.
    names : (str, str)
        Arm names of ``a`` and ``b`` used in messages and the summary.
    order_a, order_b : array_like, optional
        Run order (index or timestamp) of each value, for the drift / first-run diagnostics.

    Returns
    -------
    Comparison

    Raises
    ------
    StatsInputError
        Fewer than 2 runs, NaN/inf, zero or negative values, both samples constant, mismatched
        paired lengths, bad margin/alpha/rng/n_resamples.

    Warns
    -----
    DegenerateSampleWarning
        One sample is constant (the analysis still runs on the other's variability).

    Examples
    --------
    >>> c = compare_samples([10.2, 10.4, 10.1, 10.3], [9.6, 9.8, 9.7, 9.9], rng=1)
    >>> c.verdict
    'faster'
    """
    _check_params(margin, alpha)
    if int(n_resamples) < 100:
        raise StatsInputError(f"n_resamples must be at least 100, got {n_resamples}")
    x = _as_sample(a, names[0])
    y = _as_sample(b, names[1])
    if paired and x.size != y.size:
        raise StatsInputError(
            f"paired analysis needs one {names[0]} and one {names[1]} run per block; got "
            f"{x.size} and {y.size} values -- drop incomplete blocks or use paired=False"
        )
    seed = _resolve_seed(rng)
    return _compare(x, y, baseline=names[0], candidate=names[1], margin=margin, alpha=alpha,
                    seed=seed, n_resamples=int(n_resamples), lower_is_better=lower_is_better,
                    paired=paired, order_a=order_a, order_b=order_b)


# ----------------------------------------------------------------------------- from summary


@dataclass(frozen=True, slots=True)
class SummaryComparison:
    """Comparison from summary statistics (mean, SD with ddof=1, n), e.g. hyperfine's output.

    Direction as everywhere: ``difference = mean_b - mean_a``, ``ratio = mean_b / mean_a``.

    Attributes
    ----------
    difference, se, welch_t, welch_df, welch_p, difference_ci_low, difference_ci_high : float
        Welch's test and the ``1 - alpha`` CI of the difference (metric units).
    ratio, ratio_ci_low, ratio_ci_high : float
        Ratio of means with Fieller's CI.
    student_p : float
        Pooled-variance Student t p-value, for contrast only (what pyperf/poop report).
    variance_ratio, f_test_p : float
        ``sd_a**2/sd_b**2`` and the two-sided F-test p-value.
    cohen_d : float
        Difference over the root mean square of the SDs.
    tost_p_value, equivalent_within_margin
        TOST on the Welch statistics, region ``-margin*mean_b <= diff <= margin*mean_a``.
    power : float
        Power of this design (n_a, n_b, SDs) to detect the observed difference at ``alpha``.
    mde, mde_relative : float
        Minimum detectable difference at ``target_power`` with these n (units, fraction of mean_a).
    runs_needed_per_arm : int or None
        Runs per arm for ``target_power`` at the observed difference (None if it is zero).
    verdict, significant, significant_but_small
        As in :class:`Comparison`.
    """

    mean_a: float
    sd_a: float
    n_a: int
    mean_b: float
    sd_b: float
    n_b: int
    difference: float
    se: float
    welch_t: float
    welch_df: float
    welch_p: float
    difference_ci_low: float
    difference_ci_high: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    student_p: float
    variance_ratio: float
    f_test_p: float
    cohen_d: float
    tost_p_value: float
    equivalent_within_margin: bool
    power: float
    mde: float
    mde_relative: float
    runs_needed_per_arm: int | None
    significant: bool
    significant_but_small: bool
    verdict: str
    margin: float
    alpha: float
    target_power: float
    lower_is_better: bool

    def summary(self) -> str:
        """Human-readable report."""
        lvl = 1 - self.alpha
        rel = self.difference / self.mean_a
        need = self.runs_needed_per_arm if self.runs_needed_per_arm is not None else "n/a"
        return "\n".join([
            f"b vs a (baseline): verdict {self.verdict.upper()}"
            + (" (significant but smaller than the margin)" if self.significant_but_small else ""),
            f"  a: {self.mean_a:.6g} ± {self.sd_a:.4g} (n={self.n_a}); b: {self.mean_b:.6g} ± "
            f"{self.sd_b:.4g} (n={self.n_b})",
            f"  difference b - a = {self.difference:+.4g} ({rel:+.2%}), {lvl:.0%} CI "
            f"[{self.difference_ci_low:+.4g}, {self.difference_ci_high:+.4g}]",
            f"  Welch t = {self.welch_t:.3f}, df = {self.welch_df:.2f}, p = {self.welch_p:.3g} "
            f"(pooled Student p = {self.student_p:.3g}; variance ratio {self.variance_ratio:.3g})",
            f"  ratio b/a = {self.ratio:.4f}, Fieller CI [{self.ratio_ci_low:.4f}, "
            f"{self.ratio_ci_high:.4f}]",
            f"  TOST at ±{self.margin:.1%}: p = {self.tost_p_value:.3g}",
            f"  power for the observed difference: {self.power:.2f}; minimum detectable effect "
            f"at {self.target_power:.0%} power: {self.mde:.4g} ({self.mde_relative:.2%}); runs "
            f"per arm for {self.target_power:.0%} power: {need}",
        ])

    def conclusion(self, *, unit: str = "s") -> str:
        """The plain-language conclusion a maintainer should be shown (one paragraph)."""
        lvl = 1 - self.alpha
        rel_lo = self.difference_ci_low / self.mean_a
        rel_hi = self.difference_ci_high / self.mean_a
        rel = self.difference / self.mean_a
        better = "faster" if self.lower_is_better else "higher"
        if self.significant:
            first = (f"The change is statistically significant (Welch p = {self.welch_p:.3g}): "
                     f"b - a = {self.difference:+.3g} {unit} ({rel:+.1%}), {lvl:.0%} CI "
                     f"[{rel_lo:+.1%}, {rel_hi:+.1%}].")
            if self.significant_but_small:
                first += (f" It is real but smaller than the ±{self.margin:.0%} that was "
                          "declared to matter.")
        else:
            first = (f"Not statistically significant (Welch p = {self.welch_p:.3g}): the "
                     f"{lvl:.0%} CI of the change, [{rel_lo:+.1%}, {rel_hi:+.1%}] of the baseline,"
                     f" includes 0, so the data cannot say b is {better}.")
        if self.equivalent_within_margin:
            second = (f" The runs do show equivalence within ±{self.margin:.0%} "
                      f"(TOST p = {self.tost_p_value:.3g}).")
        else:
            second = (f" Nor do they show the arms equivalent within ±{self.margin:.0%} "
                      f"(TOST p = {self.tost_p_value:.3g}).")
        need = (f"about {self.runs_needed_per_arm} runs per arm"
                if self.runs_needed_per_arm is not None else "an unbounded number of runs")
        third = (f" Verdict: {self.verdict}. The design had {self.power:.0%} power for an effect of"
                 f" this size ({abs(rel):.1%}); {self.target_power:.0%} power needs {need}, and the"
                 f" smallest effect these {self.n_a}+{self.n_b} runs could reliably detect is "
                 f"{self.mde_relative:.1%}.")
        return first + second + third

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in d.items()}


def compare_from_summary(
    mean_a: float,
    sd_a: float,
    n_a: int,
    mean_b: float,
    sd_b: float,
    n_b: int,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    lower_is_better: bool = True,
) -> SummaryComparison:
    """Welch test, CI, TOST, power and runs needed from summary statistics.

    Parameters
    ----------
    mean_a, sd_a, n_a : float, float, int
        Baseline mean, standard deviation (ddof=1, as hyperfine prints it) and run count.
    mean_b, sd_b, n_b : float, float, int
        Candidate's.
    margin : float
        Relative equivalence margin (0.05 = 5 %).
    alpha : float
        Significance level.
    power : float
        Target power for the MDE and runs-needed figures.
    lower_is_better : bool
        True for durations.

    Returns
    -------
    SummaryComparison

    Raises
    ------
    StatsInputError
        n < 2, non-positive means, negative or both-zero SDs, NaN, bad margin/alpha.

    Examples
    --------
    moby/moby#48602 (before vs after the PR):

    >>> r = compare_from_summary(39.294, 2.167, 10, 38.288, 0.634, 10, margin=0.05)
    >>> round(r.welch_t, 3), round(r.welch_df, 2), round(r.welch_p, 3), r.verdict
    (-1.409, 10.53, 0.188, 'inconclusive')
    """
    _check_params(margin, alpha)
    vals = [mean_a, sd_a, n_a, mean_b, sd_b, n_b]
    if not all(np.isfinite(v) for v in vals):
        raise StatsInputError(f"summary statistics must be finite, got {vals}")
    if n_a < 2 or n_b < 2 or int(n_a) != n_a or int(n_b) != n_b:
        raise StatsInputError(f"need integer run counts >= 2, got n_a={n_a}, n_b={n_b}")
    if mean_a <= 0 or mean_b <= 0:
        raise StatsInputError(f"means must be positive, got {mean_a} and {mean_b}")
    if sd_a < 0 or sd_b < 0 or (sd_a == 0 and sd_b == 0):
        raise StatsInputError(
            f"standard deviations must be >= 0 and not both 0, got {sd_a} and {sd_b}"
        )
    n_a, n_b = int(n_a), int(n_b)
    w = _welch_tost(mean_a, sd_a**2 / n_a, n_a, mean_b, sd_b**2 / n_b, n_b,
                    margin=margin, alpha=alpha)
    diff, p, tost = float(w.difference), float(w.p_value), float(w.tost_p_value)
    ratio = float(w.ratio)
    verdict = str(decide_verdict(p, tost, _candidate_better(ratio, lower_is_better), alpha))
    student = stats.ttest_ind_from_stats(mean_b, sd_b, n_b, mean_a, sd_a, n_a, equal_var=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        vr = sd_a**2 / sd_b**2 if sd_b > 0 else math.inf
    f_p = (float(2 * min(stats.f.sf(vr, n_a - 1, n_b - 1), stats.f.cdf(vr, n_a - 1, n_b - 1)))
           if np.isfinite(vr) else 0.0)
    d = diff / math.sqrt((sd_a**2 + sd_b**2) / 2)
    pw = float(power_at_n(n_a, n_b=n_b, delta=diff, sd_a=sd_a, sd_b=sd_b, alpha=alpha))
    mde = minimum_detectable_effect(n_a, n_b=n_b, sd_a=sd_a, sd_b=sd_b, alpha=alpha, power=power)
    try:
        need: int | None = runs_needed(delta=diff, sd_a=sd_a, sd_b=sd_b, alpha=alpha, power=power)
    except StatsInputError:
        need = None
    return SummaryComparison(
        mean_a=float(mean_a), sd_a=float(sd_a), n_a=n_a, mean_b=float(mean_b), sd_b=float(sd_b),
        n_b=n_b, difference=diff, se=float(w.se), welch_t=float(w.t), welch_df=float(w.df),
        welch_p=p, difference_ci_low=float(w.difference_ci_low),
        difference_ci_high=float(w.difference_ci_high),
        ratio=ratio, ratio_ci_low=float(w.ratio_ci_low), ratio_ci_high=float(w.ratio_ci_high),
        student_p=float(student.pvalue), variance_ratio=float(vr), f_test_p=f_p, cohen_d=d,
        tost_p_value=tost, equivalent_within_margin=tost < alpha, power=pw, mde=mde,
        mde_relative=mde / mean_a, runs_needed_per_arm=need, significant=p < alpha,
        significant_but_small=bool(_significant_but_small(p, ratio, margin, alpha)),
        verdict=verdict, margin=margin, alpha=alpha, target_power=power,
        lower_is_better=lower_is_better,
    )


# ----------------------------------------------------------------------------- grids


@dataclass(frozen=True, slots=True)
class GridResult:
    """Many arms compared with one baseline, with multiplicity-adjusted p-values.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per non-baseline arm: arm, n, n_baseline, mean, median, ratio, ratio_ci_low,
        ratio_ci_high (primary estimand, unadjusted CI), ratio_of_means, median_ratio, test,
        p, p_holm, p_bh, p_adjusted, tost_p, tost_p_adjusted, verdict (from the adjusted
        p-values), verdict_unadjusted, significant_but_small, paired, baseline (the reference
        arm of each row; differs per row only for :func:`compare_all_pairs`).
    comparisons : dict of str to Comparison
        The full per-arm analyses (their ``verdict`` is unadjusted).
    diagnostics : tuple of Diagnostic
        Grid-level and per-arm diagnostics.
    baseline, metric, correction : str
        Settings; ``correction`` chose which adjusted p-value drives ``verdict``.
    margin, alpha : float
    seed : int
    paired : bool
        True when the blocked (paired) analysis was used for every arm.
    n_dropped : int
        Rows dropped because the metric was NaN.
    """

    table: pd.DataFrame
    comparisons: dict[str, Comparison]
    diagnostics: tuple[Diagnostic, ...]
    baseline: str
    metric: str
    correction: str
    margin: float
    alpha: float
    seed: int
    paired: bool
    n_dropped: int

    def summary(self) -> str:
        """Verdict table as text, with the method stated."""
        method = ("paired t-test on per-block log ratios (randomized blocks)" if self.paired
                  else "Welch's t-test (independent runs)")
        cols = ["arm", "n", "mean", "ratio", "ratio_ci_low", "ratio_ci_high", "p", "p_adjusted",
                "tost_p_adjusted", "verdict"]
        if self.baseline == "all pairs":
            cols.insert(1, "baseline")
        head = (
            f"{len(self.table)} arms vs baseline {self.baseline!r} on {self.metric}; primary test: "
            f"{method}; {self.correction} adjustment; margin ±{self.margin:.1%}; alpha "
            f"{self.alpha}; seed {self.seed}"
        )
        body = self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
        warn = [str(d) for d in self.diagnostics if d.severity == "warning"]
        return "\n".join([head, body, *warn])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: settings, table records, comparisons and diagnostics."""
        finite = self.table.replace([np.inf, -np.inf], np.nan)
        table = finite.astype(object).where(pd.notna(finite), None)
        return {
            "baseline": self.baseline, "metric": self.metric, "correction": self.correction,
            "margin": self.margin, "alpha": self.alpha, "seed": self.seed, "paired": self.paired,
            "n_dropped": self.n_dropped,
            "table": table.to_dict(orient="records"),
            "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


def _blocks_complete(df: pd.DataFrame, arm: str, block: str, arms: Sequence[Any]) -> bool:
    counts = df.groupby([block, arm], observed=True).size().unstack(arm)
    counts = counts.reindex(columns=list(arms))
    return bool(counts.notna().all().all() and (counts == 1).all().all())


def analyze_grid(
    df: pd.DataFrame,
    *,
    metric: str = "duration_s",
    arm: str = "arm",
    baseline: Any,
    block: str | None = "block",
    order: str | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 9999,
    correction: str = "holm",
    lower_is_better: bool = True,
) -> GridResult:
    """Compare every arm of a results table with a baseline arm, adjusting for multiplicity.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy rows, one per run: at least columns ``arm`` and ``metric`` (and ``block`` when runs
        were interleaved in blocks). The caller excludes failed runs; rows whose metric is NaN are
        dropped and counted (``n_dropped``).
    metric : str
        Column to compare (positive values, e.g. ``duration_s`` or ``throughput_mb_s``).
    arm : str
        Column naming the arm of each row.
    baseline : object
        The arm value every other arm is compared with.
    block : str or None
        Block column. When present and complete (every block has exactly one run of every arm),
        the paired analysis on per-block log ratios is the primary test (paired bootstrap, Wilcoxon
        signed-rank alongside). When absent, None, or incomplete, runs are treated as independent
        (Welch), with a ``blocks_incomplete`` diagnostic in the last case.
    order : str, optional
        Column with run order (index or timestamp) for drift diagnostics.
    margin, alpha, rng, n_resamples, lower_is_better
        As in :func:`compare_samples`.
    correction : {"holm", "bh", "bonferroni", "none"}
        Which adjusted p-values (for the test and for TOST, over the family of arms) drive the
        verdict column. ``p_holm`` and ``p_bh`` are always reported.

    Returns
    -------
    GridResult

    Notes
    -----
    In the unpaired case the baseline's bootstrap replicates are drawn once and shared by all
    arms (each arm's interval is still a valid BCa interval; intervals of different arms are
    correlated through the shared baseline, as their estimates already are). Rerunning with the
    recorded ``seed`` reproduces the table exactly.

    Raises
    ------
    StatsInputError
        Missing columns, unknown baseline, no other arm, an arm with fewer than 2 valid runs,
        non-positive values, both arms constant, or bad settings.
    """
    prep = _prepare_grid(df, metric=metric, arm=arm, block=block, margin=margin, alpha=alpha,
                         n_resamples=n_resamples, correction=correction)
    if baseline not in prep.arms:
        raise StatsInputError(f"baseline {baseline!r} not among the arms {prep.arms}")
    others = [x for x in prep.arms if x != baseline]
    if not others:
        raise StatsInputError(f"only the baseline arm {baseline!r} is present; nothing to compare")
    seed = _resolve_seed(rng)
    gen = np.random.default_rng(seed)
    x, order_x = prep.sample(baseline, order)
    boot_a = None
    if not prep.paired and np.ptp(x) > 0:
        boot_a = _resample(x, int(n_resamples), gen.spawn(1)[0])
    comps: list[Comparison] = []
    arm_seeds = np.random.SeedSequence(seed).generate_state(len(others), dtype=np.uint64)
    for name, s in zip(others, arm_seeds, strict=True):
        y, order_y = prep.sample(name, order)
        comps.append(_compare(
            x, y, baseline=str(baseline), candidate=str(name), margin=margin, alpha=alpha,
            seed=int(s % (2**63)), n_resamples=int(n_resamples), lower_is_better=lower_is_better,
            paired=prep.paired, boot_a=boot_a, order_a=order_x, order_b=order_y,
        ))
    return _grid_result(comps, prep, keys=[c.candidate for c in comps], baseline=str(baseline),
                        metric=metric, correction=correction, margin=margin, alpha=alpha,
                        seed=seed, lower_is_better=lower_is_better)


@dataclass(frozen=True, slots=True)
class _GridData:
    data: pd.DataFrame
    arms: list[Any]
    paired: bool
    diagnostics: list[Diagnostic]
    n_dropped: int
    metric: str
    arm: str

    def sample(self, name: Any, order: str | None) -> tuple[np.ndarray, Any]:
        part = self.data[self.data[self.arm] == name]
        x = _as_sample(part[self.metric].to_numpy(), f"arm {name!r} ({self.metric})")
        ordr = part[order].to_numpy() if order is not None and order in part.columns else None
        return x, ordr


def _prepare_grid(df: pd.DataFrame, *, metric: str, arm: str, block: str | None, margin: float,
                  alpha: float, n_resamples: int, correction: str) -> _GridData:
    """Validate a results table, drop NaN rows, decide whether the blocked analysis applies."""
    _check_params(margin, alpha)
    if correction not in {"holm", "bh", "bonferroni", "none"}:
        raise StatsInputError(
            f"unknown correction {correction!r}; use 'holm', 'bh', 'bonferroni' or 'none'"
        )
    if not isinstance(df, pd.DataFrame):
        raise StatsInputError(f"a pandas DataFrame is needed, got {type(df).__name__}")
    for col in (metric, arm):
        if col not in df.columns:
            raise StatsInputError(
                f"column {col!r} not in the table (columns: {sorted(map(str, df.columns))})"
            )
    if int(n_resamples) < 100:
        raise StatsInputError(f"n_resamples must be at least 100, got {n_resamples}")
    diags: list[Diagnostic] = []
    values = pd.to_numeric(df[metric], errors="coerce")
    if values.isna().sum() > df[metric].isna().sum():
        raise StatsInputError(f"column {metric!r} holds non-numeric values")
    keep = values.notna()
    n_dropped = int((~keep).sum())
    data = df.loc[keep].copy()
    data[metric] = values[keep].astype(float)
    if n_dropped:
        diags.append(Diagnostic("rows_dropped", "info",
                                f"{n_dropped} rows with NaN {metric} were not analysed", None,
                                {"n_dropped": n_dropped}))
    if not np.all(np.isfinite(data[metric])):
        raise StatsInputError(f"column {metric!r} holds infinite values")
    arms = list(pd.unique(data[arm]))
    paired = False
    if block is not None and block in data.columns:
        paired = (not data[block].isna().any()) and _blocks_complete(data, arm, block, arms)
        if not paired:
            diags.append(Diagnostic(
                "blocks_incomplete", "warning",
                f"column {block!r} is present but not every block has exactly one run of every "
                "arm; analysed as independent runs (Welch) -- drop incomplete blocks to analyse "
                "paired",
                None, {},
            ))
        else:
            data = data.sort_values(block, kind="stable")
    return _GridData(data, arms, paired, diags, n_dropped, metric, arm)


def _grid_result(comps: list[Comparison], prep: _GridData, *, keys: list[str], baseline: str,
                 metric: str, correction: str, margin: float, alpha: float, seed: int,
                 lower_is_better: bool) -> GridResult:
    """Adjust p-values over the family of comparisons and build the verdict table."""
    p = np.array([c.p_value for c in comps])
    tost = np.array([c.tost.p_value for c in comps])
    p_adj = adjust_pvalues(p, correction)
    tost_adj = adjust_pvalues(tost, correction)
    ratio = np.array([c.ratio for c in comps])
    verdict = decide_verdict(p_adj, tost_adj, _candidate_better(ratio, lower_is_better), alpha)
    small = _significant_but_small(p_adj, ratio, margin, alpha)
    table = pd.DataFrame({
        "arm": [c.candidate for c in comps],
        "n": [c.n_b for c in comps],
        "n_baseline": [c.n_a for c in comps],
        "mean": [c.mean_b for c in comps],
        "median": [c.medians.median_b for c in comps],
        "ratio": ratio,
        "ratio_ci_low": [c.ratio_ci_low for c in comps],
        "ratio_ci_high": [c.ratio_ci_high for c in comps],
        "ratio_of_means": [c.ratios.ratio_of_means for c in comps],
        "ratio_bca_ci_low": [c.ratios.bca_ci_low for c in comps],
        "ratio_bca_ci_high": [c.ratios.bca_ci_high for c in comps],
        "ratio_bca_calibrated": [c.ratios.bca_calibrated for c in comps],
        "median_ratio": [c.medians.ratio for c in comps],
        "test": [c.primary_test for c in comps],
        "p": p,
        "p_holm": adjust_pvalues(p, "holm"),
        "p_bh": adjust_pvalues(p, "bh"),
        "p_adjusted": p_adj,
        "tost_p": tost,
        "tost_p_adjusted": tost_adj,
        "verdict": list(verdict),
        "verdict_unadjusted": [c.verdict for c in comps],
        "significant_but_small": small,
        "paired": prep.paired,
        "baseline": [c.baseline for c in comps],
    })
    diags = list(prep.diagnostics)
    seen: set[tuple[str, str | None, str]] = set()
    for c in comps:
        for d in c.diagnostics:
            key = (d.kind, d.arm, d.message)
            if key not in seen:
                seen.add(key)
                diags.append(d)
    return GridResult(
        table=table, comparisons=dict(zip(keys, comps, strict=True)), diagnostics=tuple(diags),
        baseline=baseline, metric=metric, correction=correction, margin=margin, alpha=alpha,
        seed=seed, paired=prep.paired, n_dropped=prep.n_dropped,
    )


def compare_all_pairs(
    df: pd.DataFrame,
    *,
    metric: str = "duration_s",
    arm: str = "arm",
    block: str | None = "block",
    order: str | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 9999,
    correction: str = "holm",
    lower_is_better: bool = True,
) -> GridResult:
    """Compare every pair of arms (the earlier arm in table order as baseline), adjusted jointly.

    Parameters are those of :func:`analyze_grid` without ``baseline``. The family for the
    multiplicity adjustment is all ``k (k - 1) / 2`` pairs.

    Returns
    -------
    GridResult
        ``baseline`` is ``"all pairs"``; the table's ``baseline`` column names each pair's
        reference arm and ``comparisons`` is keyed ``"<arm> vs <baseline>"``.

    Raises
    ------
    StatsInputError
        As :func:`analyze_grid`; also fewer than two arms.
    """
    prep = _prepare_grid(df, metric=metric, arm=arm, block=block, margin=margin, alpha=alpha,
                         n_resamples=n_resamples, correction=correction)
    if len(prep.arms) < 2:
        raise StatsInputError(f"need at least two arms to compare, got {prep.arms}")
    seed = _resolve_seed(rng)
    pairs = [(i, j) for i in range(len(prep.arms)) for j in range(i + 1, len(prep.arms))]
    seeds = np.random.SeedSequence(seed).generate_state(len(pairs), dtype=np.uint64)
    samples = [prep.sample(a, order) for a in prep.arms]
    comps = []
    for (i, j), s in zip(pairs, seeds, strict=True):
        comps.append(_compare(
            samples[i][0], samples[j][0], baseline=str(prep.arms[i]),
            candidate=str(prep.arms[j]), margin=margin, alpha=alpha, seed=int(s % (2**63)),
            n_resamples=int(n_resamples), lower_is_better=lower_is_better, paired=prep.paired,
            order_a=samples[i][1], order_b=samples[j][1],
        ))
    keys = [f"{c.candidate} vs {c.baseline}" for c in comps]
    return _grid_result(comps, prep, keys=keys, baseline="all pairs", metric=metric,
                        correction=correction, margin=margin, alpha=alpha, seed=seed,
                        lower_is_better=lower_is_better)


# ----------------------------------------------------------------------------- factorial


@dataclass(frozen=True, slots=True)
class FactorialResult:
    """Two-or-more-factor analysis of a parameter scan on the log scale.

    Attributes
    ----------
    metric : str
        Analysed column (modelled as ``log(metric)``).
    factors : tuple of str
        Factor columns (treated as categorical).
    formula : str
        The statsmodels formula fitted.
    anova : pandas.DataFrame
        Type-II ANOVA table (sum_sq, df, F, PR(>F)) incl. interaction rows and Residual.
    effects : pandas.DataFrame
        Per factor level: the geometric-mean ratio of the metric relative to the factor's first
        level, averaging over the other factors (exp of the difference of log-scale marginal means).
    interaction_p : float or None
        p-value of the highest-order interaction term.
    r_squared : float
    n : int
        Rows used.
    """

    metric: str
    factors: tuple[str, ...]
    formula: str
    anova: pd.DataFrame
    effects: pd.DataFrame
    interaction_p: float | None
    r_squared: float
    n: int

    def summary(self) -> str:
        """ANOVA table and the main effects as ratios."""
        return "\n".join([
            f"log({self.metric}) ~ {' * '.join(self.factors)}  "
            f"(n={self.n}, R²={self.r_squared:.3f})",
            self.anova.to_string(float_format=lambda v: f"{v:.4g}"),
            "main effects (geometric-mean ratio vs the first level):",
            self.effects.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        ])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        anova = self.anova.astype(object).where(pd.notna(self.anova), None)
        return {
            "metric": self.metric, "factors": list(self.factors), "formula": self.formula,
            "anova": anova.reset_index(names="term").to_dict(orient="records"),
            "effects": self.effects.to_dict(orient="records"),
            "interaction_p": self.interaction_p, "r_squared": self.r_squared, "n": self.n,
        }


def factorial_anova(df: pd.DataFrame, *, metric: str, factors: Sequence[str]) -> FactorialResult:
    """Factorial model of a parameter scan: ``log(metric) ~ f1 * f2 * ...`` (statsmodels OLS).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run, with ``metric`` (positive) and each factor column.
    metric : str
        E.g. ``"duration_s"``.
    factors : list of str
        At least one factor column (e.g. ``["read_size", "write_buffer"]``); levels are treated
        as categories; all interactions are included.

    Returns
    -------
    FactorialResult
        Type-II ANOVA (``statsmodels.stats.anova.anova_lm(typ=2)``) with main effects and
        interactions, and per-level geometric-mean ratios.

    Raises
    ------
    StatsInputError
        Missing columns, non-positive or NaN values, a factor with one level, or no residual
        degrees of freedom (need replicate runs per cell).
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    factors = list(factors)
    if not factors:
        raise StatsInputError("factorial_anova needs at least one factor column")
    if not isinstance(df, pd.DataFrame):
        raise StatsInputError("factorial_anova needs a pandas DataFrame")
    missing = [c for c in [metric, *factors] if c not in df.columns]
    if missing:
        raise StatsInputError(f"columns {missing} not in the table")
    data = df[[metric, *factors]].copy()
    y = pd.to_numeric(data[metric], errors="coerce")
    if y.isna().any() or not np.all(np.isfinite(y)) or (y <= 0).any():
        raise StatsInputError(f"{metric!r} must be finite and positive in every row")
    if data[factors].isna().any().any():
        raise StatsInputError(f"factor columns {factors} contain missing values")
    for f in factors:
        if data[f].nunique() < 2:
            raise StatsInputError(f"factor {f!r} has a single level; nothing to estimate")
    names = {f: f"f{i}" for i, f in enumerate(factors)}
    model_df = pd.DataFrame({"log_y": np.log(y.to_numpy(dtype=float))})
    for f, alias in names.items():
        model_df[alias] = data[f].astype(str).to_numpy()
        model_df[alias] = pd.Categorical(model_df[alias],
                                         categories=[str(v) for v in _sorted_levels(data[f])])
    formula = "log_y ~ " + " * ".join(f"C({a})" for a in names.values())
    fit = smf.ols(formula, data=model_df).fit()
    if fit.df_resid < 1:
        raise StatsInputError(
            "no residual degrees of freedom: run each combination of factor levels at least twice"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = anova_lm(fit, typ=2)
    back = {f"C({a})": f for f, a in names.items()}

    def rename(term: str) -> str:
        return ":".join(back.get(part, part) for part in term.split(":"))

    table.index = [rename(t) for t in table.index]
    inter_terms = [t for t in table.index if t.count(":") == len(factors) - 1 and ":" in t]
    interaction_p = (float(table.loc[inter_terms[0], "PR(>F)"]) if inter_terms else None)
    rows = []
    for f, alias in names.items():
        cell = model_df.groupby([a for a in names.values()], observed=True)["log_y"].mean()
        marg = cell.groupby(level=list(names.values()).index(alias), observed=True).mean()
        ref = marg.iloc[0]
        for level, v in marg.items():
            rows.append({"factor": f, "level": level,
                         "ratio_vs_first_level": float(np.exp(v - ref)),
                         "geometric_mean": float(np.exp(v))})
    return FactorialResult(
        metric=metric, factors=tuple(factors), formula=formula.replace("log_y", f"log({metric})"),
        anova=table, effects=pd.DataFrame(rows), interaction_p=interaction_p,
        r_squared=float(fit.rsquared), n=len(model_df),
    )


def _sorted_levels(col: pd.Series) -> list[Any]:
    levels = list(pd.unique(col))
    try:
        return sorted(levels)
    except TypeError:
        return levels
