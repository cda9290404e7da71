"""The shaping proxy: profiles, integrity, self-test accuracy, CPU accounting, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from pullbench import RegistryUnavailable
from pullbench.servers._proxy import (
    PROFILES,
    NetworkProfile,
    NetworkProfileError,
    ShapingProxy,
    get_profile,
    selftest,
)


class _Blaster:
    """A local TCP server that sends a fixed random payload to each client, then closes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the proxy's reachability check just hangs up
            conn.sendall(self.payload)

    def close(self) -> None:
        self.server.close()


def _receive_all(address: tuple[str, int]) -> tuple[bytes, list[int]]:
    chunks: list[bytes] = []
    with socket.create_connection(address, timeout=30) as sock:
        while True:
            data = sock.recv(1024 * 1024)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks), [len(c) for c in chunks]


def test_named_profiles_and_unknown_name_lists_them():
    assert list(PROFILES)[:5] == ["loopback", "passthrough", "lan-1g", "wan-200m", "wan-50m"]
    assert get_profile("wan-50m").rtt_ms == 60.0
    assert get_profile("wan-50m").one_way_delay_s == pytest.approx(0.03)
    assert get_profile("lan-1g").bandwidth_mbit_s == 1000.0
    assert not get_profile("loopback").use_proxy
    with pytest.raises(NetworkProfileError) as info:
        get_profile("wan-1m")
    for name in PROFILES:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_custom_profile_spec_and_bad_values():
    p = get_profile("custom:rtt_ms=5,bandwidth_mbit_s=100,max_send_bytes=1400,jitter_ms=0.5")
    assert (p.rtt_ms, p.bandwidth_mbit_s, p.max_send_bytes, p.jitter_ms) == (5.0, 100.0, 1400, 0.5)
    assert NetworkProfile.from_dict(p.to_dict()) == p
    with pytest.raises(NetworkProfileError, match="rtt_ms"):
        get_profile("custom:rtt=5")
    with pytest.raises(NetworkProfileError, match="bandwidth_mbit_s"):
        NetworkProfile("x", bandwidth_mbit_s=0)
    with pytest.raises(NetworkProfileError, match="bogus"):
        NetworkProfile.from_dict({"name": "x", "bogus": 1})


def test_bytes_arrive_intact_in_order_with_jitter_and_small_sends():
    payload = os.urandom(3 * 1024 * 1024 + 17)
    blaster = _Blaster(payload)
    profile = NetworkProfile("jittery", rtt_ms=4.0, jitter_ms=2.0, bandwidth_mbit_s=200.0,
                             max_send_bytes=1400, seed=7)
    try:
        with ShapingProxy(blaster.address, profile) as proxy:
            data, sizes = _receive_all((proxy.host, proxy.port))
            stats = proxy.stats()
            assert proxy.cpu_s() >= 0.0
    finally:
        blaster.close()
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    assert stats["bytes_to_client"] == len(payload)
    assert stats["connections"] == 1
    # The proxy never sends more than max_send_bytes at once; a client keeping up reads small.
    assert statistics.median(sizes) <= 1400 * 4


def test_proxy_reports_unreachable_registry_before_runs():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    proxy = ShapingProxy(("127.0.0.1", port), "wan-200m")
    with pytest.raises(RegistryUnavailable) as info:
        proxy.start()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "start the registry" in str(info.value)
    assert proxy.pid is None


def test_proxy_cpu_time_is_measured_and_process_ends_on_stop():
    payload = os.urandom(32 * 1024 * 1024)
    blaster = _Blaster(payload)
    try:
        proxy = ShapingProxy(blaster.address, "passthrough").start()
        pid = proxy.pid
        assert pid is not None
        for _ in range(3):
            data, _ = _receive_all((proxy.host, proxy.port))
            assert len(data) == len(payload)
        cpu = proxy.cpu_s()
        proxy.stop()
    finally:
        blaster.close()
    assert cpu > 0.0
    assert proxy.cpu_s() >= cpu  # the final value is kept after stop
    # stop() waited for the process: it is gone (not even a zombie of ours is left)
    assert not Path(f"/proc/{pid}").exists()


def test_the_proxy_dies_with_its_parent(process_running):
    import subprocess
    import sys

    blaster = _Blaster(b"x")
    try:
        # a parent killed with SIGKILL never calls stop(): the proxy process sees EOF on its
        # control pipe and exits
        host, port = blaster.address
        code = ("import sys\nfrom pullbench.servers._proxy import ShapingProxy\n"
                f"p = ShapingProxy(({host!r}, {port}), 'passthrough').start()\n"
                "print(p.port, p.pid, flush=True)\nsys.stdin.read()\n")
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert parent.stdout is not None
            _proxy_port, proxy_pid = map(int, parent.stdout.readline().split())
            assert process_running(proxy_pid)
        finally:
            parent.kill()
            parent.wait(timeout=30)
            for stream in (parent.stdin, parent.stdout):
                if stream is not None:
                    stream.close()
        deadline = time.monotonic() + 30  # a bound on waiting, not a speed claim
        while process_running(proxy_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_running(proxy_pid), "the proxy outlived its parent"
    finally:
        blaster.close()


@pytest.mark.slow
def test_selftest_reports_achieved_against_target():
    """The self-test runs and reports achieved vs target at 20 and 100 Mbit/s, 10 ms RTT.

    Only bounds a loaded, shared 2-core machine still meets are asserted (the proxy shapes:
    within ±20 % of the rate, the added RTT within a few ms). The accuracy targets themselves
    (±5 %, ±1 ms: ``passed``) are checked side by side in benchmarks/bench_shaping.py and
    printed by `pullbench net selftest`, never asserted as absolute times in a test.
    """
    rows = selftest(rates_mbit_s=(20.0, 100.0), rtt_ms=10.0, duration_s=0.5, pings=15)
    assert [r.target_mbit_s for r in rows] == [20.0, 100.0]
    for row in rows:
        assert row.target_rtt_ms == 10.0
        assert row.transfer_bytes > 0
        assert row.throughput_error_pct == pytest.approx(
            100.0 * (row.achieved_mbit_s / row.target_mbit_s - 1.0))
        assert row.rtt_error_ms == pytest.approx(row.added_rtt_ms - row.target_rtt_ms)
        assert row.passed == (abs(row.throughput_error_pct) <= 5.0 and abs(row.rtt_error_ms) <= 1.0)
        assert abs(row.throughput_error_pct) <= 20.0, row
        assert abs(row.rtt_error_ms) <= 5.0, row
        assert row.proxy_cpu_s >= 0.0


@pytest.mark.slow
def test_per_connection_cap_and_shared_link_rate():
    """A per-connection cap below the link rate is what one connection gets; two connections
    share the link's token bucket (together they get the link rate, not twice it)."""
    capped = NetworkProfile("capped", rtt_ms=2.0, bandwidth_mbit_s=400.0,
                            per_connection_mbit_s=40.0)
    rows = selftest([capped], duration_s=0.5, pings=5)
    assert rows[0].target_mbit_s == 40.0
    assert abs(rows[0].throughput_error_pct) <= 20.0, rows[0]  # the cap, not the 400 Mbit/s link

    payload = os.urandom(4 * 1024 * 1024)
    blaster = _Blaster(payload)
    link = NetworkProfile("shared", bandwidth_mbit_s=80.0)
    results: list[float] = []
    try:
        with ShapingProxy(blaster.address, link) as proxy:
            def fetch() -> None:
                t0 = time.perf_counter()
                data, _ = _receive_all((proxy.host, proxy.port))
                assert len(data) == len(payload)
                results.append(len(data) * 8 / (time.perf_counter() - t0) / 1e6)

            threads = [threading.Thread(target=fetch) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        blaster.close()
    assert len(results) == 2
    # each got about half of the shared 80 Mbit/s (ratios, with room for a noisy machine)
    # (each rate is timed from its own start: threads that start apart can sum past the link)
    assert sum(results) <= 80.0 * 1.25
    for rate in results:
        assert 0.3 <= rate / 40.0 <= 1.3, results
