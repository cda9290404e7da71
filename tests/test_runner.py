"""run_experiment against real servers: the embedded registry, the real puller, worker processes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os

import pytest

from pullbench._errors import (
    BenchmarkError,
    ImageNotFound,
    RegistryUnavailable,
    StrategyError,
)
from pullbench.experiment._endpoints import (
    Endpoint,
    default_registry_factory,
    register_network_profile,
)
from pullbench.experiment._results import load_results
from pullbench.experiment._runner import (
    _check_disk,
    drop_page_cache,
    run_experiment,
)
from pullbench.experiment._spec import ExperimentSpec, design

SMALL = {"images": ("synthetic-small",), "arms": ("go-iocopy", "containerd-1m"), "blocks": 2,
         "warmup_blocks": 1, "seed": 5}


def test_inprocess_experiment_writes_rows_with_provenance(tmp_path):
    spec = ExperimentSpec(name="t-inproc", isolation="inprocess", **SMALL)
    result = run_experiment(spec, tmp_path / "res", progress=False)
    assert (result.planned_runs, result.completed_runs, result.ok_runs) == (6, 6, 6)
    assert not result.interrupted
    assert result.complete
    for name in ("rows.jsonl", "rows.parquet", "rows.csv", "environment.json", "spec.json"):
        assert (tmp_path / "res" / name).is_file(), name
    df = load_results(tmp_path / "res", include_warmup=True)
    plan = design(spec)
    assert list(df["run_id"]) == [p.run_id for p in plan]  # the plan's order, every run once
    assert list(df["warmup"]) == [True, True, False, False, False, False]
    assert set(df["status"]) == {"ok"}
    assert set(df["cache_state"]) == {"warm"}
    assert set(df["network_profile"]) == {"loopback"}
    assert not df["tls"].any()
    assert (df["bytes"] == df["total_bytes"]).all()
    assert (df["bytes"] > 3_000_000).all()
    assert (df["cpu_ns_per_byte"] > 0).all()
    # time measured around the pull call only, never less than the puller's own timer
    assert (df["pull_wall_s"] >= df["duration_s"]).all()
    cd = df[df["arm"] == "containerd-1m"].iloc[0]
    assert isinstance(cd["write_size_hist"], dict)
    assert cd["effective_params"]
    assert cd["median_write_bytes"] > df[df["arm"] == "go-iocopy"]["median_write_bytes"].max()
    # the store is emptied between runs and removed at the end
    assert not (tmp_path / "res" / "store").exists()
    env = json.loads((tmp_path / "res" / "environment.json").read_text())
    assert env["registry"]["kind"] == "embedded"
    assert env["network_profile"] == "loopback"
    assert env["images"][0]["name"] == "synthetic-small"
    assert env["images"][0]["digest"].startswith("sha256:")
    assert env["spec"]["seed"] == 5
    assert env["seed"] == 5
    assert env["destination"]["fstype"]


def test_worker_processes_isolate_runs(tmp_path):
    spec = ExperimentSpec(name="t-proc", **{**SMALL, "warmup_blocks": 0})
    run_experiment(spec, tmp_path / "res", progress=False)
    df = load_results(tmp_path / "res")
    assert len(df) == 4
    assert set(df["status"]) == {"ok"}
    pids = list(df["worker_pid"])
    assert len(set(pids)) == 4
    assert os.getpid() not in pids
    assert (df["harness_wall_s"] >= df["pull_wall_s"]).all()


def test_failed_runs_are_recorded_not_fatal(tmp_path):
    from pullbench.servers import EmbeddedRegistry, Misbehavior

    @contextlib.contextmanager
    def corrupting_registry(spec, work_dir):
        with EmbeddedRegistry(work_dir / "r", misbehavior=Misbehavior(corrupt_blobs=True)) as reg:
            yield Endpoint(host=reg.host, url=reg.url, kind=reg.kind, version=reg.version)

    spec = ExperimentSpec(name="t-fail", isolation="inprocess", **{**SMALL, "warmup_blocks": 0})
    result = run_experiment(spec, tmp_path / "res", progress=False,
                            registry_factory=corrupting_registry)
    assert (result.completed_runs, result.error_runs) == (4, 4)
    df = load_results(tmp_path / "res")
    assert set(df["status"]) == {"error"}
    assert df["error"].str.contains("DigestMismatch").all()


def test_preflight_errors_come_before_any_run(tmp_path):
    def spec(**kw):
        return ExperimentSpec(**{**SMALL, **kw})

    with pytest.raises(StrategyError, match=r"unknown strategy 'nope'.*go-iocopy"):
        run_experiment(spec(arms=("go-iocopy", "nope")), tmp_path / "a", progress=False)
    with pytest.raises(StrategyError, match="containerd-1m"):
        run_experiment(spec(arms=("go-iocopy", "containerd-1m:no_such_param=1")), tmp_path / "b",
                       progress=False)
    with pytest.raises(ImageNotFound, match=r"unknown image.*synthetic-small"):
        run_experiment(spec(images=("no-such-image",)), tmp_path / "c", progress=False)
    with pytest.raises(RegistryUnavailable, match="not reachable"):
        run_experiment(spec(registry="http://127.0.0.1:9"), tmp_path / "d", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchmarkError, match="not writable"):
        run_experiment(spec(dest_dir=str(blocker / "x")), tmp_path / "e", progress=False)
    with pytest.raises(BenchmarkError, match="unknown network profile 'moon'"):
        run_experiment(spec(network_profile="moon"), tmp_path / "f", progress=False)
    with pytest.raises(BenchmarkError, match="tls=True"):  # a plain-HTTP registry and tls=True
        run_experiment(spec(tls=True), tmp_path / "g", progress=False,
                       registry_factory=default_registry_factory)
    for name in "abcdefg":  # nothing was run, nothing is left behind
        assert not (tmp_path / name).exists(), name
    with pytest.raises(BenchmarkError, match="too little disk"):
        _check_disk(tmp_path, [2**62], None, exact=True)


def test_network_profile_layer_seam(tmp_path):
    seen = []

    @contextlib.contextmanager
    def relabel(spec, endpoint):
        seen.append(endpoint.kind)
        yield Endpoint(**{**{f: getattr(endpoint, f) for f in endpoint.__slots__},
                          "network_profile": "test-relabel", "details": {"layer": "relabel"}})

    register_network_profile("test-relabel", relabel)
    spec = ExperimentSpec(network_profile="test-relabel", isolation="inprocess",
                          **{**SMALL, "blocks": 1, "warmup_blocks": 0})
    run_experiment(spec, tmp_path / "res", progress=False)
    assert seen == ["embedded"]
    df = load_results(tmp_path / "res")
    assert set(df["network_profile"]) == {"test-relabel"}
    env = json.loads((tmp_path / "res" / "environment.json").read_text())
    assert env["registry"]["details"] == {"layer": "relabel"}


def _resident_fraction(path) -> float:
    """Fraction of ``path``'s pages in the page cache: mmap (no read) + mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec) / pages


#: (sentinel file, residency seen at the start of each pull) for _pull_after_a_cache_check
_SENTINEL: dict = {"path": None, "seen": []}


def _pull_after_a_cache_check(*args, **kwargs):
    """The pull function of the cold-cache experiment: note how much of the sentinel file is
    still cached (the runner must have dropped it), cache it again, then pull."""
    from pullbench import pull

    path = _SENTINEL["path"]
    _SENTINEL["seen"].append(_resident_fraction(path))
    path.read_bytes()
    return pull(*args, **kwargs)


def _sentinel(tmp_path):
    path = tmp_path / "sentinel.bin"
    path.write_bytes(os.urandom(4 << 20))
    os.sync()  # clean pages: drop_caches frees them
    path.read_bytes()
    assert _resident_fraction(path) > 0.9  # reading it cached it
    return path


def test_drop_page_cache_drops_the_page_cache(tmp_path):
    if os.geteuid() != 0:
        with pytest.raises(BenchmarkError, match="needs root"):
            drop_page_cache()
        return
    path = _sentinel(tmp_path)
    drop_page_cache()
    assert _resident_fraction(path) < 0.1


@pytest.mark.root
def test_cold_cache_runs_start_with_the_page_cache_dropped(tmp_path):
    """Before every run the page cache is really dropped, not only labelled cold."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; dropping the page cache needs root")
        pytest.skip("dropping the page cache needs root")
    _SENTINEL["path"] = _sentinel(tmp_path)
    _SENTINEL["seen"] = []
    spec = ExperimentSpec(cache_policy="drop", isolation="inprocess",
                          **{**SMALL, "blocks": 1, "warmup_blocks": 1})
    run_experiment(spec, tmp_path / "res", progress=False,
                   pull_function=f"{__name__}:_pull_after_a_cache_check")
    rows = load_results(tmp_path / "res", include_warmup=True)
    assert set(rows["status"]) == {"ok"}
    assert set(rows["cache_state"]) == {"cold"}
    assert len(_SENTINEL["seen"]) == len(rows) == 4
    assert max(_SENTINEL["seen"]) < 0.1, _SENTINEL["seen"]  # dropped before each of the 4 runs


def test_existing_results_are_not_overwritten(tmp_path):
    spec = ExperimentSpec(isolation="inprocess", **{**SMALL, "blocks": 1, "warmup_blocks": 0})
    run_experiment(spec, tmp_path / "res", progress=False)
    with pytest.raises(BenchmarkError, match="already holds results; use --resume"):
        run_experiment(spec, tmp_path / "res", progress=False)
    other = ExperimentSpec(isolation="inprocess", **{**SMALL, "blocks": 3})
    with pytest.raises(BenchmarkError, match="different spec"):
        run_experiment(other, tmp_path / "res", resume=True, progress=False)
    # resuming a finished experiment runs nothing and repeats nothing
    result = run_experiment(None, tmp_path / "res", resume=True, progress=False)
    assert result.resumed_runs == result.planned_runs == result.completed_runs == 2


def test_tls_experiment_uses_the_native_tls_registry(tmp_path):
    spec = ExperimentSpec(tls=True, isolation="inprocess",
                          **{**SMALL, "blocks": 1, "warmup_blocks": 0})
    run_experiment(spec, tmp_path / "res", progress=False)
    df = load_results(tmp_path / "res")
    assert set(df["status"]) == {"ok"}
    assert df["tls"].all()
    # a TLS read returns at most one record (16 KiB), so io.Copy-style writes are <= 16 KiB
    hist = df[df["arm"] == "go-iocopy"].iloc[0]["write_size_hist"]
    assert max(int(k) for k in hist) <= 16384
    env = json.loads((tmp_path / "res" / "environment.json").read_text())
    assert env["registry"]["tls"] is True
    assert env["registry"]["ca_bundle"]
