"""Probes: histogram arithmetic, kernel counters, and agreement with strace on the real writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from pullbench import get_strategy, pull
from pullbench.puller._probes import (
    IoCounters,
    Meter,
    NullMeter,
    ProbeSample,
    ThreadProbe,
    bucket_of,
    median_of_counts,
    power_of_two_histogram,
    read_io_counters,
)


def test_buckets_are_power_of_two_upper_bounds():
    assert bucket_of(0) == 0
    assert bucket_of(1) == 1
    assert bucket_of(2) == 2
    assert bucket_of(3) == 4
    assert bucket_of(32768) == 32768
    assert bucket_of(32769) == 65536
    assert power_of_two_histogram({100: 2, 128: 1, 129: 4, 1 << 20: 3}) == {
        128: 3,
        256: 4,
        1 << 20: 3,
    }


def test_median_of_counts():
    assert median_of_counts({}) == 0.0
    assert median_of_counts({5: 1}) == 5
    assert median_of_counts({1: 1, 3: 1}) == 2
    assert median_of_counts({1: 2, 100: 1}) == 1
    assert median_of_counts({10: 3, 20: 3}) == 15


def test_meter_counts_real_writes(tmp_path):
    meter = Meter()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        probe = ThreadProbe()
        meter.write(fd, b"x" * 5000)
        meter.write(fd, memoryview(b"y" * 10))
        sample = probe.stop()
    finally:
        os.close(fd)
    assert meter.writes == Counter({5000: 1, 10: 1})
    assert meter.write_count == 2
    assert (tmp_path / "f").stat().st_size == 5010
    if read_io_counters("thread-self").wchar:  # Linux task I/O accounting present
        assert sample.io.syscw == 2
        assert sample.io.wchar == 5010


def test_pull_probes_are_consistent(pushed_image, tmp_path):
    result = pull(pushed_image.reference, "go-iocopy", tmp_path / "go", plain_http=True)
    assert result.read_count == sum(result.read_size_hist.values())
    assert result.write_count == sum(result.write_size_hist.values())
    assert result.read_count == sum(layer.read_count for layer in result.layers)
    assert result.cpu_user_s + result.cpu_sys_s > 0
    assert result.peak_rss_bytes > 10 * 1024 * 1024
    # one 32 KiB copy buffer per concurrent download
    assert result.buffer_bytes == 3 * 32 * 1024
    assert result.duration_s >= result.transfer_s > 0
    assert result.resolve_s > 0
    assert 0 < result.ttfb_s < result.transfer_s
    if read_io_counters("thread-self").wchar:
        # every write(2) of the copy is in the kernel's count, plus manifest/index/oci-layout files
        assert result.syscw >= result.write_count
        assert result.syscw <= result.write_count + 3
        assert result.wchar >= result.total_bytes
        # splice moves bytes without write(2): the kernel sees almost no write calls
        spliced = pull(pushed_image.reference, "splice", tmp_path / "sp", plain_http=True)
        assert spliced.write_count > 0
        assert spliced.syscw <= len(spliced.layers) + 3
        assert spliced.syscw < result.syscw


_UNMEASURED = (
    "cpu_user_s",
    "cpu_sys_s",
    "syscr",
    "syscw",
    "rchar",
    "wchar",
    "read_size_hist",
    "write_size_hist",
    "read_count",
    "write_count",
    "median_write_bytes",
    "hash_s",
    "write_s",
)


@pytest.mark.parametrize(
    "strategy",
    ["go-iocopy", "containerd-1m:thread", "requests-iter-content:thread", "splice", "copyfileobj"],
)
def test_probes_off_measures_nothing_but_still_verifies(
    pushed_image, tmp_path, monkeypatch, strategy
):
    """probes=False: no CPU / /proc snapshots, no read/write counting; fields are None, not 0."""
    import pullbench.puller._pipeline as puller_mod
    import pullbench.puller._probes as probes_mod

    calls: Counter[str] = Counter()
    real_init, real_rusage = probes_mod.ThreadProbe.__init__, puller_mod.process_rusage
    real_io = probes_mod.read_io_counters

    def spy_init(self, *a, **k):
        calls["ThreadProbe"] += 1
        real_init(self, *a, **k)

    def spy_rusage():
        calls["process_rusage"] += 1
        return real_rusage()

    def spy_io(*a, **k):
        calls["read_io_counters"] += 1
        return real_io(*a, **k)

    monkeypatch.setattr(probes_mod.ThreadProbe, "__init__", spy_init)
    monkeypatch.setattr(puller_mod, "process_rusage", spy_rusage)
    monkeypatch.setattr(probes_mod, "read_io_counters", spy_io)
    name, _, hash_mode = strategy.partition(":")
    strat = get_strategy(name, **({"hash_mode": hash_mode} if hash_mode else {}))

    on = pull(pushed_image.reference, strat, tmp_path / "on", plain_http=True)
    assert calls["ThreadProbe"] > len(on.layers)
    assert calls["process_rusage"] == 2
    assert calls["read_io_counters"] > 0
    calls.clear()
    off = pull(pushed_image.reference, strat, tmp_path / "off", plain_http=True, probes=False)
    assert calls == Counter(), "probes=False still took CPU or /proc snapshots"

    for field_name in (*_UNMEASURED, "process_cpu_user_s", "process_cpu_sys_s", "peak_rss_bytes"):
        assert getattr(off, field_name) is None, field_name
        assert getattr(on, field_name) is not None, field_name
    for layer in off.layers:
        for field_name in _UNMEASURED:
            assert getattr(layer, field_name) is None, (layer.digest, field_name)
        assert layer.duration_s > 0
    row = off.to_row()
    assert row["write_size_hist"] is None
    assert row["cpu_user_s"] is None
    json.dumps(off.to_dict())
    # what is not a probe is unchanged: sizes, timers, declared buffers, verified content
    assert off.total_bytes == on.total_bytes > 0
    assert off.buffer_bytes == on.buffer_bytes
    assert off.duration_s >= off.transfer_s > 0
    assert off.throughput_mb_s > 0
    for layer in off.layers:
        data = (tmp_path / "off" / "blobs" / "sha256" / layer.digest[7:]).read_bytes()
        assert len(data) == layer.size_bytes
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest


@pytest.mark.parametrize("strategy", ["go-iocopy", "containerd-1m", "splice"])
def test_probes_off_still_rejects_corrupted_blobs(fresh_pushed_image, tmp_path, strategy):
    from pullbench import DigestMismatch, SizeMismatch
    from pullbench.servers import Misbehavior

    fresh_pushed_image.registry.misbehavior = Misbehavior(corrupt_blobs=True)
    with pytest.raises(DigestMismatch):
        pull(fresh_pushed_image.reference, strategy, tmp_path / "c", plain_http=True, probes=False)
    fresh_pushed_image.registry.misbehavior = Misbehavior(truncate_blobs_bytes=1000)
    with pytest.raises(SizeMismatch):
        pull(fresh_pushed_image.reference, strategy, tmp_path / "t", plain_http=True, probes=False)
    stored = tmp_path / "c" / "blobs" / "sha256"
    assert not any(p.name.startswith(".") for p in stored.iterdir())


def test_null_meter_counts_nothing_and_writes_everything(tmp_path):
    meter = NullMeter()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert meter.write(fd, b"x" * 5000) == 5000
        meter.read(5000)
        meter.hold(4096)
        meter.add_cpu(ProbeSample(1.0, 1.0, 1.0))
    finally:
        os.close(fd)
    assert (tmp_path / "f").stat().st_size == 5000
    assert not meter.active
    assert Meter.active
    assert meter.reads == Counter()
    assert meter.writes == Counter()
    assert meter.helper == ProbeSample()
    assert meter.buffer_bytes == 4096  # declared buffers are not a measurement


def test_concurrent_samples_add_cpu_but_not_wall_time():
    a = ProbeSample(2.0, 1.0, 0.5, IoCounters(1, 2, 3, 4))
    b = ProbeSample(1.5, 0.25, 0.25, IoCounters(10, 20, 30, 40))
    total = a + b
    assert total.wall_s == 2.0
    assert total.cpu_user_s == 1.25
    assert total.cpu_sys_s == 0.75
    assert total.io == IoCounters(11, 22, 33, 44)


def test_thread_hashing_does_not_add_wall_time_to_a_layer(pushed_image, tmp_path):
    """One download at a time: blob spans do not overlap, so their wall times sum to at most the
    transfer. Adding the hashing thread's wall time (about the copy's own) would double them."""
    for probes in (True, False):
        result = pull(
            pushed_image.reference,
            get_strategy("containerd-1m", hash_mode="thread"),
            tmp_path / f"s-{probes}",
            plain_http=True,
            concurrency=1,
            probes=probes,
        )
        assert len(result.layers) >= 2
        assert sum(layer.duration_s for layer in result.layers) <= result.transfer_s
        assert all(0 < layer.ttfb_s <= layer.duration_s for layer in result.layers)


def test_thread_hashing_cpu_is_counted(pushed_image, tmp_path):
    result = pull(
        pushed_image.reference,
        get_strategy("containerd-1m", hash_mode="thread"),
        tmp_path / "s",
        plain_http=True,
    )
    assert result.buffer_bytes == 3 * 3 * 1024 * 1024  # three 1 MiB slots per download
    assert result.cpu_user_s > 0


_WRITE_RE = re.compile(r"^(\d+)\s+write\((\d+)<([^>]*)>,")
_RESUMED_RE = re.compile(r"^(\d+)\s+<\.\.\. write resumed>")
_RET_RE = re.compile(r"=\s*(-?\d+)")


def _strace_writes(log: str, under: str, exclude: str) -> Counter[int]:
    """Sizes of write(2) calls on files under ``under`` from an ``strace -f -y`` log."""
    sizes: Counter[int] = Counter()
    pending: dict[str, str] = {}
    for line in log.splitlines():
        m = _WRITE_RE.match(line)
        if m:
            pid, _fd, path = m.groups()
            if "<unfinished ...>" in line:
                pending[pid] = path
                continue
        else:
            r = _RESUMED_RE.match(line)
            if not r or r.group(1) not in pending:
                continue
            path = pending.pop(r.group(1))
        if not path.startswith(under) or exclude in path:
            continue
        ret = _RET_RE.search(line.rsplit(")", 1)[-1])
        assert ret is not None, line
        if int(ret.group(1)) > 0:
            sizes[int(ret.group(1))] += 1
    return sizes


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["go-iocopy", "pr48602"])
def test_write_histogram_agrees_with_strace(pushed_image, tmp_path, strategy):
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI")
        pytest.skip("strace not installed")
    dest = tmp_path / "store"
    log = tmp_path / "strace.log"
    cmd = [
        strace,
        "-f",
        "-y",
        "-s",
        "0",
        "-e",
        "trace=write",
        "-o",
        str(log),
        sys.executable,
        "-c",
        "from pullbench.cli import main; main()",
        "pull",
        pushed_image.reference,
        "--strategy",
        strategy,
        "--plain-http",
        "--json",
        "--dest",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    blobs_dir = str(dest / "blobs" / "sha256") + "/"
    seen = _strace_writes(log.read_text(), blobs_dir, exclude=result["manifest_digest"][7:])
    assert sum(seen.values()) == result["write_count"]
    assert power_of_two_histogram(seen) == {int(k): v for k, v in result["write_size_hist"].items()}
    assert sum(size * n for size, n in seen.items()) == result["total_bytes"]


# --- the hash and write stages inside the transfer --------------------------------------------
_STAGE_STRATEGIES = ["go-iocopy", "pr48602", "containerd-1m", "containerd-1m:on-read",
                     "go-iocopy:thread", "go-iocopy:after", "requests-iter-content",
                     "requests-iter-content:thread", "copyfileobj", "splice"]


def _strategy(spec: str):
    name, _, hash_mode = spec.partition(":")
    if hash_mode == "on-read":
        return get_strategy("tunable", read_size=64 * 1024, write_mode="fill",
                            write_size=1 << 20, hash_mode="on-read")
    return get_strategy(name, **({"hash_mode": hash_mode} if hash_mode else {}))


@pytest.mark.parametrize("strategy", _STAGE_STRATEGIES)
def test_hash_and_write_stages_are_timed_inside_each_blob(pushed_image, tmp_path, strategy):
    result = pull(pushed_image.reference, _strategy(strategy), tmp_path / "s", plain_http=True,
                  concurrency=1)
    for layer in result.layers:
        assert layer.hash_s > 0, layer
        assert layer.write_s > 0 or layer.size_bytes == 0, layer
        if not strategy.endswith(":thread"):  # the copy thread did both, one after the other
            assert layer.hash_s + layer.write_s < layer.duration_s, layer
    assert result.hash_s == pytest.approx(sum(layer.hash_s for layer in result.layers))
    assert result.write_s == pytest.approx(sum(layer.write_s for layer in result.layers))
    assert result.hash_s + result.write_s < result.transfer_s  # one blob at a time
    row = result.to_row()
    assert row["hash_s"] == result.hash_s
    assert row["write_s"] == result.write_s


def test_a_strategy_that_does_not_time_its_stages_reports_them_unknown(pushed_image, tmp_path):
    from pullbench import CopyStrategy

    class Untimed(CopyStrategy):
        name = "untimed-test"

        def transfer(self, response, fd, meter, *, limit, hasher):
            for chunk in response.iter_content(65536):
                meter.read(len(chunk))
                hasher.update(chunk)  # not reported with meter.hashed
                n = os.write(fd, chunk)
                meter.wrote(n)  # no time given
            return hasher

    result = pull(pushed_image.reference, Untimed(), tmp_path / "u", plain_http=True)
    assert result.hash_s is None
    assert result.write_s is None
    assert all(layer.hash_s is None and layer.write_s is None for layer in result.layers)
    assert result.write_count > 0  # the rest is still measured


def _timed_image(registry, tmp_path):
    """Two uncompressed layers of random bytes, 1 MiB and 16 MiB (the config is tiny)."""
    from test_unpack import TAR, E, make_tar, write_layout

    from pullbench import ImageLayout, push_image

    rng = __import__("numpy").random.default_rng(7)
    small = make_tar(E("small", "f", rng.bytes(1 << 20)))
    big = make_tar(E("big", "f", rng.bytes(16 << 20)))
    layout = write_layout(tmp_path / "layout", [(TAR, small), (TAR, big)])
    ref = f"{registry.host}/stages/timed:1"
    push_image(ImageLayout(layout), ref)
    return ref


@pytest.mark.slow
def test_the_stage_times_follow_the_mechanism_side_by_side(embedded_registry, tmp_path):
    """Relative, in one run: hashing 16 MiB takes longer than hashing 1 MiB, and writing the
    same bytes in 4 KiB writes takes longer than in 1 MiB writes (the per-call cost, context
    §4). Minimum of three pulls each, against noise."""
    ref = _timed_image(embedded_registry, tmp_path)
    # the pulls write to tmpfs: while another program's dirty pages are written back, the kernel
    # throttles writers (balance_dirty_pages) and 1 MiB writes came out slower than 4 KiB ones,
    # which is page-cache writeback, not the per-call cost this test is about
    shm = Path("/dev/shm")
    dest = (Path(tempfile.mkdtemp(prefix="pullbench-stages-", dir=shm))
            if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path)
    try:
        _stage_times_follow_the_mechanism(ref, dest)
    finally:
        if dest != tmp_path:
            shutil.rmtree(dest, ignore_errors=True)


def _stage_times_follow_the_mechanism(ref, tmp_path):
    small4k = get_strategy("tunable", read_size=4096, write_mode="per-read")
    fill1m = get_strategy("containerd-1m")
    hash_small, hash_big, write_4k, write_1m = [], [], [], []
    for i in range(3):
        for strat, writes in ((small4k, write_4k), (fill1m, write_1m)):
            r = pull(ref, strat, tmp_path / f"p{i}-{strat.name}", plain_http=True, concurrency=1)
            layers = sorted(r.layers[1:], key=lambda layer: layer.size_bytes)
            assert [layer.size_bytes > 4 << 20 for layer in layers] == [False, True]
            writes.append(sum(layer.write_s for layer in layers))
            if strat is fill1m:
                hash_small.append(layers[0].hash_s)
                hash_big.append(layers[1].hash_s)
    assert min(hash_big) > 4 * min(hash_small), (hash_big, hash_small)  # 16x the bytes
    # and it is the time hashing takes: sha256 of the same 16 MiB blob, here, now
    import time

    blob = max((p for p in (tmp_path / "p0-containerd-1m" / "blobs" / "sha256").iterdir()),
               key=lambda p: p.stat().st_size).read_bytes()
    direct = []
    for _ in range(3):
        t0 = time.perf_counter()
        hashlib.sha256(blob).hexdigest()
        direct.append(time.perf_counter() - t0)
    assert 0.25 < min(hash_big) / min(direct) < 4, (hash_big, direct)
    assert min(write_4k) > 2 * min(write_1m), (write_4k, write_1m)  # 256x the calls
