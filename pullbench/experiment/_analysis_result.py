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
"""

from __future__ import annotations

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
    "ArmSummary",
    "ImageAnalysis",
    "MetricAnalysis",
    "VerdictRow",
    "load_analysis",
]

#: Version of ``analysis.json``; bump with a changelog line in this module's docstring.
ANALYSIS_SCHEMA_VERSION = 1

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


def _diagnostic(data: Mapping[str, Any]) -> Diagnostic:
    return Diagnostic(kind=str(data["kind"]), severity=str(data["severity"]),
                      message=str(data["message"]),
                      arm=None if data.get("arm") is None else str(data["arm"]),
                      details=dict(data.get("details") or {}))


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
    """

    table: tuple[VerdictRow, ...]
    summary: str
    paired: bool
    incomplete_blocks_dropped: tuple[int, ...]
    diagnostics: tuple[Diagnostic, ...]
    runs_needed: Mapping[str, int | None]

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``images`` entries of ``analysis.json``)."""
        return {"metrics": {m: r.to_dict() for m, r in self.metrics.items()},
                "skipped_metrics": dict(self.skipped_metrics),
                "arms": [a.to_dict() for a in self.arms]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "image") -> ImageAnalysis:
        """Build from :meth:`to_dict`'s output."""
        metrics = _field(data, "metrics", where, dict)
        arms = _field(data, "arms", where, list)
        return cls(
            metrics={str(m): MetricAnalysis.from_dict(r, f"{where}.metrics[{m!r}]")
                     for m, r in metrics.items()},
            skipped_metrics={str(k): str(v)
                             for k, v in (data.get("skipped_metrics") or {}).items()},
            arms=tuple(ArmSummary.from_dict(a, f"{where}.arms[{i}]") for i, a in enumerate(arms)),
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

