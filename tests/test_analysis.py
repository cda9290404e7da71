"""One analysis of a results folder (analyze_folder) and its typed result (Analysis)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pullbench
from pullbench import Analysis, MetricAnalysis, ResultSchemaError, VerdictRow
from pullbench.cli import main
from pullbench.experiment._results import RESULTS_SCHEMA_VERSION, ResultsStore

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "results"


def _folder(path: Path, spec: dict, blocks: int = 6) -> Path:
    """A results folder of a blocked experiment with wall and CPU times (two arms)."""
    rng = np.random.default_rng(7)
    store = ResultsStore(path).create()
    i = 0
    for block in range(blocks):
        for arm, scale in (("base", 1.0), ("fast", 0.8)):
            duration = scale * (1 + 0.02 * rng.standard_normal())
            store.append({
                "schema_version": RESULTS_SCHEMA_VERSION, "experiment": "t", "run_index": i,
                "run_id": f"r{i}", "block": block, "order_in_block": i % 2, "warmup": False,
                "arm": arm, "strategy": arm, "image": "img", "status": "ok", "error": None,
                "duration_s": duration, "cpu_ns_per_byte": 2 * duration, "total_bytes": 10**6,
                "throughput_mb_s": 1 / duration, "probes": True, "params": {},
                "cache_state": "warm", "network_profile": "loopback", "tls": False,
            })
            i += 1
    store.write_json("spec.json", spec)
    return path


def test_cli_and_report_analyse_a_folder_the_same_way(tmp_path):
    """The spec's defaults (both metrics) whoever analyses; the report used to do duration only."""
    spec = {"baseline": "base", "seed": 3}  # no metrics, margin or alpha: ExperimentSpec's
    by_cli = _folder(tmp_path / "cli", spec)
    by_report = shutil.copytree(by_cli, tmp_path / "report")
    assert CliRunner().invoke(main, ["analyze", str(by_cli)]).exit_code == 0
    pullbench.render_report(by_report)  # no analysis.json yet: the report makes it
    cli, report = (pullbench.load_analysis(d) for d in (by_cli, by_report))
    assert set(cli.image("img").metrics) == {"duration_s", "cpu_ns_per_byte"}
    assert (cli.margin, cli.alpha, cli.seed) == (0.02, 0.05, 3)
    strip = [{k: v for k, v in a.to_dict().items() if k != "analyzed_at"} for a in (cli, report)]
    assert strip[0] == strip[1]
    in_memory = pullbench.analyze_folder(by_cli, save=False)
    assert in_memory.metric("img", "cpu_ns_per_byte").table == \
        cli.metric("img", "cpu_ns_per_byte").table


def test_analysis_is_typed_and_round_trips(tmp_path):
    folder = _folder(tmp_path / "res", {"baseline": "base", "metrics": ["duration_s"]})
    analysis = pullbench.analyze_folder(folder)
    assert isinstance(analysis, Analysis)
    result = analysis.metric("img", "duration_s")
    assert isinstance(result, MetricAnalysis)
    (row,) = result.table
    assert isinstance(row, VerdictRow)
    assert (row.arm, row.baseline, row.verdict) == ("fast", "base", "faster")
    assert row.ratio == pytest.approx(0.8, rel=0.03)
    assert [a.arm for a in analysis.image().arms] == ["base", "fast"]
    with pytest.raises(AttributeError):
        analysis.baseline = "x"  # frozen
    stored = json.loads((folder / "analysis.json").read_text())
    assert stored == json.loads(json.dumps(analysis.to_dict()))
    assert Analysis.from_dict(stored) == pullbench.load_analysis(folder)
    assert Analysis.from_dict(stored).to_dict() == stored
    with pytest.raises(ResultSchemaError, match=r"not analysed.*analysed: \['duration_s'\]"):
        analysis.metric("img", "cpu_s")
    with pytest.raises(ResultSchemaError, match="no image 'nope'"):
        analysis.image("nope")


@pytest.mark.parametrize("name", ["debian-minbase-distribution", "synthetic-64m-wan-200m-tls"])
def test_shipped_analysis_files_read_back_unchanged(name):
    """analysis.json written before the typed result is read, and written back, key for key."""
    stored = json.loads((SHIPPED / name / "analysis.json").read_text())
    analysis = pullbench.load_analysis(SHIPPED / name)
    assert analysis.schema_version == pullbench.ANALYSIS_SCHEMA_VERSION
    assert json.loads(json.dumps(analysis.to_dict())) == stored
    text = pullbench.format_verdict_table(analysis, None, "duration_s")
    assert text == pullbench.format_verdict_table(stored, None, "duration_s")


def test_unreadable_analysis_names_the_fix(tmp_path):
    folder = _folder(tmp_path / "res", {"baseline": "base", "metrics": ["duration_s"]})
    good = pullbench.analyze_folder(folder).to_dict()
    broken = {**good, "images": {"img": {"metrics": {"duration_s": {"table": [{"arm": "x"}]}}}}}
    (folder / "analysis.json").write_text(json.dumps(broken))
    with pytest.raises(ResultSchemaError, match=r"missing key .*pullbench analyze DIR"):
        pullbench.load_analysis(folder)
    (folder / "analysis.json").write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(ResultSchemaError, match=r"newer.*pullbench analyze DIR"):
        pullbench.load_analysis(folder)
    (folder / "analysis.json").write_text("{not json")
    with pytest.raises(ResultSchemaError, match=r"not valid JSON.*pullbench analyze DIR"):
        pullbench.load_analysis(folder)
    with pytest.raises(ResultSchemaError, match="pullbench analyze DIR"):
        pullbench.load_analysis(tmp_path)  # no analysis.json at all
    # `pullbench analyze` repairs it
    result = CliRunner().invoke(main, ["analyze", str(folder)])
    assert result.exit_code == 0, result.output
    assert pullbench.load_analysis(folder).metric("img", "duration_s").table
