"""ExperimentSpec loading/validation and the randomized complete block design."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pullbench._errors import BenchmarkError, ParameterWarning
from pullbench.experiment._spec import (
    DEFAULT_ARMS,
    ArmSpec,
    ExperimentSpec,
    design,
    load_spec,
    parse_param_value,
)


def test_defaults_are_the_main_job():
    spec = ExperimentSpec()
    assert spec.arm_names == DEFAULT_ARMS
    assert spec.baseline == "go-iocopy"
    assert spec.registry == "embedded"
    assert spec.network_profile == "loopback"
    assert spec.tls is False
    assert spec.isolation == "process"
    assert "duration_s" in spec.metrics
    assert "cpu_ns_per_byte" in spec.metrics


def test_roundtrip_through_dict_yaml_toml_json(tmp_path):
    spec = ExperimentSpec(
        name="grid", images=("synthetic-small",),
        arms=("go-iocopy", {"strategy": "copyfileobj", "grid": {"chunk_bytes": ["8k", 65536]}},
              {"strategy": "containerd-1m", "params": {"buffer_bytes": "256KiB"},
               "name": "cd-256k"}),
        blocks=3, warmup_blocks=0, seed=7, margin=0.05,
    )
    assert spec.arm_names == ("go-iocopy", "copyfileobj[chunk_bytes=8192]",
                              "copyfileobj[chunk_bytes=65536]", "cd-256k")
    assert spec.arm("cd-256k").params_dict == {"buffer_bytes": 262144}
    assert ExperimentSpec.from_mapping(spec.to_dict()) == spec

    import yaml
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    (tmp_path / "s.json").write_text(json.dumps(spec.to_dict()))
    (tmp_path / "s.toml").write_text(
        'name = "grid"\nimages = ["synthetic-small"]\nblocks = 3\nwarmup_blocks = 0\nseed = 7\n'
        'margin = 0.05\narms = ["go-iocopy", "copyfileobj:chunk_bytes=8k", '
        '"copyfileobj:chunk_bytes=65536", '
        '{strategy = "containerd-1m", params = {buffer_bytes = 262144}, name = "cd-256k"}]\n'
    )
    for name in ("s.yaml", "s.json", "s.toml"):
        assert load_spec(tmp_path / name) == spec, name


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"blocks": 0}, "blocks must be >= 1"),
        ({"bogus": 1}, "unknown spec keys \\['bogus'\\]"),
        ({"registry": "ftp://x"}, "registry 'ftp://x'"),
        ({"arms": ["a", "a"]}, "repeated: \\['a'\\]"),
        ({"arms": ["a"], "baseline": "b"}, "baseline 'b' is not an arm"),
        ({"cache_policy": "hot"}, "cache_policy 'hot'"),
        ({"isolation": "thread"}, "isolation 'thread'"),
        ({"margin": 2}, "margin"),
        ({"arms": [{"strategy": "x", "grid": {"n": []}}]}, "non-empty list"),
        ({"arms": [{"params": {}}]}, "has no 'strategy'"),
        ({"arms": ["x:novalue"]}, "expected 'strategy:param=value"),
    ],
)
def test_invalid_specs_name_the_problem(data, match):
    with pytest.raises(BenchmarkError, match=match):
        ExperimentSpec.from_mapping(data)


def test_load_spec_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms: [unclosed\n")
    with pytest.raises(BenchmarkError, match="could not be parsed"):
        load_spec(bad)
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(BenchmarkError, match=r"use \.yaml"):
        load_spec(tmp_path / "x.ini")


def test_param_values_and_overrides():
    assert parse_param_value("32k") == 32768
    assert parse_param_value("1MiB") == 1 << 20
    assert parse_param_value("true") is True
    assert parse_param_value("4096") == 4096
    spec = ExperimentSpec(arms=("go-iocopy", "pr48602"))
    changed = spec.with_params([("pr48602", "write_size", "64k")])
    assert changed.arm_names == ("go-iocopy", "pr48602[write_size=65536]")
    with pytest.warns(ParameterWarning, match="went to every arm with write_size"):
        changed = spec.with_params([(None, "write_size", "64k")])
    assert changed.baseline == "go-iocopy[write_size=65536]"
    with pytest.raises(BenchmarkError, match="unknown arms"):
        spec.with_params([("nope", "x", 1)])


def test_design_is_a_randomized_complete_block_design():
    spec = ExperimentSpec(arms=("a", "b", "c", "d"), images=("i1", "i2"), blocks=30,
                          warmup_blocks=2, seed=11)
    plan = design(spec)
    assert len(plan) == spec.total_runs == 32 * 8
    assert [p.run_index for p in plan] == list(range(len(plan)))
    assert len({p.run_id for p in plan}) == len(plan)
    blocks = sorted({p.block for p in plan})
    assert blocks == list(range(-2, 30))
    for b in blocks:
        cells = [(p.image, p.arm) for p in plan if p.block == b]
        assert sorted(cells) == sorted((i, a) for i in ("i1", "i2") for a in "abcd")
        assert [p.order_in_block for p in plan if p.block == b] == list(range(8))
        assert all(p.warmup == (b < 0) for p in plan if p.block == b)
    # the same seed gives the same plan; another seed another plan
    assert design(spec) == plan
    assert design(ExperimentSpec.from_mapping({**spec.to_dict(), "seed": 12})) != plan
    # every arm appears first in some block: the order really is shuffled per block
    firsts = Counter(p.arm for p in plan if p.order_in_block == 0)
    assert set(firsts) == set("abcd")


def test_armspec_names():
    assert ArmSpec.make("x", {"b": 2, "a": 1}).name == "x[a=1,b=2]"
    with pytest.raises(BenchmarkError, match="not usable"):
        ArmSpec.make("x", name="has space")
