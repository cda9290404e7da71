"""Plotting functions. Each returns a matplotlib ``Figure`` and never calls ``plt.show()``.

Planning and verdicts: :func:`plot_power_curves`, :func:`plot_ratio_intervals`. Experiment rows
(``pullbench.load_results``): :func:`plot_arm_distributions` (per-arm distributions with the
verdict estimate), :func:`plot_write_size_histograms`, :func:`plot_throughput_vs_sizes` and
:func:`plot_speed_vs_memory` (speed against the memory each arm holds in buffers). Load:
:func:`plot_effect_vs_interference` (per-block ratio against the block's interference).

matplotlib (and seaborn, where used) are imported inside the functions so that
``import pullbench`` and the CLI stay fast.

Axes are labelled in words with units (:data:`METRIC_LABELS`). Each experiment figure carries a
description (:func:`figure_alt_text`); inside IPython/Jupyter, drawing one registers an HTML
display for such figures that puts it in the image's ``alt`` attribute, so notebooks and their
nbconvert HTML have alt text without extra calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from .stats._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_POWER

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Axis words and units of the metrics (the report's and the CLI's names).
METRIC_LABELS = {
    "duration_s": "wall time of the pull (s)",
    "cpu_ns_per_byte": "CPU time per byte (ns/B)",
    "cpu_s": "CPU time, user + sys (s)",
    "throughput_mb_s": "throughput (MB/s)",
    "peak_rss_bytes": "peak RSS (bytes)",
}

#: Marker per arm (with the colour), so arms on top of each other stay distinguishable.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")

#: Attribute of a Figure holding its alt text (see :func:`figure_alt_text`).
_ALT = "_pullbench_alt_text"


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


_F = TypeVar("_F")


def _set_alt(fig: _F, text: str) -> _F:
    setattr(fig, _ALT, text)
    # (re-)register: matplotlib's inline backend, activated by the first pyplot import, drops
    # every Figure formatter but its own (IPython.core.pylabtools.select_figure_formats)
    _register_ipython_display()
    return fig


def describe_figure(fig: _F, text: str) -> _F:
    """Attach alt text to a figure drawn elsewhere (a notebook's own plot); return it.

    In a notebook the figure is then shown as ``<img alt=...>`` (IPython's HTML display), so
    exported HTML describes it for screen readers, as pullbench's own plots do.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    text : str
        What the figure shows, in words (its axes, units and what to read from it).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig``.
    """
    return _set_alt(fig, text)


def figure_alt_text(fig: Any) -> str | None:
    """The description pullbench attached to a figure it drew (None for other figures)."""
    return getattr(fig, _ALT, None)


def _figure_html(fig: Any) -> str | None:
    """``<img alt=... src=data:...>`` of a pullbench figure, for IPython's HTML display."""
    import base64
    import html
    import io

    alt = figure_alt_text(fig)
    if alt is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _register_ipython_display() -> None:
    """In a running IPython (a notebook kernel), show pullbench figures with alt text."""
    import sys

    if "IPython" not in sys.modules:
        return
    try:
        from IPython.core.getipython import get_ipython
        from matplotlib.figure import Figure as _Figure
    except ImportError:  # pragma: no cover - IPython without matplotlib
        return
    shell = get_ipython()  # type: ignore[no-untyped-call]
    if shell is None:
        return
    shell.display_formatter.formatters["text/html"].for_type(_Figure, _figure_html)


__all__ = [
    "describe_figure",
    "figure_alt_text",
    "plot_arm_distributions",
    "plot_effect_vs_interference",
    "plot_power_curves",
    "plot_ratio_intervals",
    "plot_speed_vs_memory",
    "plot_throughput_vs_sizes",
    "plot_write_size_histograms",
]


def plot_power_curves(
    *,
    mean_a: float,
    sd_a: float,
    sd_b: float | None = None,
    relative_effects: Sequence[float] = (0.01, 0.02, 0.05),
    n_max: int = 100,
    alpha: float = DEFAULT_ALPHA,
    target_power: float = DEFAULT_POWER,
    mark_n: Sequence[int] = (),
) -> Figure:
    """Power of Welch's test against runs per arm, one curve per relative effect.

    Parameters
    ----------
    mean_a : float
        Baseline mean (metric units); effects are fractions of it.
    sd_a, sd_b : float
        Standard deviations (ddof=1) of baseline and candidate (``sd_b`` defaults to ``sd_a``).
    relative_effects : sequence of float
        Effects to draw (0.02 = 2 % of the baseline mean).
    n_max : int
        Largest runs-per-arm on the x axis.
    alpha, target_power : float
        Test level; a horizontal line marks the target power.
    mark_n : sequence of int
        Vertical lines at these run counts (e.g. the n actually used, the n needed).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .stats._power import power_at_n

    n = np.arange(2, max(3, int(n_max)) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for eff in relative_effects:
        p = power_at_n(n, delta=eff * mean_a, sd_a=sd_a, sd_b=sd_b, alpha=alpha)
        ax.plot(n, p, label=f"{eff:.1%} effect")
    ax.axhline(target_power, color="grey", ls="--", lw=1)
    for m in mark_n:
        ax.axvline(m, color="black", ls=":", lw=1)
        ax.annotate(f"n={m}", (m, 0.02), rotation=90, ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("runs per arm")
    ax.set_ylabel(f"power (two-sided Welch, α={alpha})")
    ax.set_ylim(0, 1)
    ax.set_xlim(2, n[-1])
    ax.legend(title=f"SD {sd_a:.3g} / {sd_b if sd_b is not None else sd_a:.3g}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)  # the caller owns the figure; no duplicate display, no pyplot state kept
    return _set_alt(fig, "Power of Welch's test against runs per arm, one curve per relative "
                         "effect (" + ", ".join(f"{e:.1%}" for e in relative_effects)
                         + f"); dashed line at {target_power:.0%} power"
                         + (f"; marked: n = {', '.join(map(str, mark_n))}" if mark_n else ""))


def plot_ratio_intervals(
    rows: pd.DataFrame,
    *,
    margin: float | Sequence[float] = DEFAULT_MARGIN,
    label: str = "label",
    ratio: str = "ratio",
    ci_low: str = "ratio_ci_low",
    ci_high: str = "ratio_ci_high",
    inner_low: str | None = None,
    inner_high: str | None = None,
    xlabel: str = "ratio candidate / baseline",
) -> Figure:
    """Forest plot of ratio CIs against the equivalence region(s) ``[1/(1+m), 1+m]``.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per comparison with columns ``label``, ``ratio``, ``ci_low``, ``ci_high``
        (e.g. :attr:`GridResult.table` with ``label="arm"``).
    margin : float or sequence of float
        Equivalence margin(s); each is drawn as a shaded band (narrowest darkest).
    inner_low, inner_high : str, optional
        Columns of a second, narrower interval (e.g. the 90 % CI that TOST uses), drawn thicker.
    xlabel : str
        Axis label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    margins = sorted([margin] if isinstance(margin, (int, float)) else list(margin), reverse=True)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.6))
    for i, m in enumerate(margins):
        ax.axvspan(1 / (1 + m), 1 + m, color="tab:green", alpha=0.08 + 0.08 * i,
                   label=f"±{m:.0%} equivalence region")
    ax.axvline(1.0, color="black", lw=1)
    y = np.arange(len(rows))[::-1]
    lo = rows[ci_low].to_numpy(dtype=float)
    hi = rows[ci_high].to_numpy(dtype=float)
    ax.hlines(y, lo, hi, color="tab:blue", lw=1.5)
    if inner_low and inner_high:
        ax.hlines(y, rows[inner_low].to_numpy(dtype=float), rows[inner_high].to_numpy(dtype=float),
                  color="tab:blue", lw=4, alpha=0.6)
    ax.plot(rows[ratio].to_numpy(dtype=float), y, "o", color="tab:blue")
    ax.set_yticks(y, [str(v) for v in rows[label]])
    ax.set_xlabel(xlabel)
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)  # the caller owns the figure; no duplicate display, no pyplot state kept
    return _set_alt(fig, f"{xlabel}, with the equivalence region(s) "
                         + ", ".join(f"±{m:.0%}" for m in margins) + ": "
                         + "; ".join(f"{r[label]} {float(r[ratio]):.3f} [{float(r[ci_low]):.3f}, "
                                     f"{float(r[ci_high]):.3f}]"
                                     for r in rows.to_dict(orient="records")))







def _bench_hist(value: Any) -> dict[int, int]:
    """A histogram cell (dict or JSON text) as {bucket upper bound in bytes: count}."""
    import json

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {int(k): int(v) for k, v in value.items() if v}


def _bench_hist_median(hist: dict[int, int]) -> float:
    if not hist:
        return float("nan")
    keys = sorted(hist)
    counts = np.cumsum([hist[k] for k in keys])
    return float(keys[int(np.searchsorted(counts, counts[-1] / 2))])


def _bench_arm_order(df: Any, baseline: str | None = None) -> list[str]:
    arms = list(dict.fromkeys(df["arm"]))
    if baseline in arms:
        arms.remove(baseline)
        arms.insert(0, baseline)
    return arms


def _bench_colors(arms: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as _plt

    cmap = _plt.get_cmap("tab10")
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def plot_arm_distributions(df: Any, table: Any = None, *, metric: str = "duration_s",
                           baseline: str | None = None, margin: float | None = None,
                           seed: int = 0) -> Any:
    """Every run as a dot per arm, and each arm's ratio to the baseline with its CI.

    Parameters
    ----------
    df : pandas.DataFrame
        Experiment rows (successful, non-warm-up runs), columns ``arm`` and ``metric``.
    table : pandas.DataFrame, optional
        Verdict table (``GridResult.table`` or ``pullbench.verdict_table``): columns ``arm``,
        ``ratio``, ``ratio_ci_low``, ``ratio_ci_high``, ``verdict``. Without it only the dots
        are drawn.
    metric : str
        Column plotted.
    baseline : str, optional
        Baseline arm (drawn first).
    margin : float, optional
        Equivalence margin drawn as a band around ratio 1.
    seed : int
        Seed of the horizontal jitter.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as _plt

    arms = _bench_arm_order(df, baseline)
    colors = _bench_colors(arms)
    ncols = 2 if table is not None and len(table) else 1
    fig, axes = _plt.subplots(1, ncols, figsize=(6.5 * ncols, 0.45 * len(arms) + 2.2),
                              squeeze=False)
    ax = axes[0, 0]
    rng = np.random.default_rng(seed)
    for i, arm in enumerate(arms):
        values = df.loc[df["arm"] == arm, metric].astype(float).to_numpy()
        y = i + rng.uniform(-0.18, 0.18, size=len(values))
        ax.scatter(values, y, s=14, alpha=0.7, color=colors[arm], edgecolor="none")
        if len(values):
            ax.plot([np.median(values)] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(arms)), arms)
    ax.invert_yaxis()
    ax.set_xlabel(f"{_metric_label(metric)}: every run, bar = median")
    ax.grid(axis="x", alpha=0.3)
    if ncols == 2:
        ax2 = axes[0, 1]
        rows = {str(r["arm"]): r for r in table.to_dict(orient="records")}
        if margin:
            ax2.axvspan(1 / (1 + margin), 1 + margin, color="tab:green", alpha=0.18,
                        label=f"±{margin:.0%} equivalence region")
        ax2.axvline(1.0, color="black", lw=0.8)
        for i, arm in enumerate(arms):
            rec = rows.get(arm)
            if rec is None:
                continue
            ratio, low, high = (float(rec.get(k) or np.nan)
                                for k in ("ratio", "ratio_ci_low", "ratio_ci_high"))
            ax2.errorbar(ratio, i, xerr=[[max(ratio - low, 0)], [max(high - ratio, 0)]], fmt="o",
                         color=colors[arm], capsize=3)
            ax2.annotate(str(rec.get("verdict", "")), (high if np.isfinite(high) else ratio, i),
                         xytext=(5, 0), textcoords="offset points", va="center", fontsize=8)
        ax2.set_yticks(range(len(arms)), arms)
        ax2.set_ylim(axes[0, 0].get_ylim())
        ax2.set_xlabel(f"ratio to {baseline or 'baseline'} (95% CI); below 1 = lower "
                       f"{_metric_label(metric).split(' (')[0]}")
        ax2.grid(axis="x", alpha=0.3)
        if margin:
            ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    text = f"Every run's {_metric_label(metric)} per arm (bar = median)"
    if ncols == 2:
        rows_ = {str(r["arm"]): r for r in table.to_dict(orient="records")}
        text += (f"; right: each arm's ratio to {baseline or 'the baseline'} with its 95% CI"
                 + (f" against the ±{margin:.0%} equivalence region" if margin else "") + ": "
                 + "; ".join(f"{a} {rows_[a].get('verdict')}" for a in arms if a in rows_))
    return _set_alt(fig, text)


def plot_write_size_histograms(df: Any, *, column: str = "write_size_hist",
                               baseline: str | None = None) -> Any:
    """Share of ``write()`` calls per power-of-two size bucket, one panel row per arm.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with ``arm`` and a histogram column (dict or JSON text: bucket upper bound in bytes
        -> count), summed over the arm's runs.
    column : str
        ``write_size_hist`` or ``read_size_hist``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as _plt

    arms = _bench_arm_order(df, baseline)
    colors = _bench_colors(arms)
    totals: dict[str, dict[int, int]] = {}
    for arm in arms:
        acc: dict[int, int] = {}
        for cell in df.loc[df["arm"] == arm, column]:
            for k, v in _bench_hist(cell).items():
                acc[k] = acc.get(k, 0) + v
        totals[arm] = acc
    seen = sorted({k for h in totals.values() for k in h}) or [1]
    # every power-of-two bucket between the smallest and the largest, empty ones too
    buckets = [1 << e for e in range(max(seen[0], 1).bit_length() - 1,
                                     max(seen[-1], 1).bit_length())]
    buckets = sorted(set(buckets) | set(seen))
    fig, axes = _plt.subplots(len(arms), 1, figsize=(8, 1.1 * len(arms) + 1), sharex=True,
                              squeeze=False)
    x = np.arange(len(buckets))
    for ax, arm in zip(axes[:, 0], arms, strict=True):
        counts = np.array([totals[arm].get(b, 0) for b in buckets], dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        ax.bar(x, share, color=colors[arm])
        ax.set_ylabel(arm, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1])
    labels = [_bench_size_label(b) for b in buckets]
    axes[-1, 0].set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    kind = "write()" if column.startswith("write") else "read"
    axes[-1, 0].set_xlabel(f"{kind} size bucket (bytes, up to); bar = share of the arm's calls")
    fig.tight_layout()
    common = {a: _bench_size_label(max(totals[a], key=lambda k: totals[a][k]))
              for a in arms if totals[a]}
    return _set_alt(fig, f"Share of {kind} calls per size bucket ({labels[0]} to {labels[-1]} "
                         "bytes, every bucket shown), one row per arm: "
                         + "; ".join(f"{a} mostly {b}" for a, b in common.items()))


def _bench_size_label(n: float) -> str:
    if n >= 2**20:
        return f"{n / 2**20:g}M"
    if n >= 2**10:
        return f"{n / 2**10:g}K"
    return f"{n:g}"


def _bench_numeric(group: Any, column: str) -> Any:
    """A column as numbers with NaN dropped; empty when the rows lack the column."""
    if column not in group:
        return pd.Series(dtype=float)
    return pd.to_numeric(group[column], errors="coerce").dropna()


def _bench_per_arm(df: Any) -> Any:
    rows = []
    for arm, group in df.groupby("arm", sort=False):
        thr = _bench_numeric(group, "throughput_mb_s")
        reads = [_bench_hist_median(_bench_hist(c)) for c in group.get("read_size_hist", [])]
        reads = [r for r in reads if r == r]  # not measured (probes off): NaN, left out
        params = group["params"].iloc[0] if "params" in group else {}
        eff = group["effective_params"].iloc[0] if "effective_params" in group else {}
        rows.append({
            "arm": arm,
            "throughput_median": float(thr.median()) if len(thr) else np.nan,
            "throughput_q1": float(thr.quantile(0.25)) if len(thr) else np.nan,
            "throughput_q3": float(thr.quantile(0.75)) if len(thr) else np.nan,
            "read_bytes": float(np.nanmedian(reads)) if reads else np.nan,
            "write_bytes": float(_bench_numeric(group, "median_write_bytes").median()),
            "buffer_bytes": float(_bench_numeric(group, "buffer_bytes").median()),
            "params": params if isinstance(params, dict) else {},
            "effective_params": eff if isinstance(eff, dict) else {},
        })
    return pd.DataFrame(rows)


def plot_throughput_vs_sizes(df: Any, *, baseline: str | None = None) -> Any:
    """Throughput (MB/s) against the median read size and the median write size, per arm.

    Each point is one arm: median over its runs, whiskers the interquartile range.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as _plt

    per = _bench_per_arm(df)
    order = _bench_arm_order(df, baseline)
    colors = _bench_colors(order)
    fig, axes = _plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, col, label in ((axes[0], "read_bytes", "median read size (bytes, log scale)"),
                           (axes[1], "write_bytes", "median write size (bytes, log scale)")):
        for rec in per.to_dict(orient="records"):
            _arm_point(ax, rec, rec[col], order, colors)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("throughput (MB/s): median, bar = IQR")
    _arm_legend(fig, axes[1])
    fig.tight_layout()
    return _set_alt(fig, "Throughput of each arm against its median read size and its median "
                         "write size: " + _points_text(per, "read_bytes", "write_bytes"))


def plot_speed_vs_memory(df: Any, *, baseline: str | None = None) -> Any:
    """Throughput against the memory each arm holds in copy/write buffers.

    The maintainers' objection to moby/moby#48602: bigger buffers cost memory. ``buffer_bytes``
    is what the strategy holds across the concurrently copied layers.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as _plt

    per = _bench_per_arm(df)
    order = _bench_arm_order(df, baseline)
    colors = _bench_colors(order)
    fig, ax = _plt.subplots(figsize=(7.5, 4.4))
    for rec in per.to_dict(orient="records"):
        _arm_point(ax, rec, max(rec["buffer_bytes"], 1.0), order, colors)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("memory held in copy and write buffers during the pull (bytes, log scale)")
    ax.set_ylabel("throughput (MB/s): median, bar = IQR")
    ax.grid(alpha=0.3)
    _arm_legend(fig, ax)
    fig.tight_layout()
    return _set_alt(fig, "Throughput of each arm against the memory it holds in buffers: "
                         + _points_text(per, "buffer_bytes"))


def _arm_point(ax: Any, rec: dict[str, Any], x: float, order: list[str],
               colors: dict[str, Any]) -> None:
    """One arm's median throughput with its IQR, its own marker, nudged sideways when arms
    share an x (a log-scale offset of a few percent, ordered by arm) so none hides another."""
    arm = rec["arm"]
    i = order.index(arm) if arm in order else 0
    nudge = 2 ** (0.06 * (i - (len(order) - 1) / 2))
    y = rec["throughput_median"]
    err = [[max(y - rec["throughput_q1"], 0)], [max(rec["throughput_q3"] - y, 0)]]
    ax.errorbar(x * nudge, y, yerr=err, fmt=_MARKERS[i % len(_MARKERS)], color=colors[arm],
                label=arm, capsize=3, markersize=7, markeredgecolor="black",
                markeredgewidth=0.5, alpha=0.9)


def _arm_legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=8, loc="best", title="arm")


def _points_text(per: Any, *columns: str) -> str:
    parts = []
    for rec in per.to_dict(orient="records"):
        where = ", ".join(f"{c.replace('_bytes', '')} {_bench_size_label(rec[c])}B"
                          for c in columns if rec[c] == rec[c])
        parts.append(f"{rec['arm']} {rec['throughput_median']:.0f} MB/s ({where})")
    return "; ".join(parts)


def plot_effect_vs_interference(stability: Sequence[Any], *, metric: str = "duration_s",
                                baseline: str | None = None) -> Figure:
    """Per-block ratio candidate/baseline against the block's interference, with the OLS fit.

    One panel per candidate arm: each block is a point (hollow when the block was disturbed),
    the line is the fit of the log ratio on interference with its slope and p in the title.

    Parameters
    ----------
    stability : sequence of StabilityRow
        ``analysis.metric(image, metric).stability`` (records with ``arm``, ``points`` --
        ``(block, interference cores, log ratio, disturbed)`` -- ``slope``, ``slope_p``,
        ``unstable``).
    metric : str
        For the axis label.
    baseline : str, optional
        For the axis label.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No arm has points to draw.
    """
    import matplotlib.pyplot as _plt

    rows = [r for r in stability if r.points]
    if not rows:
        raise ValueError("no per-block points to draw (the rows carry no interference columns)")
    fig, axes = _plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False,
                              sharey=True)
    for ax, row in zip(axes[0], rows, strict=True):
        pts = np.array([(x, y, d) for _, x, y, d in row.points], dtype=float)
        quiet, dist = pts[pts[:, 2] == 0], pts[pts[:, 2] == 1]
        ax.scatter(quiet[:, 0], np.exp(quiet[:, 1]), color="tab:blue", label="quiet block")
        ax.scatter(dist[:, 0], np.exp(dist[:, 1]), facecolors="none", edgecolors="tab:red",
                   label="disturbed block")
        if row.slope is not None and len(pts) >= 2:
            xs = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 20)
            intercept = float(np.mean(pts[:, 1]) - row.slope * np.mean(pts[:, 0]))
            ax.plot(xs, np.exp(intercept + row.slope * xs), color="black", lw=1)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        title = row.arm + (" (UNSTABLE)" if row.unstable else "")
        if row.slope_p is not None:
            title += f"\nslope {row.slope:+.3f}/core, p={row.slope_p:.2g}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block interference (cores of other work + host steal)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} ratio vs {baseline or 'baseline'}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
