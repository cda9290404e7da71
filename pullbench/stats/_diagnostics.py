"""Structured diagnostics for timing samples: outliers, drift, warm-up, bimodality, too few runs.

Every check returns :class:`Diagnostic` records instead of printing or raising, so that a
comparison, a grid analysis or a notebook can show them next to the verdict they qualify.
Python warnings (subclasses of :class:`StatsWarning`, itself a ``RuntimeWarning``) are reserved
for degenerate data that still lets an analysis run (a constant sample).

Thresholds and their sources
----------------------------
Each warning is calibrated to raise a false alarm in at most 10 % of the arms of quiet A/A
experiments (an arm against an identical one, on a quiet machine, ~10-30 runs per arm); the
rates are measured by ``benchmarks/bench_interference.py``. The textbook values fired on nearly
every arm of a normal 30-block run, because pull times are right-skewed and heavy-tailed.

- Outliers (one check; it replaces the MAD, Tukey and slow-first-run checks, which flagged the
  same runs three times): modified z-score ``0.6745 * (x - median) / MAD`` above
  :data:`OUTLIER_Z_THRESHOLD` = 6 (Iglewicz & Hoaglin's 3.5 flags most skewed timing samples;
  hyperfine warns on a modified z-score too, sharkdp/hyperfine:src/outlier_detection.rs). The
  details say how many runs lie outside Tukey's 3 IQR fences (criterion.rs's "severe",
  bheisler/criterion.rs:src/stats/univariate/outliers/tukey.rs) and whether the first run in run
  order is one of the outliers, above the median (a cold cache; hyperfine's ``--warmup``).
  :func:`pullbench.analyze_folder` turns the warning into an ``info`` when every outlier run
  lies in a block the interference probes flagged disturbed: those runs are explained, and the
  disturbance is shown first.
- Drift: Mann–Kendall trend test (Kendall's tau of value against run order), p < 0.01,
  with Spearman's rho reported alongside.
- Bimodality: Sarle's bimodality coefficient ``(g1**2 + 1) / (g2 + 3 (n-1)**2 / ((n-2)(n-3)))``
  above :data:`BIMODALITY_THRESHOLD` = 0.70 with at least :data:`MIN_RUNS_BIMODALITY` = 20 runs
  (0.555, the uniform distribution's value, is exceeded by merely skewed samples).
- Too few runs: fewer than 10 values (bootstrap CIs undercover) or fewer than 6 (two-sided rank
  tests cannot reach p < 0.05).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .._errors import DegenerateSampleWarning, StatsInputError, StatsWarning

__all__ = [
    "DegenerateSampleWarning",
    "Diagnostic",
    "StatsWarning",
    "diagnose",
    "diagnose_pair",
]

logger = logging.getLogger(__name__)

#: Modified z-score above which a run is an outlier (calibrated on quiet A/A runs).
OUTLIER_Z_THRESHOLD = 6.0
DRIFT_P_THRESHOLD = 0.01
#: Sarle's bimodality coefficient above which a sample is called bimodal.
BIMODALITY_THRESHOLD = 0.70
MIN_RUNS_BIMODALITY = 20
MIN_RUNS_BOOTSTRAP = 10
MIN_RUNS_RANK = 6


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One structured warning about a sample or a comparison.

    Attributes
    ----------
    kind : str
        Machine-readable kind: ``"outliers"``, ``"drift"``, ``"bimodality"``,
        ``"unequal_variances"``, ``"too_few_runs"``,
        ``"constant_sample"``, ``"unbounded_ratio_ci"``, ``"blocks_incomplete"``,
        ``"rows_dropped"``, ``"bootstrap_degenerate"``.
    severity : str
        ``"info"`` (worth knowing, the analysis is fine) or ``"warning"`` (the result may mislead).
    message : str
        Human-readable explanation and what to do about it.
    arm : str or None
        The arm (sample name) the diagnostic is about, if any.
    details : dict
        Numbers behind the diagnostic (counts, indices, statistics, p-values).
    """

    kind: str
    severity: str
    message: str
    arm: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        where = f"[{self.arm}] " if self.arm else ""
        return f"{self.severity}: {where}{self.kind}: {self.message}"


def _as_1d(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise StatsInputError(f"{name}: expected a 1-D sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x))[:5].tolist()
        raise StatsInputError(
            f"{name}: contains NaN or infinite values at positions {bad}; drop failed runs first"
        )
    return x


def diagnose(values: Any, *, order: Any = None, name: str | None = None) -> list[Diagnostic]:
    """Check one sample of run measurements and return structured warnings.

    Parameters
    ----------
    values : array_like, shape (n,)
        Measurements (e.g. durations in seconds), finite.
    order : array_like, shape (n,), optional
        Run order (timestamps or run indices) of each value; defaults to the position in
        ``values``. Used for the drift and slow-first-run checks.
    name : str, optional
        Arm name stored in each :class:`Diagnostic`.

    Returns
    -------
    list of Diagnostic
        Empty when nothing looks wrong.

    Raises
    ------
    StatsInputError
        ``values`` is not 1-D, contains NaN/inf, or ``order`` has a different length.
    """
    x = _as_1d(values, name or "values")
    n = x.size
    if order is None:
        run_order = np.arange(n, dtype=float)
    else:
        run_order = np.asarray(order, dtype=float)
        if run_order.shape != x.shape:
            raise StatsInputError(
                f"{name or 'values'}: order has {run_order.size} entries for {n} values; "
                "pass one run index or timestamp per value"
            )
    out: list[Diagnostic] = []
    if n < MIN_RUNS_BOOTSTRAP:
        out.append(Diagnostic(
            "too_few_runs", "warning",
            f"only {n} runs: bootstrap CIs undercover below {MIN_RUNS_BOOTSTRAP} runs"
            + (f" and two-sided rank tests cannot reach p < 0.05 below {MIN_RUNS_RANK}"
               if n < MIN_RUNS_RANK else "")
            + "; add runs (see runs_needed)",
            name, {"n": n, "min_bootstrap": MIN_RUNS_BOOTSTRAP, "min_rank": MIN_RUNS_RANK},
        ))
    if n < 3:
        return out
    if np.ptp(x) == 0:
        out.append(Diagnostic(
            "constant_sample", "warning",
            "all values are identical: the clock is too coarse or the runs were cached",
            name, {"value": float(x[0]), "n": n},
        ))
        return out

    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    if mad > 0:
        mz = 0.6745 * (x - med) / mad
        idx = np.flatnonzero(np.abs(mz) > OUTLIER_Z_THRESHOLD)
        if idx.size:
            first = int(np.argmin(run_order))
            first_slow = bool(first in set(idx.tolist()) and x[first] > med)
            q1, q3 = np.percentile(x, [25, 75])
            iqr = q3 - q1
            severe = int(np.sum((x < q1 - 3 * iqr) | (x > q3 + 3 * iqr))) if iqr > 0 else 0
            message = (f"{idx.size} of {n} runs are outliers (modified z-score up to "
                       f"{float(np.max(np.abs(mz))):.1f} > {OUTLIER_Z_THRESHOLD:g})")
            if first_slow:
                message += (f"; the first run is one, {x[first] / med:.2f}x the median: likely a "
                            "cold cache (use warm-up runs or a prepare step that fixes the "
                            "cache state)")
            message += ": look for interference (other load, cache state) before trusting means"
            out.append(Diagnostic(
                "outliers", "warning", message, name,
                {"count": int(idx.size), "indices": idx.tolist(),
                 "max_abs_z": float(np.max(np.abs(mz))), "tukey_severe": severe,
                 "first_run_slow": first_slow, "first_run_index": first,
                 "first_run_ratio": float(x[first] / med) if med else None},
            ))
    if n >= 4:
        tau = stats.kendalltau(run_order, x)
        rho = stats.spearmanr(run_order, x)
        if np.isfinite(tau.pvalue) and tau.pvalue < DRIFT_P_THRESHOLD:
            direction = "slower" if tau.statistic > 0 else "faster"
            out.append(Diagnostic(
                "drift", "warning",
                f"values trend with run order (Mann–Kendall tau={tau.statistic:.2f}, "
                f"p={tau.pvalue:.2g}): later runs got {direction} (warm-up, caches or the "
                "machine changed during the run); randomized blocks analysed paired cancel a "
                "drift every arm shares, not one arm's own: add warm-up blocks or re-run",
                name, {"kendall_tau": float(tau.statistic), "mann_kendall_p": float(tau.pvalue),
                       "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)},
            ))
    if n >= MIN_RUNS_BIMODALITY:
        g1 = stats.skew(x, bias=False)
        g2 = stats.kurtosis(x, bias=False)
        bc = (g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
        if np.isfinite(bc) and bc > BIMODALITY_THRESHOLD:
            out.append(Diagnostic(
                "bimodality", "warning",
                f"bimodality coefficient {bc:.2f} > {BIMODALITY_THRESHOLD}: runs may come from two "
                "regimes (cache hit/miss, CPU frequency); means and t-tests then mislead",
                name, {"bimodality_coefficient": float(bc), "skewness": float(g1),
                       "excess_kurtosis": float(g2)},
            ))
    return out


def diagnose_pair(a: Any, b: Any, *, name_a: str = "a", name_b: str = "b",
                  paired: bool = False) -> list[Diagnostic]:
    """Checks that concern two samples together (currently: unequal variances).

    Parameters
    ----------
    a, b : array_like, shape (n_a,), (n_b,)
        The two samples.
    name_a, name_b : str
        Their arm names.
    paired : bool
        Whether the comparison is analysed paired (per-block log-ratios); only the wording of
        the diagnostic changes.

    Returns
    -------
    list of Diagnostic
        An ``unequal_variances`` info when the Brown–Forsythe test rejects at 0.05 and the SD
        ratio exceeds 1.5 (Welch is used, so this informs rather than invalidates).
    """
    x = _as_1d(a, name_a)
    y = _as_1d(b, name_b)
    out: list[Diagnostic] = []
    if x.size < 3 or y.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    sa, sb = float(np.std(x, ddof=1)), float(np.std(y, ddof=1))
    bf = stats.levene(x, y, center="median")
    ratio = max(sa, sb) / min(sa, sb)
    if bf.pvalue < 0.05 and ratio > 1.5:
        wider = name_a if sa > sb else name_b
        out.append(Diagnostic(
            "unequal_variances", "info",
            f"SDs differ {ratio:.1f}x (Brown–Forsythe p={bf.pvalue:.2g}); {wider} is noisier. "
            + ("The paired analysis (per-block log-ratios, used here) is not affected; an unpaired "
             "analysis must use Welch's test, not a pooled Student t-test" if paired else
             "Welch's test (used here) is right; a pooled Student t-test would not be"),
            None, {"sd_a": sa, "sd_b": sb, "sd_ratio": ratio, "brown_forsythe_p": float(bf.pvalue)},
        ))
    return out
