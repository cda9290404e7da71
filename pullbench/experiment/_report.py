"""Analysis of an experiment's rows, the verdict table, and the HTML report.

:func:`analyze_results` runs :func:`pullbench.analyze_grid` per image and per metric (wall time and
CPU time per byte by default) on the successful, non-warm-up runs, and counts the failed runs it
excluded. :func:`verdict_table` joins the statistics with what explains them (median write size,
throughput, memory held in buffers). :func:`render_report` writes a self-contained HTML page with
the plots embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import ResultSchemaError, StatsInputError
from ._results import (
    ANALYSIS_JSON,
    ENVIRONMENT_JSON,
    REPORT_HTML,
    RESULTS_SCHEMA_VERSION,
    SPEC_JSON,
    ResultsStore,
    _jsonable,
    load_results,
)

__all__ = ["analyze_results", "format_diagnostics", "format_verdict_table", "render_report",
           "verdict_table"]

logger = logging.getLogger(__name__)

METRIC_LABELS = {
    "duration_s": "wall time of the pull (s)",
    "cpu_ns_per_byte": "CPU time (user + sys) per byte (ns/B)",
    "cpu_s": "CPU time, user + sys (s)",
    "throughput_mb_s": "throughput (MB/s)",
    "peak_rss_bytes": "peak RSS (bytes)",
}

#: Per-arm descriptive columns joined into the verdict table (median over runs).
_EXPLAIN_COLUMNS = ("median_write_bytes", "throughput_mb_s", "buffer_bytes", "peak_rss_bytes")

#: Columns that only the puller's probes measure (absent with ``probes=False`` / ``--no-probes``).
PROBE_COLUMNS = frozenset({
    "cpu_user_s", "cpu_sys_s", "cpu_s", "cpu_ns_per_byte", "process_cpu_user_s",
    "process_cpu_sys_s", "peak_rss_bytes", "syscr", "syscw", "rchar", "wchar", "read_count",
    "write_count", "median_write_bytes", "read_size_hist", "write_size_hist",
})


def lower_is_better(metric: str) -> bool:
    """False for rates (``*_mb_s``, ``*_per_s``), True for times, CPU, bytes held, counts."""
    return not (metric.endswith("_mb_s") or metric.endswith("_per_s"))


def _analysis_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (analysable ok runs, failed runs); warm-up runs are dropped from both."""
    if "warmup" in df.columns:
        df = df[~df["warmup"].astype(bool)]
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    return ok.reset_index(drop=True), failed.reset_index(drop=True)


def analyze_results(
    df: pd.DataFrame,
    *,
    baseline: str,
    metrics: Sequence[str] = ("duration_s", "cpu_ns_per_byte"),
    margin: float = 0.02,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 9999,
) -> dict[str, Any]:
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

    Returns
    -------
    dict
        JSON-able: ``schema_version``, ``baseline``, ``margin``, ``alpha``, ``n_runs``,
        ``n_failed``, ``failed_by_arm``, ``notes`` (list of str), ``images`` -> image ->
        {``metrics`` -> metric -> {``table``: list of records, ``summary``: str},
        ``skipped_metrics`` -> metric -> reason, ``arms`` -> per-arm descriptive records}.

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

    ok, failed = _analysis_frame(df)
    out: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "analyzed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "baseline": baseline,
        "margin": margin,
        "alpha": alpha,
        "seed": seed,
        "n_runs": len(ok),
        "n_failed": len(failed),
        "failed_by_arm": {str(k): int(v) for k, v in failed.groupby("arm").size().items()}
        if len(failed) else {},
        "failed_messages": sorted({str(m) for m in failed.get("error", pd.Series()).dropna()})[:10],
        "notes": [],
        "images": {},
    }
    images = sorted(ok["image"].unique()) if len(ok) else []
    if not images:
        raise StatsInputError(
            f"no successful runs to analyse ({len(failed)} failed); see the 'error' column"
        )
    for image in images:
        sub = ok[ok["image"] == image]
        if baseline not in set(sub["arm"]):
            raise StatsInputError(
                f"baseline arm {baseline!r} has no successful runs for image {image!r}; arms with "
                f"runs: {sorted(set(sub['arm']))}"
            )
        per_metric: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        for metric in metrics:
            if metric not in sub.columns:
                raise StatsInputError(
                    f"metric {metric!r} is not a column of the results; columns: "
                    f"{sorted(c for c in sub.columns if pd.api.types.is_numeric_dtype(sub[c]))}"
                )
            reason = _unmeasured(sub, metric, baseline)
            if reason is not None:
                skipped[metric] = reason
                out["notes"].append(f"{image}: {metric} skipped: {reason}")
                logger.info("%s: %s skipped: %s", image, metric, reason)
                continue
            data = sub[["arm", "block", metric]].copy()
            data[metric] = pd.to_numeric(data[metric], errors="coerce")
            data = data.dropna().astype({metric: float})
            data, dropped = _complete_blocks(data)
            grid = analyze_grid(
                data, metric=metric, arm="arm", baseline=baseline, block="block",
                margin=margin, alpha=alpha, rng=np.random.default_rng(seed),
                n_resamples=n_resamples, lower_is_better=lower_is_better(metric),
            )
            per_metric[metric] = {
                # exact floats: pandas to_json keeps 10 digits and turned p = 3e-14 into 0.0
                "table": _records(grid.table),
                "summary": grid.summary(),
                "paired": bool(grid.paired),
                "incomplete_blocks_dropped": dropped,
                "diagnostics": _diagnostic_records(grid, baseline),
                "runs_needed": {str(a): c.runs_needed_per_arm
                                for a, c in grid.comparisons.items()},
            }
        out["images"][str(image)] = {"metrics": per_metric, "skipped_metrics": skipped,
                                     "arms": _arm_descriptives(sub, metrics)}
    return out


def _diagnostic_records(grid: Any, baseline: str) -> list[dict[str, Any]]:
    """The grid's diagnostics as records; a comparison's own (arm None) gets "ARM vs BASELINE"."""
    out = []
    for diag in grid.diagnostics:
        rec = diag.to_dict()
        if rec.get("arm") is None:
            pair = [a for a, c in grid.comparisons.items() if diag in c.diagnostics]
            if len(pair) == 1:
                rec["arm"] = f"{pair[0]} vs {baseline}"
        out.append(_jsonable(rec))
    return out


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows as JSON-ready records of Python scalars, floats exact (NaN/inf -> None)."""
    return [_jsonable(rec) for rec in table.to_dict(orient="records")]


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


def _arm_descriptives(sub: pd.DataFrame, metrics: Sequence[str]) -> list[dict[str, Any]]:
    cols = [c for c in _EXPLAIN_COLUMNS if c in sub.columns]
    cols += [m for m in metrics if m in sub.columns and m not in cols]
    rows = []
    for arm, group in sub.groupby("arm", sort=False):
        first = group.iloc[0]
        record: dict[str, Any] = {"arm": str(arm), "strategy": str(first.get("strategy", "")),
                                  "n": len(group)}
        for col in cols:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            record[col] = float(values.median()) if len(values) else None
        rows.append(record)
    return rows


def verdict_table(analysis: Mapping[str, Any], image: str | None = None,
                  metric: str = "duration_s") -> pd.DataFrame:
    """The verdict table of one image and metric, joined with per-arm explanations.

    Returns
    -------
    pandas.DataFrame
        One row per arm: arm, n, median, ratio, ratio_ci_low, ratio_ci_high, p_holm, verdict,
        median_write_bytes, throughput_mb_s, buffer_bytes, peak_rss_bytes (those present).
    """
    images = analysis["images"]
    if image is None:
        image = next(iter(images))
    if image not in images:
        raise ResultSchemaError(f"no image {image!r} in the analysis; images: {list(images)}")
    block = images[image]
    if metric not in block["metrics"]:
        why = block.get("skipped_metrics", {}).get(metric)
        raise ResultSchemaError(
            f"metric {metric!r} was not analysed"
            + (f" ({why})" if why else "")
            + f"; analysed: {list(block['metrics'])}"
        )
    table = pd.DataFrame(block["metrics"][metric]["table"])
    arms = pd.DataFrame(block["arms"])
    baseline = analysis["baseline"]
    base = arms[arms["arm"] == baseline]
    if len(base) and baseline not in set(table.get("arm", [])):
        rec = base.iloc[0]
        n_base = table["n_baseline"].iloc[0] if "n_baseline" in table and len(table) else rec["n"]
        head = pd.DataFrame([{"arm": baseline, "n": n_base, "median": rec.get(metric),
                              "ratio": 1.0, "verdict": "baseline"}])
        table = pd.concat([head, table], ignore_index=True) if len(table) else head
    dropped = ["n"] if metric in _EXPLAIN_COLUMNS else ["n", metric]
    arms = arms.drop(columns=dropped, errors="ignore")
    return table.merge(arms, on="arm", how="left")


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


def format_diagnostics(result: Mapping[str, Any], arms: Sequence[str] = ()) -> list[str]:
    """One line per diagnostic of an analysed metric, grouped by arm (``arms`` order first).

    Parameters
    ----------
    result : mapping
        ``analysis["images"][image]["metrics"][metric]`` from :func:`analyze_results`.
    arms : sequence of str
        Arm order to group by (arms not listed, and grid-level diagnostics, come last).

    Returns
    -------
    list of str
        Lines such as ``"  splice     warning  bimodality: bimodality coefficient 0.56 ..."``;
        empty when there are no diagnostics.
    """
    diags = list(result.get("diagnostics") or [])
    if not diags:
        return []
    order = {a: i for i, a in enumerate(arms)}

    def rank(d: Mapping[str, Any]) -> tuple[bool, int, str]:
        arm = str(d.get("arm") or "")
        own = arm.split(" vs ", 1)[0]  # "ARM vs BASELINE": a comparison's, next to ARM's
        return d.get("arm") is None, order.get(own, len(order)), arm

    diags.sort(key=rank)
    width = max(len(str(d.get("arm") or "(all arms)")) for d in diags)
    lines = ["diagnostics (by arm):"]
    for d in diags:
        arm = str(d.get("arm") or "(all arms)")
        lines.append(f"  {arm.ljust(width)}  {str(d.get('severity', '')).ljust(7)}  "
                     f"{d.get('kind')}: {d.get('message')}")
    return lines


def _compact_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the compact verdict table (CLI and the report's first table)."""
    header = ["arm", "n", "median", "ratio [95% CI]", "p (Holm)", "verdict", "write size",
              "MB/s"]
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
        lines.append([
            str(rec["arm"]), str(rec.get("n", "")), _fmt(rec.get("median"), ".4g"), ci,
            _fmt_p(rec.get("p_holm")), verdict, _fmt_bytes(rec.get("median_write_bytes")),
            _fmt(rec.get("throughput_mb_s"), ".0f"),
        ])
    return header, lines


def format_verdict_table(analysis: Mapping[str, Any], image: str | None = None,
                         metric: str = "duration_s") -> str:
    """Plain-text verdict table (what ``pullbench bench`` and ``analyze`` print).

    A title, a legend saying what ``ratio`` is (paired: geometric mean of per-block ratios), the
    compact table (arm, n, median, ratio [CI], Holm-adjusted p, verdict, median write size,
    MB/s), a smoke-test caution below :data:`SMOKE_TEST_BLOCKS` blocks (with the runs needed,
    when known), then the diagnostics grouped by arm (:func:`format_diagnostics`).
    """
    text, _ = _verdict_text(analysis, image, metric)
    return text


def _verdict_text(analysis: Mapping[str, Any], image: str | None,
                  metric: str) -> tuple[str, list[str]]:
    """(the whole CLI text, the legend and caution lines) of one image and metric."""
    table = verdict_table(analysis, image, metric)
    header, lines = _compact_rows(table)
    widths = [max(len(header[i]), *(len(r[i]) for r in lines)) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    image = image or next(iter(analysis["images"]))
    result = analysis["images"][image]["metrics"][metric]
    better = "ratio < 1 is better" if lower_is_better(metric) else "ratio > 1 is better"
    title = (f"{image}: {metric} = {METRIC_LABELS.get(metric, metric)} vs baseline "
             f"{analysis['baseline']} ({better}; equivalence margin ±{analysis['margin']:.0%})")
    n = _analysed_n(table)
    if result.get("paired"):
        legend = ("ratio = geometric mean of per-block ratios candidate/baseline (paired, "
                  f"{n} blocks); median = median of the arm's runs")
    else:
        legend = ("ratio = ratio of means candidate/baseline (independent runs, Welch); "
                  "median = median of the arm's runs")
    text = [title, legend, *out]
    notes = [legend]
    if n is not None and n < SMOKE_TEST_BLOCKS:
        unit = "blocks" if result.get("paired") else "runs per arm"
        caution = (f"caution: only {n} {unit} analysed: a smoke test, not evidence "
                   f"(use {SMOKE_TEST_BLOCKS}+; the default is 20)")
        needed = {a: v for a, v in (result.get("runs_needed") or {}).items() if v is not None}
        if needed:
            caution += ("; runs needed per arm for 80% power at the observed effect: "
                        + ", ".join(f"{a} {v}" for a, v in needed.items()))
        text.append(caution)
        notes.append(caution)
    text += format_diagnostics(result, [str(a) for a in table["arm"]])
    return "\n".join(text), notes


# -- HTML ------------------------------------------------------------------------------------------
def _figure_to_img(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _report_figures(df: pd.DataFrame, analysis: Mapping[str, Any], image: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    try:
        from .. import plots
    except ImportError as exc:  # pragma: no cover - plots ship with pullbench
        logger.warning("no plots in the report: %s", exc)
        return [f"<p>plots unavailable: {html.escape(str(exc))}</p>"]

    sub = df[df["image"] == image]
    blocks = []
    for metric in analysis["images"][image]["metrics"]:
        try:
            table = verdict_table(analysis, image, metric)
            blocks.append(_figure_to_img(
                plots.plot_arm_distributions(sub, table, metric=metric,
                                             baseline=analysis["baseline"]),
                f"per-arm distribution of {metric}"))
        except Exception as exc:
            logger.warning("plot of %s failed: %s", metric, exc)
    for name, func in (("write sizes", "plot_write_size_histograms"),
                       ("throughput vs buffer sizes", "plot_throughput_vs_sizes"),
                       ("speed vs memory", "plot_speed_vs_memory")):
        try:
            blocks.append(_figure_to_img(getattr(plots, func)(sub, baseline=analysis["baseline"]),
                                         name))
        except Exception as exc:
            logger.warning("plot %s failed: %s", name, exc)
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
        Results folder. ``analysis.json`` is used if present, else computed from the rows and
        ``spec.json`` (and saved).
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
    """
    store = ResultsStore(Path(directory))
    df = load_results(store.directory, include_warmup=True)
    env = store.read_json(ENVIRONMENT_JSON) or {}
    analysis = store.read_json(ANALYSIS_JSON)
    if analysis is None:
        spec = store.read_json(SPEC_JSON) or env.get("spec") or {}
        baseline = spec.get("baseline") or str(df["arm"].iloc[0])
        analysis = analyze_results(
            df, baseline=baseline, metrics=tuple(spec.get("metrics", ("duration_s",))),
            margin=float(spec.get("margin", 0.02)), alpha=float(spec.get("alpha", 0.05)),
            seed=int(spec.get("seed", 0)),
        )
        store.write_json(ANALYSIS_JSON, analysis)
    ok, _ = _analysis_frame(df)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pullbench report: {html.escape(store.directory.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table.verdicts{border-collapse:collapse;font-size:90%}"
        "table.verdicts td,table.verdicts th{padding:3px 8px;border-bottom:1px solid #ddd}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>",
        "</head><body>",
        f"<h1>pullbench report: {html.escape(store.directory.name)}</h1>",
        f"<p>{analysis['n_runs']} runs analysed against baseline "
        f"<b>{html.escape(analysis['baseline'])}</b>; {analysis['n_failed']} failed run(s) "
        f"excluded{_failed_note(analysis)}. Equivalence margin ±{analysis['margin']:.0%}, "
        f"alpha {analysis['alpha']}.</p>",
    ]
    for image, block in analysis["images"].items():
        parts.append(f"<h2>Image {html.escape(image)}</h2>")
        for metric, result in block["metrics"].items():
            parts.append(f"<h3>{html.escape(METRIC_LABELS.get(metric, metric))}</h3>")
            full = verdict_table(analysis, image, metric)
            parts.append(_compact_table_html(full))  # the table the CLI prints, first
            _, notes = _verdict_text(analysis, image, metric)
            parts.extend(f"<p>{html.escape(line)}</p>" for line in notes)
            diags = format_diagnostics(result, [str(a) for a in full["arm"]])
            if diags:
                parts.append(f"<pre>{html.escape(chr(10).join(diags))}</pre>")
            parts.append(f"<details><summary>full table ({len(full.columns)} columns) and "
                         "method</summary>")
            parts.append(_table_html(full))
            parts.append(f"<pre>{html.escape(str(result.get('summary', '')))}</pre>")
            parts.append("</details>")
        for metric, why in block.get("skipped_metrics", {}).items():
            parts.append(f"<h3>{html.escape(METRIC_LABELS.get(metric, metric))}</h3>")
            parts.append(f"<p>Not analysed: {html.escape(why)}.</p>")
        parts.append("<h3>Plots</h3>")
        parts.extend(_report_figures(ok, analysis, image))
    parts.append("<h2>Environment</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(_env_summary(env), indent=2))}</pre>")
    parts.append("</body></html>")
    path = Path(output) if output is not None else store.directory / REPORT_HTML
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _failed_note(analysis: Mapping[str, Any]) -> str:
    if not analysis["n_failed"]:
        return ""
    arms = ", ".join(f"{k}: {v}" for k, v in analysis["failed_by_arm"].items())
    return f" ({html.escape(arms)})"


def _env_summary(env: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("captured_at", "host", "python", "pullbench", "destination", "registry", "images",
            "network_profile", "seed", "extra")
    return {k: env.get(k) for k in keys if k in env}
