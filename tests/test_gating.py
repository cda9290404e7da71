"""CI gating: --fail-on / --fail-if-not exit 3 on a named arm's verdict, after results are written.

The verdicts come from real runs: the shipped Debian-minbase run on Distribution (requests-iter-
content slower, every other arm faster, wall time and CPU per byte alike) and a tiny bench.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from pullbench.cli import main
from pullbench.experiment._results import resolve_results_path


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("gating") / "run"
    shutil.copytree(resolve_results_path("shipped"), dest)
    return dest


def _gate_lines(result):
    return [ln for ln in result.stderr.splitlines() if ln.startswith("gate")]


def test_fail_on_slower_names_the_arm_and_exits_3(shipped_copy):
    result = CliRunner().invoke(main, ["analyze", str(shipped_copy), "--fail-on", "slower"])
    assert result.exit_code == 3, result.output
    assert _gate_lines(result) == [
        "gate failed: debian-minbase: requests-iter-content duration_s verdict slower "
        "(--fail-on slower)"]
    assert "analysis" in result.stdout  # the analysis was printed and kept before exiting
    assert (shipped_copy / "analysis.json").is_file()


def test_gates_on_named_arms_pass_or_fail_by_their_verdict(shipped_copy):
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--fail-on",
                                  "containerd-1m=slower", "--fail-if-not", "pr48602=faster"])
    assert result.exit_code == 0, result.output
    assert _gate_lines(result) == [
        "gates passed: --fail-on containerd-1m=slower; --fail-if-not pr48602=faster"]
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--fail-if-not", "equivalent"])
    assert result.exit_code == 3
    failed = _gate_lines(result)
    assert len(failed) == 5  # no arm is equivalent on loopback
    assert "gate failed: debian-minbase: containerd-1m duration_s verdict faster " \
           "(--fail-if-not equivalent)" in failed
    # judged on the first --metric
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--metric", "cpu_ns_per_byte",
                                  "--fail-on", "requests-iter-content=slower"])
    assert result.exit_code == 3
    assert _gate_lines(result) == [
        "gate failed: debian-minbase: requests-iter-content cpu_ns_per_byte verdict slower "
        "(--fail-on requests-iter-content=slower)"]


def test_bad_gates_are_usage_errors(shipped_copy, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--fail-on", "pr48602=slowest"])
    assert result.exit_code == 2
    assert "expected [ARM=]VERDICT with VERDICT one of faster, slower, equivalent, " \
           "inconclusive" in result.output
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--fail-on", "pr4860=slower"])
    assert result.exit_code == 2
    assert "no arm 'pr4860'; arms are" in result.output
    assert "pr48602" in result.output
    result = runner.invoke(main, ["analyze", str(shipped_copy), "--fail-on", "go-iocopy=slower"])
    assert result.exit_code == 2
    assert "go-iocopy is the baseline" in result.output
    # bench checks the named arm before it runs anything
    out = tmp_path / "never"
    result = runner.invoke(main, ["bench", "--image", "synthetic-small", "--arms",
                                  "go-iocopy,containerd-1m", "--fail-on", "pr48602=slower",
                                  "--no-progress", "--out", str(out)])
    assert result.exit_code == 2
    assert "no arm 'pr48602'; arms are go-iocopy, containerd-1m" in result.output
    assert not out.exists()


def test_bench_writes_everything_then_exits_3_on_a_gate(tmp_path):
    out = tmp_path / "res"
    every = [a for v in ("faster", "slower", "equivalent", "inconclusive")
             for a in ("--fail-on", f"containerd-1m={v}")]  # one of them is the verdict
    result = CliRunner().invoke(main, [
        "bench", "--image", "synthetic-small", "--arms", "go-iocopy,containerd-1m",
        "--blocks", "2", "--warmup-blocks", "0", "--in-process", "--no-progress",
        "--out", str(out), *every])
    assert result.exit_code == 3, result.output
    analysis = json.loads((out / "analysis.json").read_text())
    (row,) = analysis["images"]["synthetic-small"]["metrics"]["duration_s"]["table"]
    assert _gate_lines(result) == [
        f"gate failed: synthetic-small: containerd-1m duration_s verdict {row['verdict']} "
        f"(--fail-on containerd-1m={row['verdict']})"]
    assert (out / "report.html").is_file()
    assert result.stdout.splitlines()[-1] == f"results: {out}"
