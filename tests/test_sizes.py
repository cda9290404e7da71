"""One size grammar for `pull --param`, `bench --param` and spec files, with one error text."""

import pytest

from pullbench import BenchmarkError, StrategyError
from pullbench._sizes import SIZE_FORMATS, looks_like_size, parse_size
from pullbench.experiment._spec import parse_param_value
from pullbench.puller.strategies import parse_strategy_param

CASES = {
    "65536": 65536, "0x8000": 32768, "64k": 65536, "64K": 65536, "64Ki": 65536,
    "64KiB": 65536, "64kb": 65536, "64KB": 65536, "1m": 1 << 20, "1MiB": 1 << 20,
    "1.5m": 3 << 19, "1.5MiB": 3 << 19, "1g": 1 << 30, "2GiB": 2 << 30, " 32k ": 32768,
}


@pytest.mark.parametrize(("text", "expected"), sorted(CASES.items()))
def test_every_entry_point_reads_a_size_the_same_way(text, expected):
    assert parse_size(text) == expected
    assert parse_strategy_param("go-iocopy", "read_size", text) == expected  # pull --param
    assert parse_param_value(text) == expected  # bench --param, spec files


@pytest.mark.parametrize("text", ["lots", "0.3k", "1.2.3m", "k", "-"])
def test_bad_sizes_have_the_same_error_text_everywhere(text):
    with pytest.raises(ValueError, match="accepted: ") as core:
        parse_size(text)
    with pytest.raises(StrategyError) as pulled:
        parse_strategy_param("go-iocopy", "read_size", text)
    assert str(core.value) in str(pulled.value)
    assert SIZE_FORMATS in str(pulled.value)
    if looks_like_size(text):  # the spec parser keeps other words as strings (hash_mode=thread)
        with pytest.raises(BenchmarkError) as benched:
            parse_param_value(text)
        assert str(core.value) in str(benched.value)


def test_words_stay_words_in_specs():
    assert parse_param_value("thread") == "thread"
    assert parse_param_value("true") is True
