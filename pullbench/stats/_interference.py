"""Verdicts that depend on the machine's load: disturbed runs, dependence on interference,
unstable verdicts, and how many quiet blocks would settle a verdict.

Randomized blocks protect a comparison against drift, not against an effect that itself changes
with the machine's state (an arm x load interaction). These functions take the per-run
interference score (``interference_cores``: other processes' CPU plus steal, per second of the
run; see :mod:`pullbench.experiment._interference`) and the per-block log ratios of a paired
comparison, and decide:

Disturbed runs (:func:`disturbance_threshold`)
    The threshold comes from this experiment's own quiet baseline. The *reference* runs are the
    quietest quarter of the runs (at least :data:`MIN_REFERENCE_RUNS`): whatever else happened,
    the machine was at its quietest then. Their median is the quiet level; the spread is
    ``1.4826 * MAD`` of the quietest half (a robust SD of the undisturbed level, measured where
    disturbance is least likely). A run is *disturbed* when its score exceeds
    ``quiet level + max(K * spread, FLOOR)`` with :data:`DISTURBANCE_K` = 4 and
    :data:`DISTURBANCE_FLOOR_CORES` = 0.25 cores, calibrated on quiet and loaded A/A runs of
    40 ms and 0.2 s pulls (``benchmarks/bench_interference.py``, which re-thresholds the same
    runs with floors 0.1-0.35): with the scheduler's nanosecond accounting quiet blocks were flagged
    18-31 % of the time at 0.1 and about 10 % at 0.25, little less at 0.3, while a burner on the
    puller's CPU was flagged in every loaded block up to 0.3 and in a third of them at 0.35
    (synthetic-64m). 0.25 is also the preflight's quiet criterion. The analysis applies the rule
    to other processes' CPU and to host steal separately
    (:func:`pullbench.experiment._analysis._interference_summary`). A block with a disturbed
    run is disturbed. When the quiet level itself exceeds :data:`BUSY_MACHINE_SHARE` of the
    CPUs (a quarter; at least 0.25 cores), the machine was busy throughout: no run need stand
    out, every verdict holds for that load only, and each is marked unstable.
Dependence (:func:`interference_dependence`)
    Ordinary least squares of the per-block log ratio on the block's interference (statsmodels
    ``OLS``): slope (change of the log ratio per core of interference), its ``1 - alpha`` CI and
    the two-sided p-value of slope = 0.
Unstable verdicts (:func:`unstable_reason`)
    A verdict is *unstable* when (1) the quiet and the disturbed blocks give opposite verdicts
    (faster vs slower), (2) the verdict on all blocks is faster or slower while the quiet blocks
    lean the other way (their ratio is on the other side of 1), (3) the dependence on
    interference is significant at ``alpha``, or (4) the machine was busy throughout.
Re-run advice (:func:`blocks_to_settle`)
    From the quiet blocks' mean and SD of the log ratio: the blocks a paired t-test needs for 80 %
    power to call the observed effect (:func:`pullbench.runs_needed`, ``paired=True``) when it is
    at least the margin, else the blocks for the (1 - 2 alpha) CI to fit inside the margin
    (equivalence; TOST power 80 % at the observed effect).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from .._errors import StatsInputError
from ._defaults import DEFAULT_ALPHA, DEFAULT_POWER

__all__ = [
    "BUSY_MACHINE_SHARE",
    "DISTURBANCE_FLOOR_CORES",
    "DISTURBANCE_K",
    "DisturbanceThreshold",
    "InterferenceDependence",
    "SettlePlan",
    "blocks_to_settle",
    "disturbance_threshold",
    "interference_dependence",
    "unstable_reason",
]

#: Spreads above the quiet level that make a run disturbed.
DISTURBANCE_K = 4.0
#: The least excess over the quiet level (cores of foreign work) that makes a run disturbed.
DISTURBANCE_FLOOR_CORES = 0.25
#: A quiet level above this share of the CPUs (and at least :data:`DISTURBANCE_FLOOR_CORES`)
#: means the machine was busy for the whole experiment.
BUSY_MACHINE_SHARE = 0.25
#: The reference (quietest) runs are at least this many, or every run when there are fewer.
MIN_REFERENCE_RUNS = 4
_DIRECTIONS = ("faster", "slower")


@dataclass(frozen=True, slots=True)
class DisturbanceThreshold:
    """The disturbed-run threshold of one experiment (see the module docstring).

    Attributes
    ----------
    quiet_level_cores : float
        Median score of the reference (quietest) runs.
    spread_cores : float
        ``1.4826 * MAD`` of the quietest half of the runs.
    threshold_cores : float
        A run scoring above this is disturbed.
    n_runs, n_reference : int
        Runs scored, and how many were the reference.
    busy_machine : bool
        The quiet level exceeds :data:`BUSY_MACHINE_SHARE` of ``cpu_count`` CPUs.
    cpu_count : int or None
        CPUs of the machine (None: unknown; 2 is assumed for ``busy_machine``).
    rule : str
        The rule in words, with the constants.
    """

    quiet_level_cores: float
    spread_cores: float
    threshold_cores: float
    n_runs: int
    n_reference: int
    busy_machine: bool
    rule: str
    cpu_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


def _finite(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise StatsInputError(f"{name}: no values")
    if not np.all(np.isfinite(x)):
        raise StatsInputError(f"{name}: contains NaN or infinite values; drop them first")
    return x


def disturbance_threshold(scores: Any, *, k: float = DISTURBANCE_K,
                          floor_cores: float = DISTURBANCE_FLOOR_CORES,
                          cpu_count: int | None = None) -> DisturbanceThreshold:
    """The disturbed-run threshold from the runs' interference scores.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Interference score of every analysed run (cores of foreign work per second).
    k : float
        Robust spreads above the quiet level.
    floor_cores : float
        Least excess above the quiet level, cores.
    cpu_count : int, optional
        CPUs of the machine, for ``busy_machine`` (default: 2).

    Returns
    -------
    DisturbanceThreshold

    Raises
    ------
    StatsInputError
        No scores, or NaN/inf among them.
    """
    x = np.sort(_finite(scores, "interference scores"))
    n = x.size
    n_ref = min(n, max(MIN_REFERENCE_RUNS, math.ceil(0.25 * n)))
    level = float(np.median(x[:n_ref]))
    half = x[: max(2, math.ceil(0.5 * n))]
    spread = float(1.4826 * np.median(np.abs(half - np.median(half))))
    threshold = level + max(k * spread, floor_cores)
    rule = (f"disturbed when interference > quiet level {level:.3f} + max({k:g} x spread "
            f"{spread:.3f}, {floor_cores:g}) = {threshold:.3f} cores (quiet level: median of "
            f"the quietest {n_ref} of {n} runs; spread: 1.4826 MAD of the quietest half)")
    busy = level > max(floor_cores, BUSY_MACHINE_SHARE * (cpu_count or 2))
    return DisturbanceThreshold(quiet_level_cores=level, spread_cores=spread,
                                threshold_cores=threshold, n_runs=n, n_reference=n_ref,
                                busy_machine=busy, rule=rule, cpu_count=cpu_count)


@dataclass(frozen=True, slots=True)
class InterferenceDependence:
    """How the per-block log ratio moves with the block's interference (OLS).

    Attributes
    ----------
    slope : float
        Change of the log ratio per core of interference (``exp(slope)`` is the factor by which
        the ratio changes per core).
    slope_ci_low, slope_ci_high : float
        ``1 - alpha`` confidence interval of the slope.
    p : float
        Two-sided p-value of slope = 0.
    intercept : float
        Log ratio at zero interference.
    n : int
        Blocks in the fit.
    alpha : float
    """

    slope: float
    slope_ci_low: float
    slope_ci_high: float
    p: float
    intercept: float
    n: int
    alpha: float

    @property
    def significant(self) -> bool:
        """p < alpha."""
        return bool(self.p < self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


def interference_dependence(log_ratios: Any, interference: Any, *,
                            alpha: float = DEFAULT_ALPHA) -> InterferenceDependence | None:
    """Regress per-block log ratios on the blocks' interference.

    Parameters
    ----------
    log_ratios : array_like, shape (n,)
        ``log(candidate / baseline)`` per block.
    interference : array_like, shape (n,)
        The block's interference (cores), same order.
    alpha : float
        For the slope's CI.

    Returns
    -------
    InterferenceDependence or None
        None with fewer than 4 blocks or when the interference does not vary (no slope to fit).

    Raises
    ------
    StatsInputError
        Shapes differ or values are not finite.
    """
    import statsmodels.api as sm

    y = _finite(log_ratios, "log ratios")
    x = _finite(interference, "interference")
    if x.shape != y.shape:
        raise StatsInputError(f"{y.size} log ratios for {x.size} interference values")
    if y.size < 4 or float(np.ptp(x)) <= 1e-12:
        return None
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    lo, hi = fit.conf_int(alpha)[1]
    p = float(fit.pvalues[1])
    return InterferenceDependence(slope=float(fit.params[1]), slope_ci_low=float(lo),
                                  slope_ci_high=float(hi), p=p if np.isfinite(p) else 1.0,
                                  intercept=float(fit.params[0]), n=int(y.size),
                                  alpha=float(alpha))


def _lean(ratio: float | None, lower_is_better: bool) -> str | None:
    if ratio is None or not np.isfinite(ratio) or ratio == 1:
        return None
    better = ratio < 1 if lower_is_better else ratio > 1
    return "faster" if better else "slower"


def unstable_reason(*, verdict_all: str | None, verdict_quiet: str | None,
                    ratio_quiet: float | None, verdict_disturbed: str | None,
                    ratio_disturbed: float | None,
                    dependence: InterferenceDependence | None,
                    lower_is_better: bool = True,
                    busy_level_cores: float | None = None) -> str | None:
    """Why a verdict depends on the machine's load, or None when it does not (see the module).

    Parameters
    ----------
    verdict_all, verdict_quiet, verdict_disturbed : str or None
        Verdicts on all blocks, on the quiet blocks only, on the disturbed blocks only
        (None: too few blocks for that subset).
    ratio_quiet, ratio_disturbed : float or None
        Point ratios (candidate / baseline) of the quiet and disturbed subsets.
    dependence : InterferenceDependence or None
        The fit of the log ratio on interference.
    lower_is_better : bool
        For the metric (``faster`` means a lower value when True).
    busy_level_cores : float, optional
        The quiet level when the machine was busy throughout (None: it was not).

    Returns
    -------
    str or None
        One sentence per reason found, joined with ``"; "``.
    """
    reasons = []
    if (verdict_quiet in _DIRECTIONS and verdict_disturbed in _DIRECTIONS
            and verdict_quiet != verdict_disturbed):
        reasons.append(
            f"direction differs: quiet blocks say {verdict_quiet} (ratio {ratio_quiet:.3f}), "
            f"disturbed blocks say {verdict_disturbed} (ratio {ratio_disturbed:.3f})")
    lean = _lean(ratio_quiet, lower_is_better)
    if verdict_all in _DIRECTIONS and lean is not None and lean != verdict_all and not reasons:
        reasons.append(
            f"the verdict {verdict_all} comes from the disturbed blocks: the quiet blocks lean "
            f"{lean} (ratio {ratio_quiet:.3f})")
    if dependence is not None and dependence.significant:
        factor = math.exp(dependence.slope)
        reasons.append(
            f"the effect depends on interference: the ratio changes x{factor:.3f} per core of "
            f"interference (other processes' CPU + host steal; slope {dependence.slope:+.3f} "
            f"[{dependence.slope_ci_low:+.3f}, {dependence.slope_ci_high:+.3f}] per core, "
            f"p = {dependence.p:.2g}, {dependence.n} blocks)")
    if busy_level_cores is not None:
        reasons.append(
            f"machine busy throughout ({busy_level_cores:.2f} cores of other work in the "
            "quietest runs): the verdict holds for that load, maybe not on a quiet machine")
    return "; ".join(reasons) if reasons else None


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """How many quiet blocks would settle a verdict.

    Attributes
    ----------
    blocks : int or None
        Quiet blocks needed (None: the quiet blocks are too few or too uniform to plan from).
    goal : str
        ``detect`` (call the observed effect faster/slower) or ``equivalence`` (show it lies
        within the margin).
    effect : float
        The quiet blocks' mean log ratio.
    sd : float
        Their SD (ddof=1).
    n_quiet : int
        Quiet blocks planned from.
    """

    blocks: int | None
    goal: str
    effect: float
    sd: float
    n_quiet: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


def blocks_to_settle(quiet_log_ratios: Any, *, margin: float, alpha: float = DEFAULT_ALPHA,
                     power: float = DEFAULT_POWER, max_blocks: int = 100_000) -> SettlePlan:
    """Quiet blocks needed to settle a paired comparison (see the module docstring).

    Parameters
    ----------
    quiet_log_ratios : array_like, shape (n,)
        Per-block log ratios of the quiet blocks (n >= 3 to plan).
    margin : float
        Equivalence margin (fraction of the baseline).
    alpha, power : float
        Level of each test and target power.
    max_blocks : int
        Upper bound of the search.

    Returns
    -------
    SettlePlan
    """
    from ._power import runs_needed

    y = _finite(quiet_log_ratios, "quiet log ratios") if np.size(quiet_log_ratios) else \
        np.array([], dtype=float)
    n = int(y.size)
    if n < 3:
        return SettlePlan(None, "detect", float(np.mean(y)) if n else 0.0, 0.0, n)
    d = float(np.mean(y))
    s = float(np.std(y, ddof=1))
    bound = math.log1p(margin)
    if s <= 0:
        return SettlePlan(None, "detect" if abs(d) >= bound else "equivalence", d, s, n)
    if abs(d) >= bound:
        try:
            need = runs_needed(delta=d, sd_a=s, alpha=alpha, power=power, paired=True,
                               max_n=max_blocks)
        except StatsInputError:
            need = None
        return SettlePlan(need, "detect", d, s, n)
    # equivalence: both one-sided tests at alpha; power at the observed effect (normal approx.
    # for the search, then the t quantile with n - 1 df)
    gap = bound - abs(d)
    z_b = stats.norm.ppf(1 - (1 - power) / 2) if d == 0 else stats.norm.ppf(power)
    m = 3
    while m <= max_blocks:
        t_a = stats.t.ppf(1 - alpha, m - 1)
        if (t_a + z_b) * s / math.sqrt(m) <= gap:
            return SettlePlan(m, "equivalence", d, s, n)
        m = m + 1 if m < 200 else int(m * 1.05) + 1
    return SettlePlan(None, "equivalence", d, s, n)
