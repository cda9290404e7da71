"""Analyses add up; hyperfine's line in the table; exports and --json; compare RUN_A RUN_B.

Real data throughout: the shipped Debian-minbase run on Distribution, and tiny benches against
the embedded registry with the synthetic-small image.
"""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from pullbench import load_results
from pullbench.cli import main
from pullbench.experiment._compare import compare_runs, environment_differences
from pullbench.experiment._results import resolve_results_path

TINY = ["--image", "synthetic-small", "--blocks", "3", "--warmup-blocks", "0", "--in-process",
        "--no-progress", "--no-report"]


@pytest.fixture
def shipped_copy(tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(resolve_results_path("shipped"), dest)
    return dest


def _analysed_metrics(folder):
    from pullbench import load_analysis

    return list(load_analysis(folder).image("debian-minbase").metrics)


def test_analyze_metric_adds_to_analysis_json(shipped_copy):
    assert sorted(_analysed_metrics(shipped_copy)) == ["cpu_ns_per_byte", "duration_s"]
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--metric", "throughput_mb_s"])
    assert result.exit_code == 0, result.output
    assert "throughput_mb_s = throughput (MB/s)" in result.stdout
    assert "duration_s = wall time" not in result.stdout  # only what was asked is printed
    assert _analysed_metrics(shipped_copy) == ["duration_s", "cpu_ns_per_byte",
                                               "throughput_mb_s"]
    result = runner.invoke(main, ["report", str(shipped_copy)])
    assert result.exit_code == 0, result.output
    html = (shipped_copy / "report.html").read_text()
    assert "wall time of the pull (s)" in html
    assert "throughput (MB/s)" in html


def test_main_table_has_hyperfines_line_and_the_speedup_phrase(shipped_copy):
    result = CliRunner().invoke(main, ["analyze", str(shipped_copy), "--metric", "duration_s"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("arm "))
    assert header.split()[:8] == ["arm", "n", "median", "mean", "±", "sd", "min", "…"]
    df = load_results(shipped_copy)
    runs = df[(df["arm"] == "containerd-1m") & ~df["warmup"].astype(bool)]["duration_s"]
    row = next(ln for ln in lines if ln.startswith("containerd-1m "))
    # mean ± sd and min … max of the arm's runs, as pandas computes them from rows.jsonl
    assert f"{runs.mean():.4g} ± {runs.std(ddof=1):.2g}" in row
    assert f"{runs.min():.4g} … {runs.max():.4g}" in row
    phrase = next(ln for ln in lines if ln.startswith("  containerd-1m: "))
    assert phrase.startswith("  containerd-1m: 1.49× faster than go-iocopy [1.38, 1.61]")
    assert "  requests-iter-content: 1.56× slower than go-iocopy [1.47, 1.66]" in result.stdout
    saved = json.loads((shipped_copy / "analysis.json").read_text())
    assert saved["schema_version"] == 3
    desc = saved["images"]["debian-minbase"]["metrics"]["duration_s"]["descriptives"]
    assert desc["go-iocopy"]["n"] == 30  # the baseline described too
    assert desc["containerd-1m"]["n"] == 30
    assert desc["containerd-1m"]["max"] == pytest.approx(runs.max())


def test_json_and_exports(shipped_copy, tmp_path):
    out = tmp_path / "exports"
    result = CliRunner().invoke(main, [
        "analyze", str(shipped_copy), "--json", "--export-json", str(out / "a.json"),
        "--export-csv", str(out / "a.csv"), "--export-markdown", str(out / "a.md")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert printed["baseline"] == "go-iocopy"
    assert printed == json.loads((out / "a.json").read_text())
    stored = json.loads((shipped_copy / "analysis.json").read_text())
    assert {k: v for k, v in printed.items() if k != "analyzed_at"} == \
        {k: v for k, v in stored.items() if k != "analyzed_at"}
    with (out / "a.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12  # 6 arms (baseline included) x 2 metrics
    first = rows[0]
    assert (first["metric"], first["arm"], first["role"]) == ("duration_s", "go-iocopy",
                                                              "baseline")
    slow = next(r for r in rows if r["arm"] == "requests-iter-content"
                and r["metric"] == "duration_s")
    assert slow["verdict"] == "slower"
    assert float(slow["ratio_ci_low"]) > 1
    assert slow["phrase"].startswith("1.56× slower than go-iocopy")
    md = (out / "a.md").read_text()
    assert "| arm | n | median | mean ± sd | min … max |" in md
    assert "- containerd-1m: 1.49× faster than go-iocopy" in md


def test_compare_a_run_with_itself_finds_no_change_and_no_differences(shipped_copy):
    comparison = compare_runs(shipped_copy, shipped_copy, metrics=["duration_s"])
    assert len(comparison.rows) == 6
    for row in comparison.rows:
        assert row.ratio == pytest.approx(1.0)
        assert row.p_holm == pytest.approx(1.0)
        assert row.verdict in {"equivalent", "inconclusive"}
    assert comparison.environment_differences == ()


def test_environment_differences_leave_out_what_always_differs():
    a = {"captured_at": "t1", "registry": {"host": "127.0.0.1:1", "kind": "embedded"},
         "host": {"cpu_model": "X", "kernel": "6.1"}, "spec": {"seed": 1, "concurrency": 3}}
    b = {"captured_at": "t2", "registry": {"host": "127.0.0.1:2", "kind": "embedded"},
         "host": {"cpu_model": "Y", "kernel": "6.1"}, "spec": {"seed": 2, "concurrency": 1},
         "packages": {"numpy": "2.4"}}
    # what differs between any two runs on one machine: pids, thread counts, one-instant
    # readings, temp paths, the preflight's window
    for env, n in ((a, 1), (b, 2)):
        env["cpu_isolation"] = {"applied": {"registry": {"pid": 100 + n, "threads": n}}}
        env["preflight"] = {"captured_at": f"t{n}", "window_s": 0.5 + n / 1000,
                            "mem_available_bytes": n, "quiet": True,
                            "top_processes": [{"pid": n}]}
        env["registry"]["ca_bundle"] = f"/tmp/pullbench-registry-{n}/ca.pem"
    diffs = {d.key: (d.a, d.b) for d in environment_differences(a, b)}
    assert diffs == {"host.cpu_model": ('"X"', '"Y"'), "spec.concurrency": ("3", "1"),
                     "packages.numpy": (None, '"2.4"')}
    b["preflight"]["quiet"] = False  # the machine's state is compared
    assert {d.key for d in environment_differences(a, b)} >= {"preflight.quiet"}


@pytest.mark.slow
def test_compare_two_benches_unpaired_with_their_differences(tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    result = runner.invoke(main, ["bench", *TINY, "--arms", "go-iocopy,containerd-1m",
                                  "--out", str(a), "--export-csv", str(tmp_path / "a.csv")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "a.csv").open() as fh:
        assert [r["arm"] for r in csv.DictReader(fh) if r["metric"] == "duration_s"] == \
            ["go-iocopy", "containerd-1m"]
    result = runner.invoke(main, ["bench", *TINY, "--arms", "go-iocopy,pr48602",
                                  "--concurrency", "1", "--out", str(b)])
    assert result.exit_code == 0, result.output

    result = runner.invoke(main, ["compare", str(a), str(b), "--metric", "duration_s",
                                  "--export-json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"A (baseline, before): {a}" in text
    assert "each arm B vs A, unpaired (Welch" in text
    assert "  go-iocopy: B is " in text
    assert "spec.concurrency: 3 → 1" in text  # the machine/environment differences listed
    assert "note: synthetic-small: arm(s) only in run A, not compared: containerd-1m" in text
    assert "note: synthetic-small: arm(s) only in run B, not compared: pr48602" in text
    saved = json.loads((tmp_path / "c.json").read_text())
    (row,) = saved["rows"]
    runs_a = load_results(a)
    assert row["n_a"] == 3
    assert row["mean_a"] == pytest.approx(
        pd.to_numeric(runs_a[runs_a["arm"] == "go-iocopy"]["duration_s"]).mean())
    # gates judge B vs A; a named arm must be one both runs have
    every = [x for v in ("faster", "slower", "equivalent", "inconclusive")
             for x in ("--fail-on", f"go-iocopy={v}")]
    result = runner.invoke(main, ["compare", str(a), str(b), "--metric", "duration_s", *every])
    assert result.exit_code == 3
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("gate failed")] == [
        f"gate failed: synthetic-small (B vs A): go-iocopy duration_s verdict {row['verdict']} "
        f"(--fail-on go-iocopy={row['verdict']})"]
    result = runner.invoke(main, ["compare", str(a), str(b), "--fail-on", "pr48602=slower"])
    assert result.exit_code == 2
    assert "no arm 'pr48602'; arms are go-iocopy" in result.output
