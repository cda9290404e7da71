"""The analysis result: one typed record per image, metric and arm, stored as ``analysis.json``.

:class:`Analysis` (the whole folder) holds an :class:`ImageAnalysis` per image, which holds a
:class:`MetricAnalysis` per analysed metric (its verdict table as :class:`VerdictRow` records,
the diagnostics and the runs needed) and an :class:`ArmSummary` per arm (medians of what
explains the verdicts). Every record is a frozen dataclass with ``to_dict()`` / ``from_dict()``;
``analysis.json`` is ``Analysis.to_dict()`` written by
:func:`pullbench.experiment._analysis.save_analysis` and read back by :func:`load_analysis`.

Schema changelog (``schema_version`` of ``analysis.json``):

- 1: first version (the nested dict of earlier releases, read unchanged: the same keys).
  Later added, optional and written only when not 0 / {} / false: ``n_retried``,
  ``retried_by_arm``, ``include_retried``.
- 2: ``interference`` per image (the disturbed-run threshold, disturbed blocks) and
  ``stability`` per metric (each verdict with and without the disturbed blocks, the dependence
  of the per-block ratio on interference, ``unstable`` with its reason, the quiet blocks that
  would settle it); ``exclude_disturbed``. Both keys are absent when the rows carry no
  interference columns (results of earlier releases); files of version 1 read unchanged.
- 3: ``metric_order`` per image (the order the metrics were asked for, wall time first by
  default: the file's keys are sorted); ``descriptives`` per metric: for every arm, the
  baseline included, n, mean, sd (ddof=1), min, max and median of the analysed runs (what the
  verdict table shows as ``mean ± sd`` and ``min … max``); files of versions 1 and 2 read
  with none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .._errors import ResultSchemaError
from ..stats._diagnostics import Diagnostic
from ._results import ANALYSIS_JSON, ResultsStore, _jsonable

__all__ = [
    "ANALYSIS_SCHEMA_VERSION",
    "Analysis",
    "ArmDescriptives",
    "ArmSummary",
    "ImageAnalysis",
    "InterferenceSummary",
    "MetricAnalysis",
    "StabilityRow",
    "VerdictRow",
    "load_analysis",
]

#: Version of ``analysis.json``; bump with a changelog line in this module's docstring.
ANALYSIS_SCHEMA_VERSION = 3

_FIX = "re-create it with `pullbench analyze DIR` (DIR: the results folder)"

_T = TypeVar("_T")


def _field(data: Mapping[str, Any], key: str, where: str, kind: Callable[[Any], _T]) -> _T:
    """``kind(data[key])``, or a ResultSchemaError naming the key, the place and the fix."""
    if not isinstance(data, Mapping):
        raise ResultSchemaError(f"analysis {where}: expected an object, got {type(data).__name__}; "
                                + _FIX)
    if key not in data:
        raise ResultSchemaError(f"analysis {where}: missing key {key!r}; " + _FIX)
    try:
        return kind(data[key])
    except (TypeError, ValueError, KeyError, AttributeError, ResultSchemaError) as exc:
        raise ResultSchemaError(f"analysis {where}.{key}: {exc}; " + _FIX) from None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """One candidate arm's line of a verdict table (a row of :attr:`GridResult.table`).

    Attributes
    ----------
    arm, baseline : str
        Candidate and the arm it is compared with.
    n, n_baseline : int
        Analysed runs (blocks, when paired) of the candidate and of the baseline.
    mean, median : float or None
        The candidate's mean and median of the metric, in the metric's units.
    ratio, ratio_ci_low, ratio_ci_high : float or None
        Primary ratio candidate/baseline and its ``1 - alpha`` CI (None: unbounded).
    ratio_of_means, ratio_bca_ci_low, ratio_bca_ci_high, ratio_bca_calibrated, median_ratio
        Secondary estimates (see :class:`pullbench.Comparison`).
    test : str
        ``"welch"`` or ``"paired_log_t"``.
    p, p_holm, p_bh, p_adjusted, tost_p, tost_p_adjusted : float or None
        Raw and adjusted p-values; ``p_adjusted`` and ``tost_p_adjusted`` decide ``verdict``.
    verdict, verdict_unadjusted : str
        ``faster``, ``slower``, ``equivalent`` or ``inconclusive``.
    significant_but_small, paired : bool
    """

    arm: str
    n: int
    n_baseline: int
    mean: float | None
    median: float | None
    ratio: float | None
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    ratio_of_means: float | None
    ratio_bca_ci_low: float | None
    ratio_bca_ci_high: float | None
    ratio_bca_calibrated: bool
    median_ratio: float | None
    test: str
    p: float | None
    p_holm: float | None
    p_bh: float | None
    p_adjusted: float | None
    tost_p: float | None
    tost_p_adjusted: float | None
    verdict: str
    verdict_unadjusted: str
    significant_but_small: bool
    paired: bool
    baseline: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (non-finite floats become None)."""
        out: dict[str, Any] = _jsonable({f.name: getattr(self, f.name) for f in fields(self)})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "row") -> VerdictRow:
        """Build from :meth:`to_dict`'s output (or a grid table record).

        Raises
        ------
        ResultSchemaError
            A key is missing or has the wrong type.
        """
        kinds: dict[str, Callable[[Any], Any]] = {
            "arm": str, "baseline": str, "test": str, "verdict": str, "verdict_unadjusted": str,
            "n": int, "n_baseline": int, "ratio_bca_calibrated": bool,
            "significant_but_small": bool, "paired": bool,
        }
        data = _jsonable(data) if isinstance(data, Mapping) else data
        return cls(**{f.name: _field(data, f.name, where, kinds.get(f.name, _opt_float))
                      for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """Per-arm descriptives joined into the verdict table (medians over the analysed runs).

    Attributes
    ----------
    arm, strategy : str
    n : int
        Successful, non-warm-up runs of the arm.
    medians : dict of str to float or None
        Median per column (``median_write_bytes``, ``throughput_mb_s``, ``buffer_bytes``,
        ``peak_rss_bytes`` and each analysed metric, those present); None when never measured.
    """

    arm: str
    strategy: str
    n: int
    medians: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """One flat record: ``arm``, ``strategy``, ``n`` and the medians."""
        out: dict[str, Any] = _jsonable({"arm": self.arm, "strategy": self.strategy, "n": self.n,
                                         **self.medians})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "arm") -> ArmSummary:
        """Build from :meth:`to_dict`'s output."""
        medians = {str(k): _opt_float(v) for k, v in data.items()
                   if k not in {"arm", "strategy", "n"}}
        return cls(arm=_field(data, "arm", where, str),
                   strategy=_field(data, "strategy", where, str),
                   n=_field(data, "n", where, int), medians=medians)


@dataclass(frozen=True, slots=True)
class StabilityRow:
    """Does one arm's verdict depend on the machine's load? (see stats._interference)

    Attributes
    ----------
    arm : str
    verdict_all : str
        The verdict on every (complete) block.
    n_quiet, n_disturbed : int
        Blocks without and with a disturbed run.
    verdict_quiet, verdict_disturbed : str or None
        Verdicts on the quiet and on the disturbed blocks alone (None: fewer than 2 such blocks).
    ratio_quiet, ratio_quiet_ci_low, ratio_quiet_ci_high, ratio_disturbed : float or None
        Ratios (candidate / baseline) of those subsets; the quiet one with its CI.
    slope, slope_ci_low, slope_ci_high, slope_p : float or None
        Fit of the per-block log ratio on the block's interference (cores); None with fewer than
        4 blocks or constant interference.
    unstable : bool
        The verdict depends on the load.
    reason : str or None
        Why (one sentence per reason).
    settle_blocks : int or None
        Quiet blocks that would settle the verdict (unstable or inconclusive ones; the power
        planner on the quiet blocks' log ratios).
    settle_goal : str or None
        ``detect`` or ``equivalence``.
    points : tuple of (int, float, float, bool)
        Per block: block, interference (cores), log ratio, disturbed -- for the scatter.
    """

    arm: str
    verdict_all: str
    n_quiet: int
    n_disturbed: int
    verdict_quiet: str | None = None
    ratio_quiet: float | None = None
    ratio_quiet_ci_low: float | None = None
    ratio_quiet_ci_high: float | None = None
    verdict_disturbed: str | None = None
    ratio_disturbed: float | None = None
    slope: float | None = None
    slope_ci_low: float | None = None
    slope_ci_high: float | None = None
    slope_p: float | None = None
    unstable: bool = False
    reason: str | None = None
    settle_blocks: int | None = None
    settle_goal: str | None = None
    points: tuple[tuple[int, float, float, bool], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``points`` as lists)."""
        out: dict[str, Any] = _jsonable({f.name: getattr(self, f.name) for f in fields(self)
                                         if f.name != "points"})
        out["points"] = [[int(b), _jsonable(x), _jsonable(y), bool(d)]
                         for b, x, y, d in self.points]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stability") -> StabilityRow:
        """Build from :meth:`to_dict`'s output."""
        strs = ("verdict_quiet", "verdict_disturbed", "reason", "settle_goal")
        floats = ("ratio_quiet", "ratio_quiet_ci_low", "ratio_quiet_ci_high", "ratio_disturbed",
                  "slope", "slope_ci_low", "slope_ci_high", "slope_p")
        kw: dict[str, Any] = {
            "arm": _field(data, "arm", where, str),
            "verdict_all": _field(data, "verdict_all", where, str),
            "n_quiet": _field(data, "n_quiet", where, int),
            "n_disturbed": _field(data, "n_disturbed", where, int),
            "unstable": bool(data.get("unstable", False)),
            "settle_blocks": _opt_int(data.get("settle_blocks")),
        }
        kw.update({k: None if data.get(k) is None else str(data[k]) for k in strs})
        kw.update({k: _opt_float(data.get(k)) for k in floats})
        kw["points"] = tuple((int(b), float(x) if x is not None else math.nan,
                              float(y) if y is not None else math.nan, bool(d))
                             for b, x, y, d in data.get("points") or ())
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class InterferenceSummary:
    """Which runs and blocks of one image were disturbed, and by which rule.

    Attributes
    ----------
    score : str
        The row column scored (``interference_cores``); ``block_interference`` is its mean.
    quiet_level_cores, spread_cores, threshold_cores : float
        See :class:`pullbench.stats._interference.DisturbanceThreshold`: of ``component`` when
        the score was split, else of the score.
    component : str or None
        ``"other_cpu_cores"`` when the score was split into other processes' CPU and host steal,
        each with its own threshold (a run above either is disturbed); None for one threshold on
        the score (rows without the components).
    steal_quiet_level_cores, steal_threshold_cores : float or None
        The host-steal component's quiet level and threshold (None unless split).
    n_disturbed_by_steal : int
        Runs above the steal threshold.
    busy_level_cores : float or None
        Quiet level of the whole score (other CPU + steal), which decides ``busy_machine``.
    busy_machine : bool
        The quiet level itself was above a quiet machine's (busy throughout).
    rule : str
        The threshold rule in words.
    n_runs, n_disturbed_runs : int
    disturbed_blocks : tuple of int
    block_interference : dict of int to float
        Mean score of each block's runs.
    disturbed_runs : tuple of str
        ``run_id`` of each disturbed run.
    disturbed_by_arm, runs_by_arm : dict of str to int
        Disturbed runs and runs scored, per arm.
    """

    score: str
    quiet_level_cores: float
    spread_cores: float
    threshold_cores: float
    busy_machine: bool
    rule: str
    n_runs: int
    n_disturbed_runs: int
    disturbed_blocks: tuple[int, ...]
    block_interference: Mapping[int, float]
    disturbed_runs: tuple[str, ...] = ()
    disturbed_by_arm: Mapping[str, int] = field(default_factory=dict)
    runs_by_arm: Mapping[str, int] = field(default_factory=dict)
    component: str | None = None
    steal_quiet_level_cores: float | None = None
    steal_threshold_cores: float | None = None
    n_disturbed_by_steal: int = 0
    busy_level_cores: float | None = None

    @property
    def busy_level(self) -> float:
        """Quiet level of the whole score (``quiet_level_cores`` for older records)."""
        return (self.busy_level_cores if self.busy_level_cores is not None
                else self.quiet_level_cores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (block keys as strings)."""
        out: dict[str, Any] = _jsonable({
            "score": self.score, "quiet_level_cores": self.quiet_level_cores,
            "spread_cores": self.spread_cores, "threshold_cores": self.threshold_cores,
            "busy_machine": self.busy_machine, "rule": self.rule, "n_runs": self.n_runs,
            "n_disturbed_runs": self.n_disturbed_runs,
            "disturbed_blocks": list(self.disturbed_blocks),
            "block_interference": {str(b): v for b, v in self.block_interference.items()},
            "disturbed_runs": list(self.disturbed_runs),
            "disturbed_by_arm": dict(self.disturbed_by_arm),
            "runs_by_arm": dict(self.runs_by_arm),
            "component": self.component,
            "steal_quiet_level_cores": self.steal_quiet_level_cores,
            "steal_threshold_cores": self.steal_threshold_cores,
            "n_disturbed_by_steal": self.n_disturbed_by_steal,
            "busy_level_cores": self.busy_level_cores,
        })
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  where: str = "interference") -> InterferenceSummary:
        """Build from :meth:`to_dict`'s output."""
        return cls(
            score=_field(data, "score", where, str),
            quiet_level_cores=_field(data, "quiet_level_cores", where, float),
            spread_cores=_field(data, "spread_cores", where, float),
            threshold_cores=_field(data, "threshold_cores", where, float),
            busy_machine=_field(data, "busy_machine", where, bool),
            rule=_field(data, "rule", where, str),
            n_runs=_field(data, "n_runs", where, int),
            n_disturbed_runs=_field(data, "n_disturbed_runs", where, int),
            disturbed_blocks=_field(data, "disturbed_blocks", where,
                                    lambda v: tuple(int(b) for b in v)),
            block_interference=_field(
                data, "block_interference", where,
                lambda v: {int(b): float(x) for b, x in v.items() if x is not None}),
            disturbed_runs=tuple(str(r) for r in data.get("disturbed_runs") or ()),
            disturbed_by_arm={str(k): int(v)
                              for k, v in (data.get("disturbed_by_arm") or {}).items()},
            runs_by_arm={str(k): int(v) for k, v in (data.get("runs_by_arm") or {}).items()},
            component=None if data.get("component") is None else str(data["component"]),
            steal_quiet_level_cores=_opt_float(data.get("steal_quiet_level_cores")),
            steal_threshold_cores=_opt_float(data.get("steal_threshold_cores")),
            n_disturbed_by_steal=int(data.get("n_disturbed_by_steal") or 0),
            busy_level_cores=_opt_float(data.get("busy_level_cores")),
        )


def _diagnostic(data: Mapping[str, Any]) -> Diagnostic:
    return Diagnostic(kind=str(data["kind"]), severity=str(data["severity"]),
                      message=str(data["message"]),
                      arm=None if data.get("arm") is None else str(data["arm"]),
                      details=dict(data.get("details") or {}))


@dataclass(frozen=True, slots=True)
class ArmDescriptives:
    """One arm's analysed runs of one metric, described (hyperfine's line: mean ± sd, min … max).

    Attributes
    ----------
    n : int
        Analysed runs (after incomplete blocks were dropped).
    mean, sd, minimum, maximum, median : float or None
        In the metric's units; ``sd`` with ddof=1 (None below 2 runs).
    """

    n: int
    mean: float | None
    sd: float | None
    minimum: float | None
    maximum: float | None
    median: float | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable({"n": self.n, "mean": self.mean, "sd": self.sd,
                                         "min": self.minimum, "max": self.maximum,
                                         "median": self.median})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "descriptives") -> ArmDescriptives:
        """Build from :meth:`to_dict`'s output."""
        return cls(n=_field(data, "n", where, int),
                   mean=_field(data, "mean", where, _opt_float),
                   sd=_field(data, "sd", where, _opt_float),
                   minimum=_field(data, "min", where, _opt_float),
                   maximum=_field(data, "max", where, _opt_float),
                   median=_field(data, "median", where, _opt_float))

    @classmethod
    def of(cls, values: Any) -> ArmDescriptives:
        """Describe an array of values (NaN left out)."""
        import numpy as np

        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if not len(v):
            return cls(0, None, None, None, None, None)
        return cls(n=len(v), mean=float(v.mean()),
                   sd=float(v.std(ddof=1)) if len(v) > 1 else None,
                   minimum=float(v.min()), maximum=float(v.max()), median=float(np.median(v)))


@dataclass(frozen=True, slots=True)
class MetricAnalysis:
    """The verdicts of every arm against the baseline on one image and metric.

    Attributes
    ----------
    table : tuple of VerdictRow
        One row per candidate arm (the baseline has none), verdicts Holm-adjusted.
    summary : str
        :meth:`GridResult.summary` (the method stated).
    paired : bool
        True when the blocked (paired) analysis was used.
    incomplete_blocks_dropped : tuple of int
        Blocks left out because a run in them failed.
    diagnostics : tuple of Diagnostic
        A comparison's own diagnostics name their pair as ``"ARM vs BASELINE"``.
    runs_needed : dict of str to int or None
        Runs per arm for 80 % power at the observed effect.
    stability : tuple of StabilityRow
        Verdicts with and without the disturbed blocks (empty without interference data).
    descriptives : dict of str to ArmDescriptives
        Every arm's analysed runs described, the baseline first (empty in files before
        schema 3).
    """

    table: tuple[VerdictRow, ...]
    summary: str
    paired: bool
    incomplete_blocks_dropped: tuple[int, ...]
    diagnostics: tuple[Diagnostic, ...]
    runs_needed: Mapping[str, int | None]
    stability: tuple[StabilityRow, ...] = ()
    descriptives: Mapping[str, ArmDescriptives] = field(default_factory=dict)

    def stability_of(self, arm: str) -> StabilityRow | None:
        """The stability record of ``arm`` (None without interference data)."""
        for row in self.stability:
            if row.arm == arm:
                return row
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``metrics`` entries of ``analysis.json``)."""
        out: dict[str, Any] = {
            "table": [row.to_dict() for row in self.table],
            "summary": self.summary,
            "paired": self.paired,
            "incomplete_blocks_dropped": list(self.incomplete_blocks_dropped),
            "diagnostics": [_jsonable(d.to_dict()) for d in self.diagnostics],
            "runs_needed": dict(self.runs_needed),
        }
        if self.stability:
            out["stability"] = [row.to_dict() for row in self.stability]
        if self.descriptives:
            out["descriptives"] = {a: d.to_dict() for a, d in self.descriptives.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "metric") -> MetricAnalysis:
        """Build from :meth:`to_dict`'s output."""
        rows = _field(data, "table", where, list)
        return cls(
            table=tuple(VerdictRow.from_dict(r, f"{where}.table[{i}]") for i, r in enumerate(rows)),
            summary=_field(data, "summary", where, str),
            paired=_field(data, "paired", where, bool),
            incomplete_blocks_dropped=_field(
                data, "incomplete_blocks_dropped", where, lambda v: tuple(int(b) for b in v)),
            diagnostics=_field(data, "diagnostics", where,
                               lambda v: tuple(_diagnostic(d) for d in v)),
            runs_needed=_field(data, "runs_needed", where,
                               lambda v: {str(a): _opt_int(n) for a, n in v.items()}),
            stability=tuple(StabilityRow.from_dict(r, f"{where}.stability[{i}]")
                            for i, r in enumerate(data.get("stability") or ())),
            descriptives={str(a): ArmDescriptives.from_dict(d, f"{where}.descriptives[{a!r}]")
                          for a, d in (data.get("descriptives") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class ImageAnalysis:
    """Everything analysed for one image.

    Attributes
    ----------
    metrics : dict of str to MetricAnalysis
        Analysed metrics, in the order asked for.
    skipped_metrics : dict of str to str
        Metrics not analysed, with the reason (e.g. measured with probes off).
    arms : tuple of ArmSummary
        Per-arm descriptives, in the order the arms first ran.
    """

    metrics: Mapping[str, MetricAnalysis]
    skipped_metrics: Mapping[str, str]
    arms: tuple[ArmSummary, ...]
    interference: InterferenceSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``images`` entries of ``analysis.json``)."""
        out: dict[str, Any] = {"metrics": {m: r.to_dict() for m, r in self.metrics.items()},
                               "metric_order": [*self.metrics, *self.skipped_metrics],
                               "skipped_metrics": dict(self.skipped_metrics),
                               "arms": [a.to_dict() for a in self.arms]}
        if self.interference is not None:
            out["interference"] = self.interference.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "image") -> ImageAnalysis:
        """Build from :meth:`to_dict`'s output."""
        metrics = _field(data, "metrics", where, dict)
        arms = _field(data, "arms", where, list)
        # analysis.json is written with sorted keys: the order asked for is in metric_order
        # (schema 3); older files put wall time first
        order = {str(m): i for i, m in enumerate(data.get("metric_order") or ["duration_s"])}
        names = sorted(metrics, key=lambda m: order.get(str(m), len(order)))
        return cls(
            metrics={str(m): MetricAnalysis.from_dict(metrics[m], f"{where}.metrics[{m!r}]")
                     for m in names},
            skipped_metrics={str(k): str(v)
                             for k, v in (data.get("skipped_metrics") or {}).items()},
            arms=tuple(ArmSummary.from_dict(a, f"{where}.arms[{i}]") for i, a in enumerate(arms)),
            interference=(InterferenceSummary.from_dict(data["interference"],
                                                        f"{where}.interference")
                          if data.get("interference") else None),
        )


@dataclass(frozen=True, slots=True)
class Analysis:
    """The analysis of a results folder: settings, counts, and per-image results.

    Attributes
    ----------
    schema_version : int
        :data:`ANALYSIS_SCHEMA_VERSION` of the code that made it.
    analyzed_at : str
        ISO 8601 UTC time stamp.
    baseline : str
    margin, alpha : float
        Equivalence margin (fraction) and significance level.
    seed : int
        Bootstrap seed.
    n_runs, n_failed : int
        Successful runs analysed, failed runs excluded (warm-up runs count in neither).
    failed_by_arm : dict of str to int
    failed_messages : tuple of str
        Up to 10 distinct error messages of the failed runs.
    notes : tuple of str
        What was skipped and why.
    images : dict of str to ImageAnalysis
    n_retried : int
        Successful runs that needed a retry or a resume (``retries`` or ``resumes`` > 0): they
        measured a fault as well as the copy, and are left out of the verdicts unless
        ``include_retried`` (then they are in ``n_runs`` too).
    retried_by_arm : dict of str to int
    include_retried : bool
        Whether those runs were analysed.
    exclude_disturbed : bool
        The verdict tables leave out the disturbed blocks (``pullbench analyze
        --exclude-disturbed``).
    """

    schema_version: int
    analyzed_at: str
    baseline: str
    margin: float
    alpha: float
    seed: int
    n_runs: int
    n_failed: int
    failed_by_arm: Mapping[str, int]
    failed_messages: tuple[str, ...]
    notes: tuple[str, ...]
    images: Mapping[str, ImageAnalysis]
    n_retried: int = 0
    retried_by_arm: Mapping[str, int] = field(default_factory=dict)
    include_retried: bool = False
    exclude_disturbed: bool = False

    def image(self, image: str | None = None) -> ImageAnalysis:
        """The analysis of ``image`` (default: the first image).

        Raises
        ------
        ResultSchemaError
            No such image.
        """
        if image is None:
            image = next(iter(self.images))
        if image not in self.images:
            raise ResultSchemaError(
                f"no image {image!r} in the analysis; images: {list(self.images)}")
        return self.images[image]

    def metric(self, image: str | None = None, metric: str = "duration_s") -> MetricAnalysis:
        """The analysis of one image and metric.

        Raises
        ------
        ResultSchemaError
            No such image, or the metric was not analysed (the message says why, if skipped).
        """
        block = self.image(image)
        if metric not in block.metrics:
            why = block.skipped_metrics.get(metric)
            raise ResultSchemaError(
                f"metric {metric!r} was not analysed" + (f" ({why})" if why else "")
                + f"; analysed: {list(block.metrics)}")
        return block.metrics[metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: what ``analysis.json`` holds."""
        return {
            "schema_version": self.schema_version, "analyzed_at": self.analyzed_at,
            "baseline": self.baseline, "margin": self.margin, "alpha": self.alpha,
            "seed": self.seed, "n_runs": self.n_runs, "n_failed": self.n_failed,
            "failed_by_arm": dict(self.failed_by_arm),
            "failed_messages": list(self.failed_messages), "notes": list(self.notes),
            "images": {i: b.to_dict() for i, b in self.images.items()},
            # only when they say something, so earlier analysis.json files read back unchanged
            **({"n_retried": self.n_retried, "retried_by_arm": dict(self.retried_by_arm)}
               if self.n_retried else {}),
            **({"include_retried": True} if self.include_retried else {}),
            **({"exclude_disturbed": True} if self.exclude_disturbed else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> Analysis:
        """Build from :meth:`to_dict`'s output (any schema version up to the current one).

        Parameters
        ----------
        data : mapping
            The parsed ``analysis.json``.
        where : str
            Where it came from, for messages (a path).

        Raises
        ------
        ResultSchemaError
            A key is missing or malformed, or the file is from a newer pullbench; the message
            names the fix, ``pullbench analyze DIR``.
        """
        at = where or "analysis"
        version = _field(data, "schema_version", at, int)
        if version > ANALYSIS_SCHEMA_VERSION:
            raise ResultSchemaError(
                f"{at}: analysis schema_version {version} is newer than this pullbench reads "
                f"({ANALYSIS_SCHEMA_VERSION}); upgrade pullbench or " + _FIX)
        images = _field(data, "images", at, dict)
        return cls(
            schema_version=version,
            analyzed_at=str(data.get("analyzed_at") or ""),
            baseline=_field(data, "baseline", at, str),
            margin=_field(data, "margin", at, float),
            alpha=_field(data, "alpha", at, float),
            seed=_field(data, "seed", at, int),
            n_runs=_field(data, "n_runs", at, int),
            n_failed=_field(data, "n_failed", at, int),
            failed_by_arm={str(k): int(v) for k, v in (data.get("failed_by_arm") or {}).items()},
            failed_messages=tuple(str(m) for m in data.get("failed_messages") or ()),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            images={str(i): ImageAnalysis.from_dict(b, f"{at}: images[{i!r}]")
                    for i, b in images.items()},
            n_retried=int(data.get("n_retried") or 0),
            retried_by_arm={str(k): int(v) for k, v in (data.get("retried_by_arm") or {}).items()},
            include_retried=bool(data.get("include_retried", False)),
            exclude_disturbed=bool(data.get("exclude_disturbed", False)),
        )


def load_analysis(path: str | Path) -> Analysis:
    """Read ``analysis.json`` of a results folder (or the file itself) as an :class:`Analysis`.

    Parameters
    ----------
    path : path
        Results folder or its ``analysis.json``.

    Returns
    -------
    Analysis

    Raises
    ------
    ResultSchemaError
        No analysis.json, not JSON, or not an analysis (the message names the fix,
        ``pullbench analyze DIR``).
    """
    path = Path(path)
    directory, name = (path.parent, path.name) if path.is_file() else (path, ANALYSIS_JSON)
    try:
        data = ResultsStore(directory).read_json(name)
    except ResultSchemaError as exc:
        raise ResultSchemaError(f"{exc}; {_FIX}") from None
    if data is None:
        raise ResultSchemaError(f"{directory / name} does not exist; {_FIX}")
    return Analysis.from_dict(data, str(directory / name))

