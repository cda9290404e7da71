"""Results store: crash-safe append, partial-line repair, consolidation, loading, environment."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pullbench._errors import ResultSchemaError
from pullbench.experiment._env import capture_environment, filesystem_type
from pullbench.experiment._results import (
    RESULTS_SCHEMA_VERSION,
    ResultsStore,
    consolidate_results,
    load_results,
)


def _row(i: int, **kw):
    row = {
        "schema_version": RESULTS_SCHEMA_VERSION, "experiment": "t", "run_index": i,
        "run_id": f"r{i}", "block": i // 2 - 1, "order_in_block": i % 2, "warmup": i < 2,
        "arm": "ab"[i % 2], "strategy": "s", "params": {"buffer_bytes": 32768}, "image": "img",
        "cache_state": "warm", "network_profile": "loopback", "tls": False, "status": "ok",
        "error": None, "duration_s": 1.0 + i / 10, "total_bytes": 1_000_000,
        "cpu_user_s": 0.01, "cpu_sys_s": 0.02,
        "write_size_hist": {"32768": 30, "4096": 2}, "throughput_mb_s": float("nan"),
    }
    row.update(kw)
    return row


def test_append_read_consolidate_load(tmp_path):
    store = ResultsStore(tmp_path / "res").create()
    for i in range(6):
        store.append(_row(i))
    store.append(_row(6, status="error", error="RegistryUnavailable: boom", duration_s=None))
    rows = store.read_rows()
    assert [r["run_index"] for r in rows] == list(range(7))
    assert rows[0]["throughput_mb_s"] is None  # NaN is not valid JSON: stored as null
    parquet, csv = consolidate_results(store.directory)
    for source in (store.directory, parquet, csv, store.rows_path):
        df = load_results(source)
        assert list(df["run_index"]) == [2, 3, 4, 5, 6], source
        assert df.loc[0, "write_size_hist"] == {"32768": 30, "4096": 2}, source
        assert df.loc[0, "cpu_ns_per_byte"] == pytest.approx(0.03 * 1e9 / 1_000_000)
        assert df.loc[0, "bytes"] == 1_000_000
    ok = load_results(store.directory, include_warmup=True, include_errors=False)
    assert list(ok["run_index"]) == [0, 1, 2, 3, 4, 5]
    assert pd.isna(load_results(csv).loc[4, "duration_s"])


def test_partial_last_line_is_dropped_and_repaired(tmp_path):
    store = ResultsStore(tmp_path).create()
    store.append(_row(0))
    store.append(_row(1))
    with store.rows_path.open("ab") as fh:  # a crash in the middle of a write
        fh.write(json.dumps(_row(2)).encode()[:40])
    assert len(store.read_rows()) == 2
    store.read_rows(repair=True)
    store.append(_row(2))
    assert [r["run_index"] for r in store.read_rows()] == [0, 1, 2]


def test_corruption_in_the_middle_and_wrong_schema_are_errors(tmp_path):
    store = ResultsStore(tmp_path).create()
    store.append(_row(0))
    with store.rows_path.open("a") as fh:
        fh.write("{not json}\n")
    store.append(_row(1))
    with pytest.raises(ResultSchemaError, match="line 2 is not valid JSON"):
        store.read_rows()
    other = ResultsStore(tmp_path / "o").create()
    other.append(_row(0, schema_version=99))
    with pytest.raises(ResultSchemaError, match="schema_version 99"):
        other.read_rows()
    with pytest.raises(ResultSchemaError, match="not a results folder"):
        load_results(tmp_path / "nothing-here" if (tmp_path / "nothing-here").mkdir() is None
                     else tmp_path)


def test_unwritable_results_folder(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ResultSchemaError, match="not writable"):
        ResultsStore(target / "sub").create()


def test_environment_capture(tmp_path):
    env = capture_environment(
        spec={"seed": 3, "network_profile": "loopback"},
        registry={"kind": "embedded", "version": "x", "network_profile": "loopback"},
        images=[{"name": "i", "digest": "sha256:" + "0" * 64}], dest_dir=tmp_path,
    )
    assert env["schema_version"] == RESULTS_SCHEMA_VERSION
    assert env["seed"] == 3
    assert env["network_profile"] == "loopback"
    assert env["host"]["cpu_count"] >= 1
    assert env["host"]["kernel"]
    assert env["packages"]["requests"]
    assert env["pullbench"]["version"]
    assert env["destination"]["fstype"] == filesystem_type(tmp_path)["fstype"] != ""
    json.dumps(env)  # JSON-able


def test_analysis_excludes_and_counts_failed_runs():
    import numpy as np

    from pullbench.experiment._analysis import analyze_results, verdict_table
    from pullbench.experiment._report import format_verdict_table

    rng = np.random.default_rng(0)
    rows = []
    i = 0
    for block in range(-1, 8):
        for arm, scale in (("base", 1.0), ("fast", 0.8), ("same", 1.0)):
            duration = scale * (1 + 0.01 * rng.standard_normal())
            failed = block == 2 and arm == "fast"
            rows.append(_row(
                i, block=block, warmup=block < 0, arm=arm, status="error" if failed else "ok",
                error="RegistryUnavailable: gone" if failed else None,
                duration_s=None if failed else duration,
                throughput_mb_s=None if failed else 100 / duration,
                median_write_bytes=32768,
            ))
            i += 1
    df = pd.DataFrame(rows)
    analysis = analyze_results(df, baseline="base", metrics=("duration_s", "throughput_mb_s"),
                               margin=0.05, n_resamples=500)
    assert analysis.n_failed == 1
    assert analysis.failed_by_arm == {"fast": 1}
    assert analysis.failed_messages == ("RegistryUnavailable: gone",)
    result = analysis.metric("img", "duration_s")
    assert result.incomplete_blocks_dropped == (2,)  # the block with the failed run
    assert result.paired is True
    table = verdict_table(analysis, "img", "duration_s").set_index("arm")
    assert table.loc["base", "verdict"] == "baseline"
    assert table.loc["fast", "verdict"] == "faster"
    assert table.loc["fast", "ratio"] == pytest.approx(0.8, rel=0.02)
    assert table.loc["same", "verdict"] == "equivalent"
    assert table.loc["fast", "n"] == 7  # 8 blocks minus the incomplete one
    rates = verdict_table(analysis, "img", "throughput_mb_s").set_index("arm")
    assert rates.loc["fast", "verdict"] == "faster"  # higher throughput is better
    assert rates.loc["fast", "ratio"] > 1
    text = format_verdict_table(analysis, "img", "duration_s")
    assert "ratio < 1 is better" in text
    assert "±5%" in text
    assert "ratio > 1 is better" in format_verdict_table(analysis, "img", "throughput_mb_s")
