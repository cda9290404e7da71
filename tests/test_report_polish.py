"""Plots and tables people read: bands, words on axes, every bucket, distinct arms, formatted cells.

Drawn from the shipped Debian-minbase run (real rows and its analysis).
"""

from __future__ import annotations

import pandas as pd
import pytest

import pullbench
from pullbench import plots


@pytest.fixture(scope="module")
def shipped():
    rows = pullbench.load_results("shipped")
    ok = rows[(rows["status"] == "ok") & ~rows["warmup"].astype(bool)]
    return ok, pullbench.load_analysis(pullbench.resolve_results_path("shipped"))


def test_distribution_plot_has_the_margin_band_and_axes_in_words(shipped):
    ok, analysis = shipped
    table = pullbench.verdict_table(analysis, "debian-minbase", "duration_s")
    fig = plots.plot_arm_distributions(ok, table, metric="duration_s", baseline="go-iocopy",
                                       margin=analysis.margin)
    left, right = fig.axes
    assert left.get_xlabel() == "wall time of the pull (s): every run, bar = median"
    assert "below 1 = lower wall time of the pull" in right.get_xlabel()
    band = [p for p in right.patches if p.get_label() == "±2% equivalence region"]
    assert len(band) == 1
    x0, x1 = band[0].get_x(), band[0].get_x() + band[0].get_width()
    assert x0 == pytest.approx(1 / 1.02)
    assert x1 == pytest.approx(1.02)
    alt = plots.figure_alt_text(fig)
    assert alt.startswith("Every run's wall time of the pull (s) per arm")
    assert "requests-iter-content slower" in alt


def test_write_size_histogram_shows_every_bucket_in_range(shipped):
    ok, _ = shipped
    two = ok[ok["arm"].isin(["requests-iter-content", "containerd-1m"])]
    fig = plots.plot_write_size_histograms(two)
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    # requests-iter-content writes 8 KiB, containerd-1m 1 MiB: nothing between, and those
    # buckets are still on the axis
    for bucket in ("8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M"):
        assert bucket in labels
    assert len(labels) == len(set(labels))
    assert "every bucket shown" in plots.figure_alt_text(fig)


def test_overlapping_arms_keep_their_own_marker(shipped):
    ok, _ = shipped
    fig = plots.plot_speed_vs_memory(ok, baseline="go-iocopy")
    (ax,) = fig.axes
    points = {c.get_label(): c.lines[0] for c in ax.containers}  # one errorbar per arm
    assert set(points) == set(ok["arm"])
    markers = {arm: line.get_marker() for arm, line in points.items()}
    assert len(set(markers.values())) == len(markers)  # one marker per arm
    xs = {arm: line.get_xdata()[0] for arm, line in points.items()}
    # pr48602 and containerd-1m hold similar buffers: nudged apart, never on one spot
    assert xs["pr48602"] != xs["containerd-1m"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(markers)


def test_styled_table_writes_p_values_and_sizes_as_the_cli_does(shipped):
    _, analysis = shipped
    table = pullbench.verdict_table(analysis, "debian-minbase", "duration_s")
    html = pullbench.styled_table(table[["arm", "p_holm", "ratio", "median_write_bytes"]],
                                  caption="duration_s").to_html()
    assert "3.9e-14" in html  # pr48602's Holm p, not 0.000
    assert "0.000<" not in html
    assert "512 KiB" in html
    assert "524288" not in html
    assert "0.698" in html
    assert pd.isna(table.loc[0, "p_holm"])  # the baseline: a dash, not "nan"
    assert ">nan<" not in html


def test_report_of_untraced_real_pullers_says_why_it_has_no_write_size_plot(tmp_path):
    """Untraced dockerd runs record no write sizes: the report says so in a note, not an error."""
    import shutil

    from pullbench.experiment._report import PLOT_ERROR_CLASS, render_report

    folder = tmp_path / "run"
    shutil.copytree(pullbench.resolve_results_path("dockerd-pr48602-lan-1g-tls"), folder)
    rows = pullbench.load_results(folder)
    assert "write_size_hist" not in rows.columns  # what the plot would need
    page = render_report(folder).read_text()
    assert f'class="{PLOT_ERROR_CLASS}"' not in page
    assert "no plot of share of write() calls per size bucket" in page
    assert "only in traced runs" in page
    assert page.count("<img") >= 4  # the other plots are drawn
