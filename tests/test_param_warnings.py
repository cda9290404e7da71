"""Parameters that cannot take effect are warned about; an arm-less --param says where it went."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from pullbench import BenchmarkError, ExperimentSpec, ParameterWarning, get_strategy
from pullbench.cli import main
from pullbench.experiment._runner import preflight


def test_strategies_name_their_idle_parameters():
    # Go's bufio.Writer: a read longer than the buffer bypasses it (golang/go:src/bufio/bufio.go)
    idle = get_strategy("pr48602", write_size=64 << 10).ineffective_params()
    assert set(idle) == {"write_size"}
    assert "64k < read_size 512k" in idle["write_size"]
    assert "read_size=64k" in idle["write_size"]  # says how to make it count
    assert get_strategy("pr48602").ineffective_params() == {}
    assert get_strategy("pr48602", read_size=64 << 10,
                        write_size=64 << 10).ineffective_params() == {}
    assert get_strategy("containerd-1m").ineffective_params() == {}
    assert set(get_strategy("containerd-1m", write_size=64 << 10).ineffective_params()) \
        == {"read_size"}
    assert set(get_strategy("go-iocopy").ineffective_params()) == {"write_size"}  # per-read
    assert set(get_strategy("tunable", hash_mode="on-read").ineffective_params()) \
        == {"write_size", "hash_mode"}
    assert get_strategy("tunable", write_mode="fill", hash_mode="on-read",
                        read_size=32 << 10, write_size=1 << 20).ineffective_params() == {}
    assert set(get_strategy("requests-iter-content", hash_mode="on-read").ineffective_params()) \
        == {"hash_mode"}


def _preflight_warnings(spec: ExperimentSpec) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preflight(spec)
    return [str(w.message) for w in caught if issubclass(w.category, ParameterWarning)]


def test_preflight_warns_only_about_what_the_user_made_idle():
    assert _preflight_warnings(ExperimentSpec()) == []  # go-iocopy's idle write_size is the preset
    spec = ExperimentSpec(arms=("go-iocopy", "pr48602")).with_params([("pr48602", "write_size",
                                                                       "64k")])
    (message,) = _preflight_warnings(spec)
    assert message.startswith("arm pr48602[write_size=65536]: write_size=65536 cannot take "
                              "effect: write_size 64k < read_size 512k with write_mode=bufio")
    # an override that idles a preset parameter counts too (write_size worked in pr48602)
    spec = ExperimentSpec(arms=("pr48602",)).with_params([("pr48602", "write_mode", "per-read")])
    (message,) = _preflight_warnings(spec)
    assert "write_size=524288 cannot take effect: write_mode=per-read" in message


def test_an_armless_param_says_which_arms_it_went_to():
    spec = ExperimentSpec(arms=("go-iocopy", "requests-iter-content", "pr48602"))
    with pytest.warns(ParameterWarning) as record:
        new = spec.with_params([(None, "write_size", "64k")])
    (message,) = [str(w.message) for w in record]
    assert ("--param write_size=64k names no arm, so it went to every arm with write_size: "
            "go-iocopy (now go-iocopy[write_size=65536], the baseline), pr48602 (now "
            "pr48602[write_size=65536]); not to requests-iter-content (no parameter write_size)"
            ) in message
    assert "prefix it: --param pr48602.write_size=64k" in message
    assert new.baseline == "go-iocopy[write_size=65536]"
    assert [a.name for a in new.arms] == ["go-iocopy[write_size=65536]", "requests-iter-content",
                                          "pr48602[write_size=65536]"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.with_params([("pr48602", "write_size", "64k")])  # named: no warning
    with pytest.raises(BenchmarkError, match=r"no arm's strategy has a parameter 'chunk_sise'"):
        spec.with_params([(None, "chunk_sise", "64k")])


def test_bench_prints_each_warning_once_and_runs(tmp_path):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, [
        "bench", "--image", "synthetic-small", "--arms", "go-iocopy,pr48602", "--no-progress",
        "--blocks", "2", "--warmup-blocks", "0", "--in-process", "--no-report",
        "--param", "pr48602.write_size=64k", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(lines) == 1, result.stderr  # preflight runs twice (CLI, runner): shown once
    assert lines[0].startswith("warning: arm pr48602[write_size=65536]: write_size=65536 cannot "
                               "take effect")
    spec = json.loads((out / "spec.json").read_text())
    assert [a["name"] for a in spec["arms"]] == ["go-iocopy", "pr48602[write_size=65536]"]
