"""Power and planning for Welch's two-sample t-test: power at n, MDE, runs needed.

All functions work in the metric's own units (seconds for durations) with standard deviations
computed with ``ddof=1`` (what hyperfine prints as "±", sharkdp/hyperfine#417). Power is exact for
Welch's test under normality up to the Welch–Satterthwaite approximation: the test statistic is
taken as noncentral t with ``df`` from Welch–Satterthwaite and noncentrality ``delta / se``
(the approach of ``statsmodels.stats.power.TTestIndPower`` with the Welch df in place of the
pooled one). With equal SDs this agrees with ``TTestIndPower`` to a few thousandths.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .._errors import StatsInputError
from ._defaults import DEFAULT_ALPHA, DEFAULT_POWER

__all__ = [
    "PowerPlan",
    "minimum_detectable_effect",
    "plan_from_pilot",
    "power_at_n",
    "runs_needed",
    "welch_df",
]


def _check_sd(sd_a: float, sd_b: float | None) -> tuple[float, float]:
    sa = float(sd_a)
    sb = sa if sd_b is None else float(sd_b)
    if not (np.isfinite(sa) and np.isfinite(sb)) or sa < 0 or sb < 0 or (sa == 0 and sb == 0):
        raise StatsInputError(
            f"standard deviations must be finite, non-negative and not both zero (got {sa}, {sb})"
        )
    return sa, sb


def _check_alpha(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")
    if power is not None and not alpha < power < 1:
        raise StatsInputError(f"power must be in (alpha, 1), got {power}")


def welch_df(var_a_over_n: Any, var_b_over_n: Any, n_a: Any, n_b: Any) -> Any:
    """Welch–Satterthwaite degrees of freedom from ``s**2/n`` terms (array-friendly)."""
    va = np.asarray(var_a_over_n, dtype=float)
    vb = np.asarray(var_b_over_n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (va + vb) ** 2 / (va**2 / (np.asarray(n_a) - 1) + vb**2 / (np.asarray(n_b) - 1))


def _power(delta: Any, sa: float, sb: float, n_a: Any, n_b: Any, alpha: float,
           paired: bool = False) -> Any:
    n_a = np.asarray(n_a, dtype=float)
    n_b = np.asarray(n_b, dtype=float)
    if paired:
        # one-sample t on per-block differences (log ratios): sd ``sa``, n blocks, df n - 1
        se = sa / np.sqrt(n_a)
        df = n_a - 1
    else:
        va, vb = sa**2 / n_a, sb**2 / n_b
        se = np.sqrt(va + vb)
        df = welch_df(va, vb, n_a, n_b)
    tc = stats.t.ppf(1 - alpha / 2, df)
    nc = np.abs(np.asarray(delta, dtype=float)) / se
    return stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc)


def power_at_n(
    n: int | Any,
    *,
    delta: float,
    sd_a: float,
    sd_b: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_b: int | Any | None = None,
    paired: bool = False,
) -> float | np.ndarray:
    """Power of a two-sided Welch t-test to detect a true difference ``delta``.

    Parameters
    ----------
    n : int or array_like of int
        Runs per arm (of arm A; also of arm B unless ``n_b`` is given). At least 2.
    delta : float
        True difference of means to detect, in the metric's units (sign ignored).
    sd_a, sd_b : float
        Standard deviations (ddof=1) of each arm, e.g. from pilot runs. ``sd_b`` defaults
        to ``sd_a``.
    alpha : float
        Two-sided significance level.
    n_b : int or array_like, optional
        Runs of arm B when unequal.
    paired : bool
        Blocked design analysed with the paired t-test on per-block log ratios: ``n`` is the
        number of blocks, ``delta`` is ``log(1 + relative effect)`` and ``sd_a`` the SD of the
        per-block log ratios (``sd_b`` and ``n_b`` are ignored).

    Returns
    -------
    float or ndarray
        Probability of p < alpha, same shape as ``n``.

    Raises
    ------
    StatsInputError
        n < 2, alpha outside (0, 1), invalid SDs.

    Examples
    --------
    The PR 48602 worked example: ``power_at_n(10, delta=1.006, sd_a=2.167, sd_b=0.634)`` is 0.250.
    """
    sa, sb = _check_sd(sd_a, sd_b)
    _check_alpha(alpha)
    na = np.asarray(n)
    nb = na if n_b is None else np.asarray(n_b)
    if np.any(na < 2) or np.any(nb < 2):
        raise StatsInputError(f"need at least 2 runs per arm, got n={n}, n_b={n_b}")
    p = _power(delta, sa, sb, na, nb, alpha, paired)
    return float(p) if np.ndim(p) == 0 else p


def minimum_detectable_effect(
    n: int,
    *,
    sd_a: float,
    sd_b: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    n_b: int | None = None,
    paired: bool = False,
) -> float:
    """Smallest true difference a Welch t-test detects with the given power at ``n`` runs per arm.

    Parameters
    ----------
    n : int
        Runs per arm (arm A; and B unless ``n_b``).
    sd_a, sd_b : float
        Standard deviations (ddof=1).
    alpha, power : float
        Two-sided level and target power.
    n_b : int, optional
        Runs of arm B when unequal.
    paired : bool
        Paired design (see :func:`power_at_n`): the result is on the log-ratio scale
        (``expm1`` of it is the relative MDE).

    Returns
    -------
    float
        The minimum detectable difference in the metric's units (positive). Divide by the
        baseline mean for a relative MDE.

    Raises
    ------
    StatsInputError
        Invalid n, SDs, alpha or power.
    """
    sa, sb = _check_sd(sd_a, sd_b)
    _check_alpha(alpha, power)
    nb = n if n_b is None else n_b
    if n < 2 or nb < 2:
        raise StatsInputError(f"need at least 2 runs per arm, got n={n}, n_b={nb}")
    se = math.sqrt(sa**2 / n + sb**2 / nb)
    hi = se
    while _power(hi, sa, sb, n, nb, alpha, paired) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _power(d, sa, sb, n, nb, alpha, paired) - power, 0.0,
                                 hi, xtol=1e-12 * hi))


def runs_needed(
    *,
    delta: float,
    sd_a: float,
    sd_b: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    max_n: int = 1_000_000,
    paired: bool = False,
) -> int:
    """Smallest equal number of runs per arm giving at least ``power`` to detect ``delta``.

    Parameters
    ----------
    delta : float
        True difference of means to detect (metric units; sign ignored; non-zero).
    sd_a, sd_b : float
        Standard deviations (ddof=1), e.g. from pilot runs.
    alpha, power : float
        Two-sided level and target power.
    max_n : int
        Upper bound of the search.
    paired : bool
        Paired design (see :func:`power_at_n`): the result is the number of blocks.

    Returns
    -------
    int
        Runs per arm (>= 2).

    Raises
    ------
    StatsInputError
        ``delta`` is zero, or more than ``max_n`` runs would be needed.

    Examples
    --------
    PR 48602: ``runs_needed(delta=1.006, sd_a=2.167, sd_b=0.634)`` is 42.
    """
    sa, sb = _check_sd(sd_a, sd_b)
    _check_alpha(alpha, power)
    if not np.isfinite(delta) or delta == 0:
        raise StatsInputError("delta must be a finite non-zero difference to plan for")
    lo, hi = 2, 2
    while _power(delta, sa, sb, hi, hi, alpha, paired) < power:
        lo, hi = hi, hi * 2
        if hi > max_n:
            if _power(delta, sa, sb, max_n, max_n, alpha, paired) >= power:
                hi = max_n
                break
            raise StatsInputError(
                f"more than {max_n} runs per arm would be needed to detect {delta} "
                f"with power {power}; reduce noise or plan for a larger effect"
            )
    if _power(delta, sa, sb, lo, lo, alpha, paired) >= power:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _power(delta, sa, sb, mid, mid, alpha, paired) >= power:
            hi = mid
        else:
            lo = mid
    return int(hi)


@dataclass(frozen=True, slots=True)
class PowerPlan:
    """Planning numbers derived from pilot runs.

    Attributes
    ----------
    n_a, n_b : int
        Pilot runs per arm.
    mean_a, sd_a, sd_b : float
        Baseline mean and the SDs (ddof=1) used for planning (metric units).
    alpha, power : float
        Two-sided level and target power.
    relative_effect : float
        The effect planned for, as a fraction of the baseline mean (e.g. 0.02 = 2 %).
    delta : float
        The same effect in metric units.
    power_at_pilot_n : float
        Power the pilot's own n gives for ``delta``.
    mde_at_pilot_n, mde_relative_at_pilot_n : float
        Minimum detectable effect at the pilot n (units, fraction of baseline mean).
    runs_needed_per_arm : int or None
        Runs per arm for ``power`` at ``delta`` (None if more than a million).
    curve : pandas.DataFrame
        Columns n, power, mde, mde_relative over a grid of n.
    paired : bool
        Planned for the blocked (paired log-ratio) analysis: ``sd_a`` is then the SD of the
        per-block log ratios, ``delta`` and ``mde`` are on the log scale, and run counts are blocks.
    """

    n_a: int
    n_b: int
    mean_a: float
    sd_a: float
    sd_b: float
    alpha: float
    power: float
    relative_effect: float
    delta: float
    power_at_pilot_n: float
    mde_at_pilot_n: float
    mde_relative_at_pilot_n: float
    runs_needed_per_arm: int | None
    curve: pd.DataFrame
    paired: bool = False

    def summary(self) -> str:
        """Human-readable planning summary."""
        need = (f"{self.runs_needed_per_arm} runs per arm" if self.runs_needed_per_arm
                else "more than 1,000,000 runs per arm")
        return (
            f"Pilot: n={self.n_a}/{self.n_b}, baseline mean {self.mean_a:.6g}, "
            f"SD {self.sd_a:.4g}/{self.sd_b:.4g}\n"
            f"Power to detect {self.relative_effect:.2%} ({self.delta:.4g}) at the pilot n: "
            f"{self.power_at_pilot_n:.2f}\n"
            f"Minimum detectable effect at {self.power:.0%} power: {self.mde_at_pilot_n:.4g} "
            f"({self.mde_relative_at_pilot_n:.2%})\n"
            f"To reach {self.power:.0%} power for {self.relative_effect:.2%}: {need}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the curve as a list of records)."""
        d = {k: v for k, v in asdict(self).items() if k != "curve"}
        d["curve"] = self.curve.to_dict(orient="records")
        return d


class _SpreadArgs(TypedDict):
    """The keyword arguments ``plan_from_pilot`` passes to every power function."""

    sd_a: float
    sd_b: float
    alpha: float
    paired: bool


def plan_from_pilot(
    a: Any,
    b: Any = None,
    *,
    relative_effect: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    n_grid: Any = (5, 10, 20, 30, 50, 100, 200),
    paired: bool = False,
) -> PowerPlan:
    """Plan an experiment from pilot runs of the baseline (and optionally the candidate).

    Parameters
    ----------
    a : array_like, shape (n_a,)
        Pilot runs of the baseline (positive values, e.g. seconds).
    b : array_like, shape (n_b,), optional
        Pilot runs of the candidate; its SD is used for arm B (default: A's SD).
    relative_effect : float, optional
        Effect to plan for as a fraction of the baseline mean. Defaults to the pilot's observed
        relative difference when ``b`` is given (required otherwise).
    alpha, power : float
        Two-sided level and target power.
    n_grid : sequence of int
        Runs per arm at which to tabulate power and MDE.
    paired : bool
        Pilot runs were interleaved in blocks (``a[i]``, ``b[i]`` in block ``i``): plan for the
        paired t-test on per-block log ratios, usually far fewer runs when blocks drift.

    Returns
    -------
    PowerPlan

    Raises
    ------
    StatsInputError
        Fewer than 2 pilot runs, NaN, non-positive values, or no effect to plan for.
    """
    x = np.asarray(a, dtype=float)
    if x.ndim != 1 or x.size < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise StatsInputError("pilot runs a: need at least 2 finite positive values")
    if b is None:
        y = None
    else:
        y = np.asarray(b, dtype=float)
        if y.ndim != 1 or y.size < 2 or not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise StatsInputError("pilot runs b: need at least 2 finite positive values")
    mean_a = float(x.mean())
    if relative_effect is None:
        if y is None:
            raise StatsInputError("give relative_effect, or candidate pilot runs b to take it from")
        relative_effect = float(y.mean() / mean_a - 1)
    if relative_effect == 0:
        raise StatsInputError("relative_effect must be non-zero")
    if paired:
        if y is None or y.size != x.size:
            raise StatsInputError("paired planning needs pilot runs a and b from the same blocks")
        d = np.log(y) - np.log(x)
        sd_a = sd_b = float(d.std(ddof=1))
        if sd_a == 0:
            raise StatsInputError("per-block log ratios are constant; cannot plan from them")
        delta = math.log1p(abs(relative_effect))
        scale = None
    else:
        sd_a = float(x.std(ddof=1))
        sd_b = sd_a if y is None else float(y.std(ddof=1))
        delta = abs(relative_effect) * mean_a
        scale = mean_a
    n_b = x.size if y is None else y.size

    def relative(m: float) -> float:
        return math.expm1(m) if scale is None else m / scale

    kw: _SpreadArgs = {"sd_a": sd_a, "sd_b": sd_b, "alpha": alpha, "paired": paired}
    p_now = float(power_at_n(x.size, n_b=n_b, delta=delta, **kw))
    mde = minimum_detectable_effect(x.size, n_b=n_b, power=power, **kw)
    try:
        need: int | None = runs_needed(delta=delta, power=power, **kw)
    except StatsInputError:
        need = None
    grid = np.asarray(sorted({int(n) for n in n_grid if int(n) >= 2}), dtype=int)
    curve = pd.DataFrame({
        "n": grid,
        "power": np.asarray(power_at_n(grid, delta=delta, **kw)),
        "mde": [minimum_detectable_effect(int(n), power=power, **kw) for n in grid],
    })
    curve["mde_relative"] = [relative(m) for m in curve["mde"]]
    return PowerPlan(
        n_a=int(x.size), n_b=int(n_b), mean_a=mean_a, sd_a=sd_a, sd_b=sd_b, alpha=alpha,
        power=power, relative_effect=float(abs(relative_effect)), delta=float(delta),
        power_at_pilot_n=p_now, mde_at_pilot_n=mde, mde_relative_at_pilot_n=relative(mde),
        runs_needed_per_arm=need, curve=curve, paired=paired,
    )
