"""hyperfine --export-json import/export, with the real hyperfine as the peer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pullbench import (
    ResultSchemaError,
    StatsInputError,
    analyze_grid,
    read_hyperfine_json,
    write_hyperfine_json,
)
from pullbench.cli import main

HYPERFINE = shutil.which("hyperfine")
needs_hyperfine = pytest.mark.skipif(
    HYPERFINE is None and not os.environ.get("CI"),
    reason="hyperfine is not installed (it is in CI: bash .ci/install-test-deps)",
)


def _run_hyperfine(tmp_path, *args: str) -> str:
    out = tmp_path / "hf.json"
    subprocess.run([HYPERFINE or "hyperfine", "-N", "--style", "none", "--export-json", str(out),
                    *args], check=True, capture_output=True, timeout=120)
    return str(out)


@pytest.mark.peers
@needs_hyperfine
def test_read_real_hyperfine_parameter_scan(tmp_path):
    # 10x apart with 8 runs each: a load spike of a few hundred ms in either arm still leaves
    # Welch's p far below 0.05 and the ratio above 2.
    path = _run_hyperfine(tmp_path, "--runs", "8", "--warmup", "1", "-L", "t", "0.02,0.2",
                          "sleep {t}")
    df = read_hyperfine_json(path)
    assert list(df["arm"].unique()) == ["sleep 0.02", "sleep 0.2"]
    assert len(df) == 16
    assert list(df["run"][:8]) == list(range(8))
    assert set(df["param_t"]) == {"0.02", "0.2"}
    assert (df["exit_code"] == 0).all()
    doc = json.loads(Path(path).read_text())
    assert df["duration_s"][:8].tolist() == doc["results"][0]["times"]
    g = analyze_grid(df, baseline="sleep 0.02", block=None, rng=0, n_resamples=500)
    row = g.table.iloc[0]
    assert row["arm"] == "sleep 0.2"
    assert row["verdict"] == "slower"
    assert row["ratio"] > 2


@pytest.mark.peers
@needs_hyperfine
def test_cli_compare_stats_on_two_real_hyperfine_files(tmp_path):
    before = tmp_path / "before"
    after = tmp_path / "after"
    before.mkdir()
    after.mkdir()
    # 0.2 s vs 0.02 s with 8 runs and a warm-up: one or two load spikes of a few hundred ms
    # still leave Welch's p well below 0.05; 0.02 s vs 0.002 s with 6 runs did not (a single
    # spike in the fast arm made the verdict inconclusive).
    a = _run_hyperfine(before, "--runs", "8", "--warmup", "1", "sleep 0.2")
    b = _run_hyperfine(after, "--runs", "8", "--warmup", "1", "sleep 0.02")
    (tmp_path / "before.json").write_text(Path(a).read_text())
    (tmp_path / "after.json").write_text(Path(b).read_text())
    args = ["compare-stats", str(tmp_path / "before.json"), str(tmp_path / "after.json"),
            "--seed", "1", "--resamples", "500"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "baseline 'sleep 0.2'" in r.output
    assert "faster" in r.output
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["table"][0]
    assert row["arm"] == "sleep 0.02"
    assert row["verdict"] == "faster"
    assert row["ratio"] < 0.5  # ~0.1 plus process start-up
    # the same command in both files (before/after a change): arms are named by file
    (tmp_path / "after.json").write_text(Path(a).read_text())
    r = CliRunner().invoke(main, ["compare-stats", str(tmp_path / "before.json"),
                                  str(tmp_path / "after.json"), "--seed", "1",
                                  "--resamples", "500", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["baseline"] == "before"
    assert out["table"][0]["arm"] == "after"
    assert out["table"][0]["ratio"] == pytest.approx(1.0)


def test_round_trip_with_memory_and_parameters(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "arm": ["go-iocopy"] * 4 + ["containerd-1m"] * 4,
        "run": list(range(4)) * 2,
        "duration_s": rng.uniform(1, 2, 8),
        "memory_usage_byte": rng.integers(10**6, 10**7, 8),
        "exit_code": [0] * 8,
        "param_buffer": ["32k"] * 4 + ["1m"] * 4,
        "user_s": rng.uniform(0, 0.1, 8),
    })
    path = write_hyperfine_json(df, tmp_path / "out.json")
    doc = json.loads(path.read_text())
    first = doc["results"][0]
    assert first["command"] == "go-iocopy"
    assert first["stddev"] == pytest.approx(df["duration_s"][:4].std(ddof=1))
    assert first["parameters"] == {"buffer": "32k"}
    assert first["system"] is None
    back = read_hyperfine_json(path)
    for col in ("arm", "run", "duration_s", "memory_usage_byte", "exit_code", "param_buffer"):
        assert back[col].tolist() == df[col].tolist(), col
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not valid JSON"),
        ('{"foo": 1}', "no 'results' list"),
        ('{"results": [{"command": "x"}]}', "lacks 'command' or 'times'"),
        ('{"results": [{"command": "x", "times": [1, 2], "exit_codes": [0]}]}', "1 entries for 2"),
    ],
)
def test_read_rejects_files_that_are_not_hyperfine_json(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ResultSchemaError, match=match):
        read_hyperfine_json(p)


def test_write_rejects_nan_and_missing_columns(tmp_path):
    with pytest.raises(StatsInputError, match="NaN"):
        write_hyperfine_json(pd.DataFrame({"arm": ["a"], "duration_s": [np.nan]}),
                             tmp_path / "x.json")
    with pytest.raises(StatsInputError, match="'arm'"):
        write_hyperfine_json(pd.DataFrame({"duration_s": [1.0]}), tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
