"""Analysis of a results folder: verdicts per image and metric, with the spec's defaults.

:func:`analyze_folder` is what ``pullbench analyze``, ``pullbench bench``, the report and the
notebooks call: it reads the rows and the saved spec of a results folder and runs
:func:`analyze_results` with the spec's baseline, metrics, margin, alpha and seed (the
:class:`~pullbench.ExperimentSpec` defaults where the folder has no spec).
:func:`analyze_results` runs :func:`pullbench.analyze_grid` per image and per metric on the
successful, non-warm-up runs and counts the failed runs it excluded; runs that needed a retry or a
resume (``retries``/``resumes`` columns) measured a fault as well as the copy and are left out
too, counted, unless ``include_retried``. :func:`verdict_table` joins
the statistics with what explains them (median write size, throughput, memory held in buffers).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import BenchmarkError, ResultSchemaError, StatsInputError
from ..stats._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN
from ..stats._diagnostics import Diagnostic
from ._analysis_result import (
    ANALYSIS_SCHEMA_VERSION,
    Analysis,
    ArmDescriptives,
    ArmSummary,
    ImageAnalysis,
    InterferenceSummary,
    MetricAnalysis,
    StabilityRow,
    VerdictRow,
)
from ._results import (
    ANALYSIS_JSON,
    ENVIRONMENT_JSON,
    SPEC_JSON,
    ResultsStore,
    _jsonable,
    load_results,
    resolve_results_path,
)

__all__ = ["PROBE_COLUMNS", "analyze_folder", "analyze_results", "lower_is_better",
           "save_analysis", "verdict_table"]

logger = logging.getLogger(__name__)

#: Per-arm descriptive columns joined into the verdict table (median over runs).
EXPLAIN_COLUMNS = ("median_write_bytes", "throughput_mb_s", "buffer_bytes", "peak_rss_bytes")

#: Columns that only the puller's probes measure (absent with ``probes=False`` / ``--no-probes``).
PROBE_COLUMNS = frozenset({
    "cpu_user_s", "cpu_sys_s", "cpu_s", "cpu_ns_per_byte", "process_cpu_user_s",
    "process_cpu_sys_s", "peak_rss_bytes", "syscr", "syscw", "rchar", "wchar", "read_count",
    "write_count", "median_write_bytes", "read_size_hist", "write_size_hist", "hash_s",
    "write_s",
})


def lower_is_better(metric: str) -> bool:
    """False for rates (``*_mb_s``, ``*_per_s``), True for times, CPU, bytes held, counts."""
    return not (metric.endswith("_mb_s") or metric.endswith("_per_s"))


#: Per-run fault columns (written by the puller): a run with any of them > 0 needed a retry or
#: a resume. Runs of arms that do not report them count as clean.
FAULT_COLUMNS = ("retries", "resumes")


def retried_mask(df: pd.DataFrame) -> pd.Series:
    """True for the rows that needed a retry or a resume (missing values count as 0)."""
    mask = pd.Series(False, index=df.index)
    for column in FAULT_COLUMNS:
        if column in df.columns:
            mask |= pd.to_numeric(df[column], errors="coerce").fillna(0) > 0
    return mask


def _analysis_frame(df: pd.DataFrame, include_retried: bool = False,
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split rows into (analysable ok runs, failed runs, retried ok runs); warm-up runs are
    dropped from all. With ``include_retried`` the retried runs are analysed too."""
    if "warmup" in df.columns:
        df = df[~df["warmup"].astype(bool)]
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    retried = ok[retried_mask(ok)]
    if not include_retried:
        ok = ok[~retried_mask(ok)]
    return (ok.reset_index(drop=True), failed.reset_index(drop=True),
            retried.reset_index(drop=True))


def analyze_results(
    df: pd.DataFrame,
    *,
    baseline: str,
    metrics: Sequence[str] = ("duration_s", "cpu_ns_per_byte"),
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    n_resamples: int = 9999,
    include_retried: bool = False,
    exclude_disturbed: bool = False,
) -> Analysis:
    """Verdicts of every arm against ``baseline``, per image and metric.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows as returned by :func:`pullbench.load_results` (warm-up and failed runs may be
        included: they are excluded here and counted).
    baseline : str
        Arm name of the baseline.
    metrics : sequence of str
        Columns to analyse (lower is better for each).
    margin : float
        Equivalence margin (fraction of the baseline).
    alpha : float
        Significance level.
    seed : int
        Seed of the bootstrap generator.
    n_resamples : int
        Bootstrap resamples.
    include_retried : bool
        Analyse the runs that needed a retry or a resume too (default: leave them out and count
        them, per arm, in ``n_retried`` / ``retried_by_arm`` and a note).
    exclude_disturbed : bool
        Give the verdicts on the quiet blocks only (``pullbench analyze --exclude-disturbed``);
        the stability records still compare all, quiet and disturbed blocks.

    Returns
    -------
    Analysis
        Per image (:attr:`Analysis.images`) the analysed metrics (:class:`MetricAnalysis`: the
        verdict rows, diagnostics, runs needed), the skipped metrics with their reason, and
        per-arm medians; ``to_dict()`` is what ``analysis.json`` holds.

    When the runs unpacked (arms with an unpack plan), each stage of :data:`STAGE_METRICS`
    (resolve, transfer, the hash and write stages inside the transfer, decompress, unpack, and
    the unpack tail after the last blob) gets a verdict of its own too.

    When the rows carry the interference probes' ``interference_cores`` (runs made since they
    exist), each image also gets an :class:`InterferenceSummary` (disturbed runs and blocks,
    by the threshold of :func:`pullbench.stats._interference.disturbance_threshold` derived from
    this experiment's quietest runs) and each metric a :class:`StabilityRow` per arm: the
    verdict on the quiet and on the disturbed blocks alone, the regression of the per-block
    log ratio on the block's interference, ``unstable`` with its reason, and the quiet blocks
    that would settle an unstable or inconclusive verdict.

    A metric that was not measured is skipped, with its reason in ``skipped_metrics`` and
    ``notes``, never given a verdict: a probe metric (CPU time, CPU per byte, peak RSS, counters;
    :data:`PROBE_COLUMNS`) of runs made with probes off (``probes`` column False, ``--no-probes``),
    or a metric with no value at all for the baseline or another arm.

    Raises
    ------
    StatsInputError
        The baseline has no successful runs, or a metric column is missing.
    """
    from ..stats._stats import analyze_grid

    ok, failed, retried = _analysis_frame(df, include_retried)
    images = sorted(ok["image"].unique()) if len(ok) else []
    retried_by_arm = ({str(k): int(v) for k, v in retried.groupby("arm").size().items()}
                      if len(retried) else {})
    if not images:
        also = (f", {len(retried)} left out because they needed retries or resumes "
                "(--include-retried keeps them)" if len(retried) and not include_retried else "")
        raise StatsInputError(
            f"no successful runs to analyse ({len(failed)} failed{also}); see the 'error' "
            "column"
        )
    notes: list[str] = []
    if len(retried):
        arms = ", ".join(f"{k}: {v}" for k, v in retried_by_arm.items())
        notes.append(
            f"{len(retried)} run(s) needed retries or resumes ({arms}); "
            + ("analysed anyway (--include-retried)" if include_retried else
               "left out of the verdicts: they measured the faults as well as the copy "
               "(--include-retried keeps them)"))
    per_image: dict[str, ImageAnalysis] = {}
    metrics = [*metrics, *_stage_metrics(ok, metrics)]
    for image in images:
        sub = ok[ok["image"] == image]
        if baseline not in set(sub["arm"]):
            raise StatsInputError(
                f"baseline arm {baseline!r} has no successful runs for image {image!r}; arms with "
                f"runs: {sorted(set(sub['arm']))}"
            )
        per_metric: dict[str, MetricAnalysis] = {}
        skipped: dict[str, str] = {}
        interference = _interference_summary(sub)
        if interference is not None and interference.busy_machine:
            notes.append(f"{image}: the machine was busy for the whole experiment (quiet level "
                         f"{interference.busy_level:.2f} cores of other work and steal even in "
                         "the quietest runs): every verdict is marked unstable")
        for metric in metrics:
            if metric not in sub.columns:
                raise StatsInputError(
                    f"metric {metric!r} is not a column of the results; columns: "
                    f"{sorted(c for c in sub.columns if pd.api.types.is_numeric_dtype(sub[c]))}"
                )
            reason = _unmeasured(sub, metric, baseline)
            if reason is not None:
                skipped[metric] = reason
                notes.append(f"{image}: {metric} skipped: {reason}")
                logger.info("%s: %s skipped: %s", image, metric, reason)
                continue
            data = sub[["arm", "block", metric]].copy()
            data[metric] = pd.to_numeric(data[metric], errors="coerce")
            data = data.dropna().astype({metric: float})
            data, dropped = _complete_blocks(data)

            def grid_of(frame: pd.DataFrame, resamples: int, metric: str = metric) -> Any:
                return analyze_grid(
                    frame, metric=metric, arm="arm", baseline=baseline, block="block",
                    margin=margin, alpha=alpha, rng=np.random.default_rng(seed),
                    n_resamples=resamples, lower_is_better=lower_is_better(metric),
                )

            grid = grid_of(data, n_resamples)
            analysed = data
            stability: tuple[StabilityRow, ...] = ()
            if interference is not None:
                stability, quiet_grid = _stability(
                    data, grid, interference, metric=metric, baseline=baseline, margin=margin,
                    alpha=alpha, grid_of=lambda f: grid_of(f, min(n_resamples, 1999)))
                if exclude_disturbed:
                    if quiet_grid is None:
                        raise StatsInputError(
                            f"{image}: --exclude-disturbed leaves fewer than 2 quiet blocks "
                            f"({len(interference.disturbed_blocks)} of "
                            f"{data['block'].nunique()} are disturbed); analyse all blocks or "
                            "re-run on a quieter machine")
                    analysed = data[~data["block"].isin(interference.disturbed_blocks)]
                    grid = grid_of(analysed, n_resamples)
            per_metric[metric] = MetricAnalysis(
                # exact floats: pandas to_json keeps 10 digits and turned p = 3e-14 into 0.0
                table=tuple(VerdictRow.from_dict(rec)
                            for rec in grid.table.to_dict(orient="records")),
                summary=grid.summary(),
                paired=bool(grid.paired),
                incomplete_blocks_dropped=tuple(dropped),
                diagnostics=_diagnostics(
                    grid, baseline, analysed,
                    () if interference is None else interference.disturbed_blocks),
                runs_needed={str(a): c.runs_needed_per_arm for a, c in grid.comparisons.items()},
                stability=stability,
                descriptives=_describe(analysed, metric, baseline),
            )
        per_image[str(image)] = ImageAnalysis(metrics=per_metric, skipped_metrics=skipped,
                                              arms=_arm_descriptives(sub, metrics),
                                              interference=interference)
    return Analysis(
        schema_version=ANALYSIS_SCHEMA_VERSION,
        analyzed_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        baseline=baseline, margin=float(margin), alpha=float(alpha), seed=int(seed),
        n_runs=len(ok), n_failed=len(failed),
        failed_by_arm={str(k): int(v) for k, v in failed.groupby("arm").size().items()}
        if len(failed) else {},
        failed_messages=tuple(sorted({str(m) for m in failed.get("error", pd.Series())
                                      .dropna()})[:10]),
        notes=tuple(notes),
        images=per_image,
        n_retried=len(retried),
        retried_by_arm=retried_by_arm,
        include_retried=bool(include_retried),
        exclude_disturbed=exclude_disturbed,
    )


def _describe(data: pd.DataFrame, metric: str, baseline: str) -> dict[str, ArmDescriptives]:
    """Every arm's analysed values of ``metric`` described, the baseline first."""
    arms = [baseline, *(a for a in dict.fromkeys(data["arm"]) if a != baseline)]
    return {str(a): ArmDescriptives.of(data.loc[data["arm"] == a, metric]) for a in arms}


#: The row column that scores a run's interference (see pullbench.experiment._interference).
INTERFERENCE_SCORE = "interference_cores"


#: The component of the score that is other processes' CPU; the rest is host steal.
OTHER_CPU_COMPONENT = "other_cpu_cores"


def _interference_summary(sub: pd.DataFrame, *, floor_cores: float | None = None
                          ) -> InterferenceSummary | None:
    """Disturbed runs and blocks of one image's analysed runs (None: no interference columns).

    Where the rows hold the score's components, each gets its own threshold from its own quiet
    baseline and a run is disturbed when either exceeds it: other processes' CPU
    (``other_cpu_cores``) and host steal (the rest of ``interference_cores``). Steal on a shared
    VM host can vary by tenths of a core from run to run; in a single score that spread would
    raise the threshold above a burner's share of the puller's CPU. Older rows (the score alone)
    get the one threshold on the score. ``floor_cores`` overrides the threshold's floor (the
    benchmark re-thresholds with several).
    """
    from ..stats._interference import DISTURBANCE_FLOOR_CORES, disturbance_threshold

    if INTERFERENCE_SCORE not in sub.columns:
        return None
    scores = pd.to_numeric(sub[INTERFERENCE_SCORE], errors="coerce")
    valid = scores.notna() & np.isfinite(scores)
    if not valid.any():
        return None
    floor = DISTURBANCE_FLOOR_CORES if floor_cores is None else floor_cores
    cpus = pd.to_numeric(sub.get("cpus_online", pd.Series(dtype=float)), errors="coerce")
    cpu_count = int(cpus.max()) if len(cpus) and cpus.notna().any() else None
    combined = disturbance_threshold(scores[valid].to_numpy(), floor_cores=floor,
                                     cpu_count=cpu_count)
    other = (pd.to_numeric(sub[OTHER_CPU_COMPONENT], errors="coerce")
             if OTHER_CPU_COMPONENT in sub.columns else None)
    split = other is not None and bool((other[valid].notna() & np.isfinite(other[valid])).all())
    steal_level = steal_threshold = None
    by_steal = 0
    if split:
        assert other is not None
        steal = scores - other
        main = disturbance_threshold(other[valid].to_numpy(), floor_cores=floor,
                                     cpu_count=cpu_count)
        host = disturbance_threshold(steal[valid].to_numpy(), floor_cores=floor,
                                     cpu_count=cpu_count)
        over_steal = valid & (steal > host.threshold_cores)
        disturbed = (valid & (other > main.threshold_cores)) | over_steal
        steal_level, steal_threshold = host.quiet_level_cores, host.threshold_cores
        by_steal = int(over_steal.sum())
        rule = f"other processes' CPU: {main.rule}; host steal: {host.rule}"
    else:
        main = combined
        disturbed = valid & (scores > main.threshold_cores)
        rule = main.rule
    blocks = sub["block"].astype(int)
    block_mean = scores[valid].groupby(blocks[valid]).mean()
    return InterferenceSummary(
        score=INTERFERENCE_SCORE, quiet_level_cores=main.quiet_level_cores,
        spread_cores=main.spread_cores, threshold_cores=main.threshold_cores,
        busy_machine=combined.busy_machine, rule=rule, n_runs=int(valid.sum()),
        n_disturbed_runs=int(disturbed.sum()),
        disturbed_blocks=tuple(sorted({int(b) for b in blocks[disturbed]})),
        block_interference={int(b): float(v) for b, v in block_mean.items()},
        disturbed_runs=tuple(str(r) for r in sub.loc[disturbed, "run_id"])
        if "run_id" in sub.columns else (),
        disturbed_by_arm={str(a): int(v) for a, v in disturbed.groupby(sub["arm"]).sum().items()},
        runs_by_arm={str(a): int(v) for a, v in valid.groupby(sub["arm"]).sum().items()},
        component=OTHER_CPU_COMPONENT if split else None,
        steal_quiet_level_cores=steal_level, steal_threshold_cores=steal_threshold,
        n_disturbed_by_steal=by_steal, busy_level_cores=combined.quiet_level_cores,
    )


def _block_log_ratios(data: pd.DataFrame, metric: str, arm: str, baseline: str) -> pd.Series:
    """``log(arm / baseline)`` per block (blocks holding both arms)."""
    wide = data.pivot_table(index="block", columns="arm", values=metric, aggfunc="first")
    if arm not in wide.columns or baseline not in wide.columns:
        return pd.Series(dtype=float)
    both = wide[[arm, baseline]].dropna()
    both = both[(both[arm] > 0) & (both[baseline] > 0)]
    return pd.Series(np.log(both[arm].to_numpy()) - np.log(both[baseline].to_numpy()),
                     index=both.index.astype(int))


def _stability(data: pd.DataFrame, grid: Any, interference: InterferenceSummary, *,
               metric: str, baseline: str, margin: float, alpha: float,
               grid_of: Any) -> tuple[tuple[StabilityRow, ...], Any]:
    """Each arm's verdict on all, quiet and disturbed blocks; dependence; unstable; advice."""
    from ..stats._interference import blocks_to_settle, interference_dependence, unstable_reason

    disturbed = set(interference.disturbed_blocks)
    in_dist = data["block"].astype(int).isin(disturbed)
    quiet_data, dist_data = data[~in_dist], data[in_dist]

    def subset_grid(frame: pd.DataFrame) -> Any:
        if frame["block"].nunique() < 2:
            return None
        try:
            return grid_of(frame)
        except StatsInputError:
            return None

    quiet_grid, dist_grid = subset_grid(quiet_data), subset_grid(dist_data)

    def row_of(g: Any, arm: str) -> dict[str, Any] | None:
        if g is None:
            return None
        rows = g.table[g.table["arm"] == arm]
        return rows.iloc[0].to_dict() if len(rows) else None

    lower = lower_is_better(metric)
    out = []
    for rec in grid.table.to_dict(orient="records"):
        arm = str(rec["arm"])
        q, d = row_of(quiet_grid, arm), row_of(dist_grid, arm)
        ratios = _block_log_ratios(data, metric, arm, baseline)
        x = [interference.block_interference.get(int(b), math.nan) for b in ratios.index]
        keep = [i for i, v in enumerate(x) if np.isfinite(v)]
        dep = (interference_dependence(ratios.to_numpy()[keep], np.asarray(x)[keep],
                                       alpha=alpha) if keep else None)
        ratio_q = _opt(q, "ratio")
        ratio_d = _opt(d, "ratio")
        reason = unstable_reason(
            verdict_all=str(rec["verdict"]), verdict_quiet=None if q is None else str(q["verdict"]),
            ratio_quiet=ratio_q, verdict_disturbed=None if d is None else str(d["verdict"]),
            ratio_disturbed=ratio_d, dependence=dep, lower_is_better=lower,
            busy_level_cores=interference.busy_level if interference.busy_machine else None)
        settle = None
        if reason is not None or str(rec["verdict"]) == "inconclusive":
            quiet_ratios = ratios[~ratios.index.isin(disturbed)]
            settle = blocks_to_settle(quiet_ratios.to_numpy(), margin=margin, alpha=alpha)
        out.append(StabilityRow(
            arm=arm, verdict_all=str(rec["verdict"]),
            n_quiet=int(quiet_data["block"].nunique()),
            n_disturbed=int(dist_data["block"].nunique()),
            verdict_quiet=None if q is None else str(q["verdict"]), ratio_quiet=ratio_q,
            ratio_quiet_ci_low=_opt(q, "ratio_ci_low"),
            ratio_quiet_ci_high=_opt(q, "ratio_ci_high"),
            verdict_disturbed=None if d is None else str(d["verdict"]), ratio_disturbed=ratio_d,
            slope=None if dep is None else dep.slope,
            slope_ci_low=None if dep is None else dep.slope_ci_low,
            slope_ci_high=None if dep is None else dep.slope_ci_high,
            slope_p=None if dep is None else dep.p,
            unstable=reason is not None, reason=reason,
            settle_blocks=None if settle is None else settle.blocks,
            settle_goal=None if settle is None else settle.goal,
            points=tuple((int(b), float(interference.block_interference.get(int(b), math.nan)),
                          float(v), int(b) in disturbed) for b, v in ratios.items()),
        ))
    return tuple(out), quiet_grid


def _opt(rec: Mapping[str, Any] | None, key: str) -> float | None:
    if rec is None:
        return None
    value = rec.get(key)
    if value is None or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _spec_defaults() -> dict[str, Any]:
    """The analysis settings of a default :class:`~pullbench.ExperimentSpec`."""
    from ._spec import ExperimentSpec

    wanted = ("metrics", "margin", "alpha", "seed")
    return {f.name: f.default for f in fields(ExperimentSpec) if f.name in wanted}


def analyze_folder(
    directory: str | Path,
    *,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    margin: float | None = None,
    alpha: float | None = None,
    seed: int | None = None,
    n_resamples: int = 9999,
    save: bool = True,
    include_retried: bool = False,
    exclude_disturbed: bool = False,
    keep_saved_metrics: bool = True,
) -> Analysis:
    """Analyse a results folder with its spec's settings (what ``pullbench analyze`` does).

    Parameters
    ----------
    directory : path
        Results folder (``rows.jsonl``, ``spec.json`` ...), a rows file in one
        (``rows.parquet``, ``rows.csv``), or a name :func:`pullbench.resolve_results_path`
        knows (``"shipped"``).
    baseline, metrics, margin, alpha, seed : optional
        Override the spec's (``seed`` seeds the bootstrap). The spec is ``spec.json``, else the
        spec recorded in ``environment.json``; :class:`~pullbench.ExperimentSpec`'s defaults
        apply where the folder records none (the baseline then is the first arm of the rows).
    n_resamples : int
        Bootstrap resamples.
    save : bool
        Write ``analysis.json`` with :func:`save_analysis` (left untouched when only the time
        stamp would change).
    include_retried : bool
        Analyse runs that needed a retry or a resume too (see :func:`analyze_results`).
    exclude_disturbed : bool
        Verdicts on the quiet blocks only (see :func:`analyze_results`).
    keep_saved_metrics : bool
        Analyses add up: the spec's metrics and those ``analysis.json`` already holds are
        analysed again, with the same settings, next to ``metrics`` (so ``pullbench analyze
        --metric X`` adds X and keeps wall time; the report still has every section), wall time
        first. False: only ``metrics``.

    Returns
    -------
    Analysis
        As :func:`analyze_results`.

    Raises
    ------
    ResultSchemaError
        Not a results folder.
    BenchmarkError
        The folder holds no runs yet.
    StatsInputError
        As :func:`analyze_results`.
    """
    path = resolve_results_path(directory)
    store = ResultsStore(path if path.is_dir() else path.parent)
    spec = store.read_json(SPEC_JSON) or (store.read_json(ENVIRONMENT_JSON) or {}).get("spec") or {}
    defaults = {**_spec_defaults(), **{k: v for k, v in spec.items() if v is not None}}
    df = load_results(path, include_warmup=True)
    if df.empty:
        raise BenchmarkError(f"{store.directory} holds no runs yet")
    wanted = tuple(metrics or defaults["metrics"])
    if keep_saved_metrics:
        wanted = _with_saved_metrics(store, (*defaults["metrics"], *wanted), df)
    analysis = analyze_results(
        df,
        baseline=baseline or defaults.get("baseline") or str(df["arm"].iloc[0]),
        metrics=wanted,
        margin=float(margin if margin is not None else defaults["margin"]),
        alpha=float(alpha if alpha is not None else defaults["alpha"]),
        seed=int(seed if seed is not None else defaults["seed"]),
        n_resamples=n_resamples,
        include_retried=include_retried,
        exclude_disturbed=exclude_disturbed,
    )
    if save:
        save_analysis(store.directory, analysis)
    return analysis


def _with_saved_metrics(store: ResultsStore, metrics: tuple[str, ...],
                        df: pd.DataFrame) -> tuple[str, ...]:
    """``metrics`` (the spec's, then those asked for) and those already in ``analysis.json``
    (analysed or skipped), each once; wall time first when it is among them."""
    try:
        saved = store.read_json(ANALYSIS_JSON) or {}
    except ResultSchemaError:
        return metrics  # an unreadable analysis.json is replaced
    before: list[str] = []
    for block in (saved.get("images") or {}).values():
        if isinstance(block, Mapping):
            for key in ("metrics", "skipped_metrics"):
                before += [str(m) for m in (block.get(key) or {})]
    kept = [m for m in before if m in df.columns]
    merged = list(dict.fromkeys([*metrics, *kept]))
    return tuple(sorted(merged, key=lambda m: m != "duration_s"))  # stable: the rest keep order


def _same_json(old: Any, new: Any) -> bool:
    """Equal JSON values, floats to 12 significant digits (the last bits vary with the BLAS)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(_same_json(old[k], new[k]) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same_json(a, b) for a, b in zip(old, new, strict=True))
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-12, abs_tol=1e-300)
    return bool(old == new) and type(old) is type(new)


def _same_analysis(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when two analyses differ at most in ``analyzed_at`` (compared as stored JSON)."""
    if old is None:
        return False
    strip = [json.loads(json.dumps(_jsonable({k: v for k, v in a.items() if k != "analyzed_at"})))
             for a in (old, new)]
    return _same_json(strip[0], strip[1])


def save_analysis(directory: str | Path, analysis: Analysis) -> bool:
    """Write ``analysis.json`` unless it already holds this analysis (time stamp aside).

    Leaving the file byte-identical keeps committed results clean in git. A file that is not a
    readable analysis is replaced.

    Returns
    -------
    bool
        Whether the file was (re)written.
    """
    store = ResultsStore(Path(directory))
    try:
        old = store.read_json(ANALYSIS_JSON)
    except ResultSchemaError:
        old = None
    new = analysis.to_dict()
    if _same_analysis(old, new):
        return False
    store.write_json(ANALYSIS_JSON, new)
    return True


def _diagnostics(grid: Any, baseline: str, data: pd.DataFrame | None = None,
                 disturbed_blocks: Sequence[int] = ()) -> tuple[Diagnostic, ...]:
    """The grid's diagnostics, JSON-ready; a comparison's own (arm None) gets "ARM vs BASELINE".

    An ``outliers`` warning whose outlying runs all lie in disturbed blocks (``data``: the rows
    the grid analysed, to map the runs back to their blocks) becomes an ``info``: the
    interference probes already explain those runs, and the disturbance is the diagnostic
    shown first. Outliers the probes do not explain stay warnings (``details`` say which
    blocks held the outliers and how many of them were disturbed).
    """
    disturbed = {int(b) for b in disturbed_blocks}
    out = []
    for diag in grid.diagnostics:
        arm = diag.arm
        severity, message = diag.severity, diag.message
        details = _jsonable(diag.details)
        if arm is None:
            pair = [a for a, c in grid.comparisons.items() if diag in c.diagnostics]
            if len(pair) == 1:
                arm = f"{pair[0]} vs {baseline}"
        elif diag.kind == "outliers" and data is not None and "block" in data.columns:
            part = data[data["arm"] == arm]
            if grid.paired:  # the grid sorts a blocked table by block (stable)
                part = part.sort_values("block", kind="stable")
            blocks = part["block"].astype(int).to_list()
            where = [blocks[i] for i in diag.details.get("indices", ()) if i < len(blocks)]
            explained = sum(b in disturbed for b in where)
            details = {**details, "blocks": where, "in_disturbed_blocks": explained}
            if where and explained == len(where) and severity == "warning":
                severity = "info"
                message = (f"explained by interference: every outlier run is in a disturbed "
                           f"block ({', '.join(map(str, where))}); " + message)
        out.append(Diagnostic(kind=diag.kind, severity=severity, message=message,
                              arm=arm, details=details))
    return tuple(out)


#: Per-stage metrics given a verdict of their own when the runs unpacked (an arm with an
#: UnpackPlan: ``decompressor`` is set), besides the requested metrics on the total.
STAGE_METRICS = ("resolve_s", "transfer_s", "hash_s", "write_s", "decompress_s", "unpack_s",
                 "unpack_tail_s")


def _stage_metrics(ok: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    if "decompressor" not in ok.columns or not ok["decompressor"].notna().any():
        return []
    return [m for m in STAGE_METRICS if m in ok.columns and m not in metrics]


def _unmeasured(sub: pd.DataFrame, metric: str, baseline: str) -> str | None:
    """Why ``metric`` cannot be analysed for these rows (None: it can)."""
    if metric in PROBE_COLUMNS and "probes" in sub.columns:
        probes = sub["probes"].map(lambda v: v is True or v in (1, "true", "True"))
        if not probes.any():
            return ("not measured: the runs were made with probes off (--no-probes / "
                    "probes=False), which records no CPU time, RSS or read/write counts")
        if not probes.all():
            return ("measured in only some runs (probes were off in the others); "
                    "no verdict on partial data")
    values = pd.to_numeric(sub[metric], errors="coerce")
    missing = sorted(str(a) for a, v in values.groupby(sub["arm"]) if v.notna().sum() == 0)
    if missing:
        which = "the baseline" if missing == [baseline] else "arm(s) " + ", ".join(missing)
        return f"not measured: no value in any run of {which}"
    return None


def _complete_blocks(data: pd.DataFrame) -> tuple[pd.DataFrame, list[Any]]:
    """Keep the blocks that hold exactly one run of every arm (a failed run breaks its block).

    The paired (blocked) analysis needs complete blocks; if fewer than two remain, every run is
    kept and the statistics fall back to independent runs (Welch).
    """
    arms = data["arm"].nunique()
    counts = data.groupby("block")["arm"].agg(["count", "nunique"])
    complete = counts[(counts["count"] == arms) & (counts["nunique"] == arms)].index
    dropped = sorted(set(data["block"]) - set(complete))
    if not dropped or len(complete) < 2:
        return data, []
    return data[data["block"].isin(complete)], [int(b) for b in dropped]


def _arm_descriptives(sub: pd.DataFrame, metrics: Sequence[str]) -> tuple[ArmSummary, ...]:
    cols = [c for c in EXPLAIN_COLUMNS if c in sub.columns]
    cols += [m for m in metrics if m in sub.columns and m not in cols]
    rows = []
    for arm, group in sub.groupby("arm", sort=False):
        medians: dict[str, float | None] = {}
        for col in cols:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            medians[col] = float(values.median()) if len(values) else None
        rows.append(ArmSummary(arm=str(arm), strategy=str(group.iloc[0].get("strategy", "")),
                               n=len(group), medians=medians))
    return tuple(rows)


def _as_analysis(analysis: Analysis | Mapping[str, Any]) -> Analysis:
    """An :class:`Analysis`, from itself or from its ``to_dict()`` (a parsed analysis.json)."""
    return analysis if isinstance(analysis, Analysis) else Analysis.from_dict(analysis)


def verdict_table(analysis: Analysis | Mapping[str, Any], image: str | None = None,
                  metric: str = "duration_s") -> pd.DataFrame:
    """The verdict table of one image and metric, joined with per-arm explanations.

    Parameters
    ----------
    analysis : Analysis or mapping
        From :func:`analyze_results` / :func:`analyze_folder` (or a parsed ``analysis.json``).
    image : str, optional
        Default: the first image.
    metric : str
        An analysed metric.

    Returns
    -------
    pandas.DataFrame
        One row per arm, the baseline first (verdict ``baseline``, ratio 1): the
        :class:`VerdictRow` columns, then strategy and the per-arm medians (median_write_bytes,
        throughput_mb_s, buffer_bytes, peak_rss_bytes, those present); with interference data
        also unstable, unstable_reason, verdict_quiet, ratio_quiet, verdict_disturbed,
        ratio_disturbed, interference_slope, interference_slope_p and settle_blocks
        (:class:`StabilityRow`); from schema 3 ``sd``, ``min`` and ``max`` of the metric
        (:class:`ArmDescriptives`; ``mean`` and ``median`` then given for the baseline too).

    Raises
    ------
    ResultSchemaError
        No such image, or the metric was not analysed.
    """
    analysis = _as_analysis(analysis)
    block = analysis.image(image)
    result = analysis.metric(image, metric)
    table = pd.DataFrame([row.to_dict() for row in result.table],
                         columns=[f.name for f in fields(VerdictRow)])
    arms = pd.DataFrame([a.to_dict() for a in block.arms])
    baseline = analysis.baseline
    base = [a for a in block.arms if a.arm == baseline]
    if base and baseline not in set(table["arm"]):
        n_base = result.table[0].n_baseline if result.table else base[0].n
        head = pd.DataFrame([{"arm": baseline, "n": n_base, "median": base[0].medians.get(metric),
                              "ratio": 1.0, "verdict": "baseline"}])
        table = pd.concat([head, table], ignore_index=True) if len(table) else head
    dropped = ["n"] if metric in EXPLAIN_COLUMNS else ["n", metric]
    arms = arms.drop(columns=dropped, errors="ignore")
    table = table.merge(arms, on="arm", how="left")
    if result.stability:
        stab = pd.DataFrame([{
            "arm": r.arm, "unstable": r.unstable, "unstable_reason": r.reason,
            "verdict_quiet": r.verdict_quiet, "ratio_quiet": r.ratio_quiet,
            "verdict_disturbed": r.verdict_disturbed, "ratio_disturbed": r.ratio_disturbed,
            "interference_slope": r.slope, "interference_slope_p": r.slope_p,
            "settle_blocks": r.settle_blocks} for r in result.stability])
        table = table.merge(stab, on="arm", how="left")
    if result.descriptives:  # schema 3: mean ± sd, min … max of every arm, the baseline's too
        desc = result.descriptives
        for column, attr in (("mean", "mean"), ("sd", "sd"), ("min", "minimum"),
                             ("max", "maximum"), ("median", "median")):
            old = table[column] if column in table else pd.Series([None] * len(table))
            table[column] = [getattr(desc[a], attr) if a in desc else v
                             for a, v in zip(table["arm"], old, strict=True)]
    return table
