"""The verdict table as text, and the HTML report of a results folder.

:func:`format_verdict_table` is what ``pullbench bench`` and ``analyze`` print for one image and
metric of an analysis (:mod:`pullbench.experiment._analysis`); :func:`render_report` writes a
self-contained HTML page with the same tables and the plots embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..stats._diagnostics import Diagnostic
from ._analysis import (
    _analysis_frame,
    _as_analysis,
    analyze_folder,
    lower_is_better,
    verdict_table,
)
from ._analysis_result import Analysis, MetricAnalysis, load_analysis
from ._results import ANALYSIS_JSON, ENVIRONMENT_JSON, REPORT_HTML, ResultsStore, load_results

__all__ = ["DIAGNOSTIC_RANK", "PLOT_ERROR_CLASS", "format_analysis", "format_diagnostic_details",
           "format_diagnostics", "format_stability", "format_verdict_table", "plots_unavailable",
           "render_report"]

logger = logging.getLogger(__name__)

METRIC_LABELS = {
    "duration_s": "wall time of the pull (s)",
    "cpu_ns_per_byte": "CPU time (user + sys) per byte (ns/B)",
    "cpu_s": "CPU time, user + sys (s)",
    "throughput_mb_s": "throughput (MB/s)",
    "peak_rss_bytes": "peak RSS (bytes)",
}


def _fmt_bytes(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    value = float(value)
    for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{value / factor:.4g} {unit}"
    return f"{value:.0f} B"


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec)


def ratio_phrase(ratio: float | None, low: float | None, high: float | None, *, metric: str,
                 reference: str) -> str:
    """A ratio candidate/reference as hyperfine says it: ``1.49× faster than go-iocopy [1.39,
    1.61]``.

    The factor is the ratio, or its inverse below 1, so that it is at least 1; the bracket is
    the CI of that same factor (a bound below 1 means the CI reaches the other direction). Time
    and rate metrics read faster/slower, others lower/higher. A factor that rounds to 1.00 reads
    ``about the same as go-iocopy (ratio 0.998 [0.995, 1.002])``.

    Parameters
    ----------
    ratio, low, high : float or None
        Ratio candidate/reference and its CI (None or non-finite: unknown or unbounded).
    metric : str
        The metric's column name (``duration_s``, ``throughput_mb_s``, ``cpu_ns_per_byte``).
    reference : str
        What the candidate is compared with (the baseline arm, ``run A``).
    """
    if ratio is None or not np.isfinite(ratio) or ratio <= 0:
        return "-"
    timed = metric.endswith("_s") or not lower_is_better(metric)
    good, bad = ("faster", "slower") if timed else ("lower", "higher")
    up = ratio >= 1
    if lower_is_better(metric):
        word = bad if up else good
    else:
        word = good if up else bad
    if ratio == 1:
        return f"1.00× the same as {reference}"
    if round(ratio if up else 1 / ratio, 2) == 1.0:  # "1.00× slower" reads as a contradiction
        lo_r = "-inf" if low is None or not np.isfinite(low) else f"{low:.3f}"
        hi_r = "inf" if high is None or not np.isfinite(high) else f"{high:.3f}"
        return f"about the same as {reference} (ratio {ratio:.3f} [{lo_r}, {hi_r}])"

    def factor(v: float | None) -> float:
        if v is None or not np.isfinite(v):
            return float("inf") if (v is None or v > 0) == up else 0.0
        return v if up else (1 / v if v > 0 else float("inf"))

    lo, hi = sorted((factor(low), factor(high)))
    return f"{factor(ratio):.2f}× {word} than {reference} [{lo:.2f}, {hi:.2f}]"


def _is_p_column(name: str) -> bool:
    return name in {"p", "pvalue", "p_value"} or name.startswith(("p_", "tost_p")) \
        or name.endswith(("_p", "_p_value", "_pvalue"))


def styled_table(df: pd.DataFrame, caption: str | None = None) -> Any:
    """A DataFrame styled for notebooks: p-values, byte sizes and ratios written as in the CLI.

    p-value columns (``p``, ``p_holm``, ``tost_p``, ``..._p``) as ``3.9e-14`` / ``0.188``
    (never ``0.000``), ``*_bytes`` columns as ``32 KiB`` (never ``32768.000``), ``ratio*`` with
    3 decimals, other floats with 4 significant digits, missing values as ``-``.

    Parameters
    ----------
    df : pandas.DataFrame
    caption : str, optional

    Returns
    -------
    pandas.io.formats.style.Styler
        Displays as HTML in Jupyter (needs jinja2, which the notebooks extra brings).
    """
    formats: dict[str, Any] = {}
    for col in df.columns:
        name = str(col)
        if _is_p_column(name):
            formats[col] = _fmt_p
        elif name.endswith("bytes"):
            formats[col] = _fmt_bytes
        elif name.startswith("ratio") and pd.api.types.is_float_dtype(df[col]):
            formats[col] = lambda v: _fmt(v, ".3f")
        elif pd.api.types.is_float_dtype(df[col]):
            formats[col] = lambda v: _fmt(v, ".4g")
    styler = df.style.format(formats, na_rep="-").hide(axis="index")
    return styler.set_caption(caption) if caption else styler


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned plain-text columns with a dashed rule under the header."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _fmt_p(value: Any) -> str:
    """A p-value: 3 significant digits, scientific below 1e-3 (``2.0e-12``); ``<1e-300`` for 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        if value == 0:
            return "<1e-300"  # float underflow: the test statistic is off the scale
        if value < 1e-3:
            return f"{value:.1e}"
    return _fmt(value, ".3g")


#: Fewer analysed blocks (or runs per arm, unpaired) than this: the CLI calls it a smoke test.
SMOKE_TEST_BLOCKS = 10


def _analysed_n(table: pd.DataFrame) -> int | None:
    """Smallest number of analysed runs per arm (blocks, when paired) in a verdict table."""
    counts = [pd.to_numeric(table[c], errors="coerce") for c in ("n", "n_baseline")
              if c in table.columns]
    values = [int(v) for col in counts for v in col.dropna()]
    return min(values) if values else None


#: Order in which diagnostics are shown: what invalidates a comparison first.
DIAGNOSTIC_RANK = ("disturbance", "drift", "outliers", "bimodality", "too_few_runs",
                   "constant_sample", "unbounded_ratio_ci", "blocks_incomplete", "rows_dropped")


def _short(d: Diagnostic) -> str:
    """A diagnostic in a few words (the full message stays in analysis.json and the report)."""
    det = d.details or {}
    if d.kind == "drift":
        tau = det.get("kendall_tau", 0) or 0
        return (f"drift: later runs {'slower' if tau > 0 else 'faster'} "
                f"(Mann–Kendall p={_fmt_p(det.get('mann_kendall_p'))})")
    if d.kind == "outliers":
        text = f"{det.get('count')} outlier run(s) (z up to {_fmt(det.get('max_abs_z'), '.1f')}"
        if det.get("first_run_slow"):
            text += f"; the first run {_fmt(det.get('first_run_ratio'), '.2f')}x the median"
        return text + ")"
    if d.kind == "bimodality":
        return f"bimodal (coefficient {_fmt(det.get('bimodality_coefficient'), '.2f')})"
    if d.kind == "too_few_runs":
        return f"only {det.get('n')} runs"
    return d.kind.replace("_", " ")


def format_diagnostics(result: MetricAnalysis, arms: Sequence[str] = (),
                       interference: Any = None) -> list[str]:
    """The warnings of an analysed metric, ranked: one line per arm, details behind it.

    Disturbance (runs the interference probes flagged, from ``interference``) and drift come
    first, then outliers, bimodality and the rest (:data:`DIAGNOSTIC_RANK`); arms with a
    disturbance or drift come first, then ``arms`` order, grid-level warnings last.
    A warning every arm got (``too_few_runs``: "only 4 runs") is one line, not one per arm.
    Informational diagnostics (severity ``info``) are counted, not spelled out; the full
    messages are in ``analysis.json`` and in the report (:func:`format_diagnostic_details`).

    Parameters
    ----------
    result : MetricAnalysis
        ``analysis.metric(image, metric)`` of an :class:`~pullbench.Analysis`.
    arms : sequence of str
        Arm order.
    interference : InterferenceSummary, optional
        ``analysis.image(image).interference``: its ``disturbed_by_arm`` become the first item.

    Returns
    -------
    list of str
        ``["diagnostics (ranked; details in the report):", "  go-iocopy: 2 of 10 runs
        disturbed; drift: later runs slower (Mann–Kendall p=0.003)", ...]``; empty when there
        is nothing to say.
    """
    per_arm: dict[str, list[tuple[int, str]]] = {}
    infos = 0
    rank = {k: i for i, k in enumerate(DIAGNOSTIC_RANK)}
    for d in result.diagnostics:
        if d.severity == "info":
            infos += 1
            continue
        arm = (d.arm or "(all arms)").split(" vs ", 1)[0]
        per_arm.setdefault(arm, []).append((rank.get(d.kind, len(rank)), _short(d)))
    by_arm = dict(getattr(interference, "disturbed_by_arm", None) or {})
    runs = getattr(interference, "runs_by_arm", None) or {}
    # the cause, as far as the summary's counts tell it (steal is counted for the whole image)
    by_steal = getattr(interference, "n_disturbed_by_steal", 0) or 0
    disturbed = getattr(interference, "n_disturbed_runs", 0) or 0
    cause = ("other load" if not by_steal else
             "host steal" if by_steal >= disturbed else "other load or host steal")
    for arm, count in by_arm.items():
        if count:
            per_arm.setdefault(arm, []).append(
                (0, f"{count} of {runs.get(arm, '?')} runs disturbed ({cause})"))
    if not per_arm and not infos:
        return []
    order = {a: i for i, a in enumerate(arms)}

    def arm_rank(arm: str) -> tuple[int, int, int, str]:
        urgent = min(r for r, _ in per_arm[arm]) <= rank["drift"]
        return (arm == "(all arms)", not urgent, order.get(arm, len(order)), arm)

    lines = ["diagnostics (ranked; details in the report and analysis.json):"]
    # a warning every arm got (e.g. too_few_runs: "only 4 runs") is said once, not per arm
    named = [a for a in per_arm if a != "(all arms)"]
    shared = (set.intersection(*({t for _, t in per_arm[a]} for a in named))
              if len(named) > 1 else set())
    for text in sorted(shared):
        lines.append(f"  every arm ({len(named)}): {text}")
    for arm in sorted(per_arm, key=arm_rank):
        items = [text for _, text in sorted(per_arm[arm]) if text not in shared]
        if items:
            lines.append(f"  {arm}: " + "; ".join(items))
    if infos:
        lines.append(f"  (+{infos} informational note(s), in the report)")
    return lines


def format_diagnostic_details(result: MetricAnalysis) -> list[str]:
    """Every diagnostic of an analysed metric in full (severity, kind, message), ranked."""
    rank = {k: i for i, k in enumerate(DIAGNOSTIC_RANK)}
    diags = sorted(result.diagnostics,
                   key=lambda d: (d.severity == "info", rank.get(d.kind, len(rank)), d.arm or ""))
    return [f"{d.arm or '(all arms)'}  {d.severity}  {d.kind}: {d.message}" for d in diags]


def _compact_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the compact verdict table (CLI and the report's first table).

    hyperfine's line for every arm (median, mean ± sd, min … max), then the verdict columns.
    """
    header = ["arm", "n", "median", "mean ± sd", "min … max", "ratio [95% CI]", "p (Holm)",
              "verdict", "write size", "MB/s"]
    lines = []
    for rec in table.to_dict(orient="records"):
        ratio = rec.get("ratio")
        ci = f"{_fmt(ratio, '.3f')} [{_fmt(rec.get('ratio_ci_low'), '.3f')}, " \
             f"{_fmt(rec.get('ratio_ci_high'), '.3f')}]"
        if rec.get("verdict") == "baseline":
            ci = "1"
        verdict = str(rec.get("verdict") or "-")
        if rec.get("significant_but_small") in (True, 1):
            verdict += " (significant but < margin)"
        if rec.get("unstable") in (True, 1):
            verdict += " UNSTABLE"
        spread = (f"{_fmt(rec.get('mean'), '.4g')} ± {_fmt(rec.get('sd'), '.2g')}"
                  if "sd" in rec else "-")
        extent = (f"{_fmt(rec.get('min'), '.4g')} … {_fmt(rec.get('max'), '.4g')}"
                  if "min" in rec else "-")
        lines.append([
            str(rec["arm"]), str(rec.get("n", "")), _fmt(rec.get("median"), ".4g"), spread,
            extent, ci, _fmt_p(rec.get("p_holm")), verdict,
            _fmt_bytes(rec.get("median_write_bytes")), _fmt(rec.get("throughput_mb_s"), ".0f"),
        ])
    return header, lines


def _phrases(table: pd.DataFrame, metric: str, baseline: str) -> list[str]:
    """``  ARM: 1.49× faster than BASELINE [1.39, 1.61] (verdict)`` per candidate arm."""
    out = []
    for rec in table.to_dict(orient="records"):
        if rec.get("verdict") == "baseline":
            continue
        phrase = ratio_phrase(rec.get("ratio"), rec.get("ratio_ci_low"),
                              rec.get("ratio_ci_high"), metric=metric, reference=baseline)
        out.append(f"  {rec['arm']}: {phrase} (verdict: {rec.get('verdict')})")
    return out


def format_verdict_table(analysis: Analysis | Mapping[str, Any], image: str | None = None,
                         metric: str = "duration_s") -> str:
    """Plain-text verdict table (what ``pullbench bench`` and ``analyze`` print).

    A title, a legend saying what ``ratio`` is (paired: geometric mean of per-block ratios), the
    compact table (arm, n, median, mean ± sd, min … max, ratio [CI], Holm-adjusted p, verdict,
    median write size, MB/s), one ``N.NN× faster/slower than BASELINE [CI]`` line per arm
    (:func:`ratio_phrase`), a smoke-test caution below :data:`SMOKE_TEST_BLOCKS` blocks (with the
    runs needed, when known), the interference and stability lines (:func:`format_stability`),
    then the diagnostics ranked, one line per arm (:func:`format_diagnostics`).

    Parameters
    ----------
    analysis : Analysis or mapping
        From :func:`pullbench.analyze_folder` / :func:`pullbench.analyze_results` (or a parsed
        ``analysis.json``).
    image : str, optional
        Default: the first image.
    metric : str
        An analysed metric.

    Raises
    ------
    ResultSchemaError
        No such image, the metric was not analysed, or a mapping that is not an analysis.
    """
    text, _ = _verdict_text(_as_analysis(analysis), image, metric)
    return text


def _verdict_text(analysis: Analysis, image: str | None,
                  metric: str) -> tuple[str, list[str]]:
    """(the whole CLI text, the legend and caution lines) of one image and metric."""
    table = verdict_table(analysis, image, metric)
    header, lines = _compact_rows(table)
    out = text_table(header, lines)
    phrases = _phrases(table, metric, analysis.baseline)
    image = image or next(iter(analysis.images))
    result = analysis.metric(image, metric)
    better = "ratio < 1 is better" if lower_is_better(metric) else "ratio > 1 is better"
    title = (f"{image}: {metric} = {METRIC_LABELS.get(metric, metric)} vs baseline "
             f"{analysis.baseline} ({better}; equivalence margin ±{analysis.margin:.0%})")
    n = _analysed_n(table)
    if result.paired:
        legend = ("ratio = geometric mean of per-block ratios candidate/baseline (paired, "
                  f"{n} blocks); median = median of the arm's runs")
    else:
        legend = ("ratio = ratio of means candidate/baseline (independent runs, Welch); "
                  "median = median of the arm's runs")
    text = [title, legend, *out, *phrases]
    notes = [legend, *phrases]
    if n is not None and n < SMOKE_TEST_BLOCKS:
        unit = "blocks" if result.paired else "runs per arm"
        caution = (f"caution: only {n} {unit} analysed: a smoke test, not evidence "
                   f"(use {SMOKE_TEST_BLOCKS}+; the default is 20)")
        needed = {a: v for a, v in result.runs_needed.items() if v is not None}
        if needed:
            caution += ("; runs needed per arm for 80% power at the observed effect: "
                        + ", ".join(f"{a} {v}" for a, v in needed.items()))
        text.append(caution)
        notes.append(caution)
    stability = format_stability(analysis, image, metric)
    text += stability
    notes += stability
    text += format_diagnostics(result, [str(a) for a in table["arm"]],
                               analysis.image(image).interference)
    return "\n".join(text), notes


def _ratio_text(verdict: str | None, ratio: float | None, n: int) -> str:
    if verdict is None:
        return f"too few blocks ({n})"
    return f"{verdict} {_fmt(ratio, '.3f')} ({n} blocks)"


def format_stability(analysis: Analysis | Mapping[str, Any], image: str | None = None,
                     metric: str = "duration_s") -> list[str]:
    """Lines on the machine's interference and on verdicts that depend on it.

    The disturbed runs and blocks with the threshold's rule; per arm its verdict on the quiet
    and on the disturbed blocks alone; one ``UNSTABLE`` line per unstable verdict with its
    reason; a re-run advice line per unstable or inconclusive verdict (the quiet blocks that
    would settle it). Empty when the rows carry no interference columns.

    Parameters
    ----------
    analysis : Analysis or mapping
    image : str, optional
        Default: the first image.
    metric : str
        An analysed metric.
    """
    analysis = _as_analysis(analysis)
    block = analysis.image(image)
    result = analysis.metric(image, metric)
    intf = block.interference
    if intf is None or not result.stability:
        return []
    blocks = ", ".join(str(b) for b in intf.disturbed_blocks) or "none"
    level = intf.quiet_level_cores
    # scores from tick-sampled counters can come out below zero; the threshold is relative to
    # them, so the level is shown as measured, with why
    level_text = (f"{max(level, 0.0):.2f}" if level > -0.005 else
                  f"{level:.2f}, below zero from /proc/stat's tick rounding")
    steal = ""
    if intf.steal_threshold_cores is not None and intf.steal_quiet_level_cores is not None:
        steal = (f"; host steal: threshold {intf.steal_threshold_cores:.2f} cores, quiet level "
                 f"{max(intf.steal_quiet_level_cores, 0.0):.2f}, "
                 f"{intf.n_disturbed_by_steal} runs above it")
    lines = [f"interference: {intf.n_disturbed_runs} of {intf.n_runs} runs disturbed (blocks: "
             f"{blocks}; threshold {intf.threshold_cores:.2f} cores of other work, quiet level "
             f"{level_text}{steal}; rule in analysis.json)"]
    if intf.busy_machine:
        lines.append("interference: the machine was busy for the whole experiment: run on a quiet "
                     "machine (pullbench system check; bench --wait-quiet --require-quiet)")
    which = "quiet blocks only" if analysis.exclude_disturbed else "all blocks"
    for row in result.stability:
        lines.append(f"  {row.arm}: {which}: {row.verdict_all}; without disturbed blocks: "
                     f"{_ratio_text(row.verdict_quiet, row.ratio_quiet, row.n_quiet)}; "
                     f"disturbed blocks: "
                     f"{_ratio_text(row.verdict_disturbed, row.ratio_disturbed, row.n_disturbed)}")
    for row in result.stability:
        if row.unstable:
            lines.append(f"UNSTABLE {row.arm}: {row.reason}")
    for row in result.stability:
        if row.settle_blocks is None or not (row.unstable or row.verdict_all == "inconclusive"):
            continue
        goal = ("to call the observed effect" if row.settle_goal == "detect"
                else f"to show equivalence within ±{analysis.margin:.0%}")
        lines.append(f"re-run advice: {row.arm}: about {row.settle_blocks} quiet blocks would "
                     f"settle it ({goal}, 80% power, from the quiet blocks' spread): pullbench "
                     f"bench --wait-quiet --require-quiet --blocks {row.settle_blocks}")
    return lines


def format_analysis(analysis: Analysis, metrics: Sequence[str] | None = None) -> str:
    """The text ``pullbench bench`` and ``analyze`` print: every verdict table, then notes.

    One :func:`format_verdict_table` per image and analysed metric (only ``metrics``, when
    given), a line per skipped metric with the reason, and the count of failed runs excluded
    (per arm), each after a blank line.
    """
    pieces: list[str] = []
    for image, block in analysis.images.items():
        for metric in block.metrics:
            if metrics is None or metric in metrics:
                pieces += ["", format_verdict_table(analysis, image, metric)]
        pieces += [f"\n{image}: {metric} not analysed: {why}"
                   for metric, why in block.skipped_metrics.items()
                   if metrics is None or metric in metrics]
    if analysis.n_failed:
        arms = ", ".join(f"{k}: {v}" for k, v in analysis.failed_by_arm.items())
        pieces.append(f"\n{analysis.n_failed} failed run(s) excluded ({arms}); "
                      "see the 'error' column of rows.csv")
    if analysis.n_retried:
        pieces.append("\n" + _retried_note(analysis))
    return "\n".join(pieces)


def _retried_note(analysis: Analysis) -> str:
    arms = ", ".join(f"{k}: {v}" for k, v in analysis.retried_by_arm.items())
    if analysis.include_retried:
        return (f"{analysis.n_retried} run(s) that needed retries or resumes ({arms}) are "
                "included (--include-retried)")
    return (f"{analysis.n_retried} run(s) that needed retries or resumes excluded ({arms}); "
            "see the retries, resumes and backoff_s columns, or keep them with --include-retried")


# -- HTML ------------------------------------------------------------------------------------------
#: How to get the plotting libraries (the report's tables need only the core dependencies).
NOTEBOOKS_EXTRA = "pip install 'pullbench[notebooks]'"


def plots_unavailable() -> str | None:
    """Why reports cannot hold plots on this installation, or None when they can.

    The HTML report's tables, verdicts and diagnostics need only pullbench's core dependencies;
    its plots need matplotlib, which comes with the ``notebooks`` extra.

    Returns
    -------
    str or None
        A one-line reason naming the extra to install (``pip install 'pullbench[notebooks]'``),
        or None when matplotlib imports.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"plots need matplotlib, which is not installed: {NOTEBOOKS_EXTRA}"
    return None


def _figure_to_img(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


#: CSS class of the note that replaces a plot that failed (tests look for it).
PLOT_ERROR_CLASS = "plot-error"


def _plot_error(name: str, exc: BaseException) -> str:
    """A visible note in place of a plot that failed (and an error in the log)."""
    logger.error("report plot %s failed: %s: %s", name, type(exc).__name__, exc)
    return (f'<p class="{PLOT_ERROR_CLASS}"><b>plot {html.escape(name)} failed:</b> '
            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>")


def _plot_missing(name: str, why: str) -> str:
    """A visible note in place of a plot the rows have no data for (not an error)."""
    return f'<p class="note"><b>no plot of {html.escape(name)}:</b> {html.escape(why)}</p>'


def _report_figures(df: pd.DataFrame, analysis: Analysis, image: str) -> list[str]:
    """The report's plots of one image as ``<img>`` tags; a plot that fails becomes a visible
    note (class :data:`PLOT_ERROR_CLASS`) naming the plot and the error, never a silent gap."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .. import plots

    sub = df[df["image"] == image]
    # (what the plot shows, how to draw it, why it cannot be drawn: None when it can)
    draw: list[tuple[str, Any, str | None]] = [
        (f"every run's {METRIC_LABELS.get(metric, metric)} per arm, and each arm's ratio to "
         f"{analysis.baseline} with its 95% CI against the ±{analysis.margin:.0%} equivalence "
         "band",
         lambda metric=metric: plots.plot_arm_distributions(
             sub, verdict_table(analysis, image, metric), metric=metric,
             baseline=analysis.baseline, margin=analysis.margin), None)
        for metric in analysis.images[image].metrics
    ]
    draw += [
        (f"{metric} ratio vs interference per block",
         lambda result=result, metric=metric: plots.plot_effect_vs_interference(
             result.stability, metric=metric, baseline=analysis.baseline), None)
        for metric, result in analysis.images[image].metrics.items() if result.stability
    ]
    has_hist = ("write_size_hist" in sub.columns
                and sub["write_size_hist"].map(plots._bench_hist).astype(bool).any())
    no_hist = None if has_hist else (
        "no run of this image recorded write sizes (real-puller arms record them only in "
        "traced runs: bench --trace, or an arm with trace=true)")
    draw += [(name, lambda func=func: func(sub, baseline=analysis.baseline), why)
             for name, func, why in (
                 ("share of write() calls per size bucket, one row per arm",
                  plots.plot_write_size_histograms, no_hist),
                 ("throughput against the median read size and the median write size, per arm",
                  plots.plot_throughput_vs_sizes, None),
                 ("throughput against the memory each arm holds in buffers",
                  plots.plot_speed_vs_memory, None))]
    blocks = []
    for name, make, why in draw:
        if why is not None:
            blocks.append(_plot_missing(name, why))
            continue
        try:
            blocks.append(_figure_to_img(make(), name))
        except Exception as exc:  # the report still renders, with the failure in plain sight
            blocks.append(_plot_error(name, exc))
    return blocks


def _table_html(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in shown.columns:
        if col.endswith("bytes"):
            shown[col] = shown[col].map(_fmt_bytes)
        elif pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: _fmt(v, ".4g"))
    return str(shown.to_html(index=False, border=0, classes="verdicts", na_rep="-"))


def _compact_table_html(table: pd.DataFrame) -> str:
    """The compact verdict table (same cells as the CLI's) as an HTML table."""
    header, lines = _compact_rows(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in lines)
    return (f'<table class="verdicts compact"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def render_report(directory: str | Path, output: str | Path | None = None) -> Path:
    """Render ``report.html`` for a results folder (plots embedded as base64 PNG).

    Parameters
    ----------
    directory : path
        Results folder. ``analysis.json`` is used if present, else computed and saved by
        :func:`~pullbench.experiment._analysis.analyze_folder` (the spec's settings).
    output : path, optional
        Where to write the HTML; default ``<directory>/report.html``.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    ResultSchemaError
        Not a results folder.

    Notes
    -----
    Without matplotlib (the ``notebooks`` extra) the report holds the tables, verdicts and
    diagnostics and one line saying how to get the plots (:func:`plots_unavailable`).
    """
    store = ResultsStore(Path(directory))
    df = load_results(store.directory, include_warmup=True)
    env = store.read_json(ENVIRONMENT_JSON) or {}
    analysis = (load_analysis(store.directory) if (store.directory / ANALYSIS_JSON).exists()
                else analyze_folder(store.directory))
    ok, _, _ = _analysis_frame(df, analysis.include_retried)
    no_plots = plots_unavailable()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pullbench report: {html.escape(store.directory.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table.verdicts{border-collapse:collapse;font-size:90%}"
        "table.verdicts td,table.verdicts th{padding:3px 8px;border-bottom:1px solid #ddd}"
        ".plot-error{color:#a00;border:1px solid #a00;padding:.5em}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em;white-space:pre-wrap;"
        "overflow-wrap:anywhere}</style>",
        "</head><body>",
        f"<h1>pullbench report: {html.escape(store.directory.name)}</h1>",
        f"<p>{analysis.n_runs} runs analysed against baseline "
        f"<b>{html.escape(analysis.baseline)}</b>; {analysis.n_failed} failed run(s) "
        f"excluded{_failed_note(analysis)}. Equivalence margin ±{analysis.margin:.0%}, "
        f"alpha {analysis.alpha}.</p>",
        *([f"<p>{html.escape(_retried_note(analysis))}.</p>"] if analysis.n_retried else []),
        *_preflight_html(env),
    ]
    for image, block in analysis.images.items():
        parts.append(f"<h2>Image {html.escape(image)}</h2>")
        for metric, result in block.metrics.items():
            parts.append(f"<h3>{html.escape(METRIC_LABELS.get(metric, metric))}</h3>")
            full = verdict_table(analysis, image, metric)
            parts.append(_compact_table_html(full))  # the table the CLI prints, first
            _, notes = _verdict_text(analysis, image, metric)
            parts.extend(f"<p>{html.escape(line)}</p>" for line in notes)
            diags = format_diagnostics(result, [str(a) for a in full["arm"]],
                                       block.interference)
            if diags:
                parts.append(f"<pre>{html.escape(chr(10).join(diags))}</pre>")
                details = format_diagnostic_details(result)
                parts.append("<details><summary>diagnostics in full</summary><pre>"
                             f"{html.escape(chr(10).join(details))}</pre></details>")
            parts.append(f"<details><summary>full table ({len(full.columns)} columns) and "
                         "method</summary>")
            parts.append(_table_html(full))
            parts.append(f"<pre>{html.escape(result.summary)}</pre>")
            parts.append("</details>")
        for metric, why in block.skipped_metrics.items():
            parts.append(f"<h3>{html.escape(METRIC_LABELS.get(metric, metric))}</h3>")
            parts.append(f"<p>Not analysed: {html.escape(why)}.</p>")
        parts.append("<h3>Plots</h3>")
        if no_plots is None:
            parts.extend(_report_figures(ok, analysis, image))
        else:
            parts.append(f"<p class='note'>No plots: {html.escape(no_plots)}.</p>")
    parts.append("<h2>Environment</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(_env_summary(env), indent=2))}</pre>")
    parts.append("</body></html>")
    path = Path(output) if output is not None else store.directory / REPORT_HTML
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _preflight_html(env: Mapping[str, Any]) -> list[str]:
    """The machine check before the first run and the CPU plan, as paragraphs."""
    pre = env.get("preflight") or {}
    iso = env.get("cpu_isolation") or {}
    out = []
    if pre:
        state = "quiet" if pre.get("quiet") else "NOT quiet"
        other = pre.get("other_cpu_cores")
        load = pre.get("loadavg_1_5_15") or [None]
        text = (f"Machine before the first run: {state} (other processes "
                f"{_fmt(other, '.2f')} cores, load {_fmt(load[0], '.2f')}).")
        problems = pre.get("problems") or []
        if problems:
            text += " To fix: " + " ".join(str(p) for p in problems)
        out.append(f"<p>{html.escape(text)}</p>")
    if iso.get("describe"):
        out.append(f"<p>CPU affinity: {html.escape(str(iso['describe']))}.</p>")
    return out


def _failed_note(analysis: Analysis) -> str:
    if not analysis.n_failed:
        return ""
    arms = ", ".join(f"{k}: {v}" for k, v in analysis.failed_by_arm.items())
    return f" ({html.escape(arms)})"


def _env_summary(env: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("captured_at", "host", "python", "pullbench", "destination", "registry", "images",
            "network_profile", "seed", "preflight", "cpu_isolation", "extra")
    return {k: env.get(k) for k in keys if k in env}
