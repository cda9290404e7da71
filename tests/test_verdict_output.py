"""What a newcomer sees: exact p-values, stable analysis.json, the verdict table, errors."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pullbench._errors import StrategyError
from pullbench.cli import main
from pullbench.experiment._analysis import analyze_results
from pullbench.experiment._report import (
    SMOKE_TEST_BLOCKS,
    _fmt_p,
    format_verdict_table,
    render_report,
)
from pullbench.experiment._results import RESULTS_SCHEMA_VERSION, ResultsStore
from pullbench.puller.strategies import get_strategy

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "results" / "debian-minbase-distribution"


def _rows(blocks: int, scales: dict[str, float], noise: float, seed: int = 0) -> list[dict]:
    """Rows of a blocked experiment: every arm once per block, multiplicative noise."""
    rng = np.random.default_rng(seed)
    rows = []
    i = 0
    for block in range(blocks):
        shared = 1 + noise * rng.standard_normal()  # per-block condition, removed by pairing
        for arm, scale in scales.items():
            duration = scale * shared * (1 + noise * rng.standard_normal())
            rows.append({
                "schema_version": RESULTS_SCHEMA_VERSION, "experiment": "t", "run_index": i,
                "run_id": f"r{i}", "block": block, "order_in_block": i % len(scales),
                "warmup": False, "arm": arm, "strategy": arm, "image": "img", "status": "ok",
                "error": None, "duration_s": duration, "total_bytes": 1_000_000,
                "throughput_mb_s": 1.0 / duration, "median_write_bytes": 32768,
                "probes": True, "params": {}, "cache_state": "warm",
                "network_profile": "loopback", "tls": False,
            })
            i += 1
    return rows


def _results_folder(path: Path, rows: list[dict]) -> Path:
    store = ResultsStore(path).create()
    for row in rows:
        store.append(row)
    store.write_json("spec.json", {"baseline": "base", "metrics": ["duration_s"],
                                   "margin": 0.02, "alpha": 0.05, "seed": 1})
    return path


# -- 1: p-values stored exactly, printed in scientific notation --------------------------------
def test_tiny_p_values_are_stored_exactly_and_printed_as_numbers(tmp_path):
    df = pd.DataFrame(_rows(30, {"base": 1.0, "half": 0.5}, noise=0.01))
    analysis = analyze_results(df, baseline="base", metrics=("duration_s",), n_resamples=200)
    ResultsStore(tmp_path).create().write_json("analysis.json", analysis.to_dict())
    stored = json.loads((tmp_path / "analysis.json").read_text())
    rec = stored["images"]["img"]["metrics"]["duration_s"]["table"][0]
    assert 0 < rec["p_holm"] < 1e-11  # was rounded to 0.0 by pandas to_json (10 digits)
    assert rec["p_holm"] == analysis.metric("img", "duration_s").table[0].p_holm
    text = format_verdict_table(stored, "img", "duration_s")
    shown = _fmt_p(rec["p_holm"])
    assert re.fullmatch(r"\d\.\de-\d+", shown)
    assert shown in text
    assert "<1e-16" not in text or rec["p_holm"] < 1e-16


def test_p_value_formatting():
    assert _fmt_p(2.0e-12) == "2.0e-12"
    assert _fmt_p(3.3e-17) == "3.3e-17"  # printed, not hidden behind "<1e-16"
    assert _fmt_p(0.0123) == "0.0123"
    assert _fmt_p(0.5) == "0.5"
    assert _fmt_p(None) == "-"
    assert _fmt_p(0.0) == "<1e-300"


def test_shipped_analysis_keeps_small_p_values():
    analysis = json.loads((SHIPPED / "analysis.json").read_text())
    for block in analysis["images"].values():
        for result in block["metrics"].values():
            for rec in result["table"]:
                for key in ("p", "p_holm", "p_bh", "p_adjusted"):
                    assert rec[key] > 0, (rec["arm"], key)


# -- 2: analyze leaves analysis.json byte-identical when only the timestamp would change --------
def test_analyze_twice_leaves_analysis_json_untouched(tmp_path):
    folder = _results_folder(tmp_path / "res", _rows(12, {"base": 1.0, "fast": 0.9}, 0.02))
    runner = CliRunner()
    first = runner.invoke(main, ["analyze", str(folder)])
    assert first.exit_code == 0, first.output
    assert "analysis unchanged" not in first.output
    before = (folder / "analysis.json").read_bytes()
    second = runner.invoke(main, ["analyze", str(folder)])
    assert second.exit_code == 0, second.output
    assert "analysis unchanged" in second.output
    assert (folder / "analysis.json").read_bytes() == before
    third = runner.invoke(main, ["analyze", str(folder), "--margin", "0.1"])
    assert third.exit_code == 0, third.output
    assert "analysis unchanged" not in third.output
    assert json.loads((folder / "analysis.json").read_text())["margin"] == 0.1


def test_shipped_analysis_is_current(tmp_path):
    """Re-analysing the shipped run changes nothing (the committed analysis.json is current)."""
    copy = shutil.copytree(SHIPPED, tmp_path / "shipped")
    result = CliRunner().invoke(main, ["analyze", str(copy)])
    assert result.exit_code == 0, result.output
    assert "analysis unchanged" in result.output
    assert (copy / "analysis.json").read_bytes() == (SHIPPED / "analysis.json").read_bytes()


# -- 3: the CLI verdict table explains itself ----------------------------------------------------
def test_verdict_table_legend_diagnostics_and_smoke_test_caution():
    scales = {"base": 1.0, "fast": 0.97, "slow": 1.3}
    df = pd.DataFrame(_rows(4, scales, noise=0.03, seed=3))
    analysis = analyze_results(df, baseline="base", metrics=("duration_s",), n_resamples=200)
    text = format_verdict_table(analysis, "img", "duration_s")
    lines = text.splitlines()
    assert any(line.startswith("ratio = geometric mean of per-block ratios candidate/baseline "
                               "(paired, 4 blocks)") for line in lines), text
    caution = [line for line in lines if line.startswith("caution:")]
    assert len(caution) == 1
    assert "smoke test" in caution[0]
    assert "4 blocks" in caution[0]
    needed = analysis.metric("img", "duration_s").runs_needed
    for arm, n in needed.items():
        if n is not None:
            assert f"{arm} {n}" in caution[0]
    diags = analysis.metric("img", "duration_s").diagnostics
    assert diags  # 4 runs per arm: too_few_runs at least
    start = next(i for i, line in enumerate(lines) if line.startswith("diagnostics (ranked"))
    body = [line for line in lines[start + 1:] if not line.startswith("  (+")]
    warned = {(d.arm or "(all arms)").split(" vs ")[0] for d in diags if d.severity != "info"}
    owners = [line.split(":")[0].strip() for line in body]
    assert sorted(owners) == sorted(warned)  # one line per arm
    assert all("only 4 runs" in line for line in body if not line.startswith("  (all"))

    big = pd.DataFrame(_rows(SMOKE_TEST_BLOCKS + 2, scales, noise=0.03, seed=3))
    analysis = analyze_results(big, baseline="base", metrics=("duration_s",), n_resamples=200)
    assert "caution:" not in format_verdict_table(analysis, "img", "duration_s")


# -- 4: the HTML report leads with the compact table --------------------------------------------
def test_report_leads_with_the_compact_table(tmp_path):
    folder = _results_folder(tmp_path / "res", _rows(12, {"base": 1.0, "fast": 0.9}, 0.02))
    html = render_report(folder).read_text()
    compact = html.index('<table class="verdicts compact">')
    details = html.index("<details>")
    full = html.index("<table", details)
    assert compact < details < full
    header = html[compact:html.index("</thead>", compact)]
    for column in ("arm", "n", "median", "mean ± sd", "min … max", "ratio [95% CI]", "p (Holm)",
                   "verdict", "write size", "MB/s"):
        assert f"<th>{column}</th>" in header
    assert header.count("<th>") == 10
    assert "ratio = geometric mean of per-block ratios" in html
    assert "tost_p_adjusted" in html[details:]  # the full table is still there


# -- 5: errors name what the user typed and how to fix it ---------------------------------------
def test_preset_parameter_errors_name_the_preset_and_the_accepted_sizes():
    with pytest.raises(StrategyError) as info:
        get_strategy("pr48602", write_size="64q")
    message = str(info.value)
    assert "'pr48602'" in message
    assert "tunable" not in message
    assert "64q" in message
    for form in ("64k", "64Ki", "1.5MiB"):
        assert form in message
    assert get_strategy("pr48602", write_size="64Ki").params["write_size"] == 64 * 1024
    assert get_strategy("pr48602", write_size="1Mi").params["write_size"] == 1 << 20
    with pytest.raises(StrategyError, match="strategy 'pr48602': write_size=0 must be a"):
        get_strategy("pr48602", write_size=0)
    with pytest.raises(StrategyError, match=r"strategy 'go-iocopy'.*64Ki"):
        get_strategy("go-iocopy", read_size=1.5)


def test_bench_validates_before_announcing(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--param", "pr48602.write_size=64q", "--no-progress",
                                  "--out", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "experiment " not in result.output  # nothing announced before the error
    assert "arm 'pr48602" in result.output
    assert "tunable" not in result.output
    assert "64Ki" in result.output
    result = runner.invoke(main, ["bench", "--network-profile", "bogus", "--no-progress",
                                  "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "experiment " not in result.output
    assert "choose one of loopback, " in result.output
    assert "[" not in result.output.split("choose one of", 1)[1]
    assert "pullbench net profiles" in result.output
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_bench_help_names_the_profiles_command():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "`pullbench net profiles`" in text
    assert "profile_names" not in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_registry_message_keeps_the_root_cause():
    port = _closed_port()
    runner = CliRunner()
    result = runner.invoke(main, ["pull", f"127.0.0.1:{port}/x/y:z", "--plain-http"])
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    assert "Connection refused" in message
    assert len(message) < 250, message
    result = runner.invoke(main, ["pull", f"127.0.0.1:{port}/x/y:z"])
    message = result.output.strip().splitlines()[-1]
    assert "Connection refused" in message
    assert "--plain-http" in message
    assert "plain_http=True" in message
