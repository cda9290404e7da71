"""The CLI end to end: `bench` (tiny), `analyze`, `report`, errors, Ctrl-C and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pullbench._errors import BenchmarkError
from pullbench.cli import main
from pullbench.experiment._report import PLOT_ERROR_CLASS
from pullbench.experiment._runner import run_experiment

PLOT_ERROR = f'<p class="{PLOT_ERROR_CLASS}">'  # the note the report shows for a failed plot
TINY = ["--image", "synthetic-small", "--arms", "go-iocopy,containerd-1m", "--no-progress"]


def test_bench_analyze_report(tmp_path):
    out = tmp_path / "res"
    runner = CliRunner()
    result = runner.invoke(main, ["bench", *TINY, "--blocks", "3", "--warmup-blocks", "1",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "wall time of the pull (s) vs baseline go-iocopy" in text
    assert "CPU time (user + sys) per byte (ns/B)" in text
    for column in ("ratio [95% CI]", "p (Holm)", "verdict", "write size", "MB/s"):
        assert column in text
    assert "containerd-1m  3" in text
    assert "go-iocopy      3" in text
    for name in ("rows.jsonl", "rows.parquet", "rows.csv", "environment.json", "analysis.json",
                 "report.html"):
        assert (out / name).is_file(), name
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["n_runs"] == 6
    assert analysis["n_failed"] == 0
    table = analysis["images"]["synthetic-small"]["metrics"]["duration_s"]["table"]
    assert [r["arm"] for r in table] == ["containerd-1m"]
    assert table[0]["verdict"] in {"faster", "slower", "equivalent", "inconclusive"}
    html = (out / "report.html").read_text()
    assert PLOT_ERROR not in html, html[html.find(PLOT_ERROR):][:500]
    # 2 metrics -> 2 distributions, + write sizes, throughput vs sizes, speed vs memory,
    # + a ratio-vs-interference scatter per metric
    assert html.count("data:image/png;base64,") == 7
    assert "containerd-1m" in html

    result = runner.invoke(main, ["analyze", str(out), "--metric", "throughput_mb_s",
                                  "--margin", "0.1"])
    assert result.exit_code == 0, result.output
    assert "throughput_mb_s" in result.output
    assert "±10%" in result.output
    result = runner.invoke(main, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert PLOT_ERROR not in html, html[html.find(PLOT_ERROR):][:500]
    # analyses add up: the two metrics of the bench and throughput_mb_s -> 3 distributions,
    # 3 ratio-vs-interference scatters, + write sizes, throughput vs sizes, speed vs memory
    assert html.count("data:image/png;base64,") == 9
    assert "wall time" in html


def test_bench_no_probes_skips_cpu_metrics_with_a_note(tmp_path):
    out = tmp_path / "np"
    result = CliRunner().invoke(main, ["bench", *TINY, "--blocks", "2", "--warmup-blocks", "0",
                                       "--in-process", "--no-probes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wall time of the pull (s) vs baseline go-iocopy" in result.output
    assert "cpu_ns_per_byte not analysed: not measured: the runs were made with probes off" \
        in result.output
    assert "CPU time (user + sys) per byte (ns/B) vs baseline" not in result.output
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok"
        assert row["probes"] is False
        for column in ("cpu_user_s", "cpu_sys_s", "peak_rss_bytes", "syscw", "write_count",
                       "write_size_hist", "median_write_bytes"):
            assert row[column] is None, column  # missing, not a 0 that looks like data
        assert row["duration_s"] > 0
        assert row["bytes"] > 0
    analysis = json.loads((out / "analysis.json").read_text())
    image = analysis["images"]["synthetic-small"]
    assert list(image["metrics"]) == ["duration_s"]
    assert "probes off" in image["skipped_metrics"]["cpu_ns_per_byte"]
    assert any("cpu_ns_per_byte skipped" in n for n in analysis["notes"])
    assert "Not analysed: not measured" in (out / "report.html").read_text()
    # --metric on a probe column later: a note, not a crash and not a verdict
    result = CliRunner().invoke(main, ["analyze", str(out), "--metric", "cpu_s"])
    assert result.exit_code == 0, result.output
    assert "cpu_s not analysed" in result.output


def test_no_probes_help_says_what_it_does():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--no-probes" in text
    assert "no per-thread CPU time" in text
    assert "digest checks are unchanged" in text


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["bench", *TINY, "--arms", "go-iocopy,zzz", "--out",
                                  str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "unknown strategy 'zzz'" in result.output
    assert "pools-bufio32k" in result.output
    result = runner.invoke(main, ["bench", *TINY, "--param", "nonsense", "--out",
                                  str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "[ARM.]KEY=VALUE" in result.output
    result = runner.invoke(main, ["bench", *TINY, "--image", "nope", "--out",
                                  str(tmp_path / "c")])
    assert result.exit_code == 1
    assert "unknown image" in result.output
    result = runner.invoke(main, ["bench", "--registry", "http://127.0.0.1:9", *TINY, "--out",
                                  str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "not reachable" in result.output
    (tmp_path / "e").mkdir()
    result = runner.invoke(main, ["bench", "--resume", str(tmp_path / "e"), "--arms", "x"])
    assert result.exit_code == 2
    assert "drop --arms" in result.output
    result = runner.invoke(main, ["analyze", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert "not a results folder" in result.output


def _rows(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-c", "from pullbench.cli import main; main()", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "TMPDIR": str(cwd)},  # a SIGKILL leaks here
    )


def _wait_rows(path, n, proc, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while len(_rows(path)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "experiment made no progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_and_crash_then_resume_lose_and_repeat_nothing(tmp_path):
    out = tmp_path / "res"
    rows_path = out / "rows.jsonl"
    args = ["bench", *TINY, "--blocks", "6", "--warmup-blocks", "0", "--out", str(out),
            "--no-report"]
    # 1. Ctrl-C: a clean stop that keeps every finished row
    proc = _start(args, tmp_path)
    _wait_rows(rows_path, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "continue with: pullbench bench --resume" in err
    after_sigint = _rows(rows_path)
    assert len(after_sigint) >= 3
    assert (out / "rows.parquet").exists()  # consolidated on the way out
    # 2. a hard crash (SIGKILL of the whole process group) in the middle of the resumed run
    proc = _start(["bench", "--resume", str(out), "--no-progress", "--no-report"], tmp_path)
    _wait_rows(rows_path, len(after_sigint) + 2, proc)
    with pytest.raises(BenchmarkError, match="another pullbench process is writing"):
        run_experiment(None, out, resume=True, progress=False)  # one writer per folder
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(_rows(rows_path)) < 12
    # 3. resume to the end
    proc = _start(["bench", "--resume", str(out), "--no-progress", "--no-report"], tmp_path)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = _rows(rows_path)
    assert sorted(r["run_index"] for r in rows) == list(range(12))  # nothing lost or repeated
    assert {r["status"] for r in rows} == {"ok"}
    assert rows[: len(after_sigint)] == after_sigint  # earlier rows untouched
    assert "vs baseline go-iocopy" in stdout
    env = json.loads((out / "environment.json").read_text())
    assert len(env["resumed_sessions"]) == 2


def test_bench_from_a_spec_file_with_overrides(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: from-file\nimages: [synthetic-small]\narms: [go-iocopy, containerd-1m]\n"
        "blocks: 2\nwarmup_blocks: 0\nisolation: inprocess\nmetrics: [duration_s]\n"
    )
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["bench", "--spec", str(spec), "--param",
                                       "containerd-1m.write_size=256k", "--blocks", "3",
                                       "--out", str(out), "--no-progress", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "containerd-1m[write_size=262144]" in result.output
    saved = json.loads((out / "spec.json").read_text())
    assert saved["name"] == "from-file"
    assert saved["blocks"] == 3
    assert saved["arms"][1]["params"] == {"write_size": 262144}
    rows = _rows(out / "rows.jsonl")
    assert len(rows) == 6
    assert {r["isolation"] for r in rows} == {"inprocess"}
    assert {r["effective_params"]["write_size"] for r in rows
            if r["strategy"] == "containerd-1m"} == {262144}
