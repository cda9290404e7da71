"""A user-space TCP proxy that shapes traffic: delay, jitter, bandwidth, small sends.

The proxy sits between a puller and a registry and makes "remote" reproducible on one machine
without root. Each direction of each connection is a *delay line* followed by a *pacer*:

::

    src ─recv─▶ [reader] ─(chunk, release_at)─▶ deque ─▶ [writer] ─send─▶ dst
                 stamps release_at = now + one-way     waits until release_at, then paces
                 delay (+ jitter); blocks when the     with token buckets, at most one
                 line is full (TCP-like back-pressure) quantum per send()

The delay line queues data with release timestamps, so delay does not limit throughput (a sleep per
chunk would). Bandwidth is a token bucket in *debt* form (send, then wait until the bucket is back
to zero), shared by every connection of the proxy (the link) and optionally per connection.

The proxy runs in its **own process** (this file run as a script: it imports nothing from
pullbench, so it starts fast and its CPU time is the proxy's own), so on a 2-core
machine its work competes with the puller for CPU but not for the puller's GIL; its CPU time is
read from ``/proc/<pid>/stat`` and recorded in every run row (``proxy_cpu_s``). The child exits when
its stdin closes, so a crashed parent leaves no proxy behind.

Named profiles: ``loopback`` (no proxy at all), ``passthrough`` (the proxy without shaping: a
control for the proxy's own cost), ``lan-1g`` (0.2 ms RTT, 1 Gbit/s), ``wan-200m`` (20 ms,
200 Mbit/s), ``wan-50m`` (60 ms, 50 Mbit/s); custom profiles by :class:`NetworkProfile` or by a
spec string ``custom:rtt_ms=5,bandwidth_mbit_s=100``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from .._errors import NetworkProfileError, RegistryUnavailable, ServerError
    from .._process import stop_process
else:  # the proxy child runs this file as a bare script: no package import, starts in ~50 ms
    # stand-ins (child process only); the parent raises the real ones
    NetworkProfileError = RegistryUnavailable = ServerError = RuntimeError  # type: ignore[misc,assignment]

__all__ = [
    "PROFILES",
    "NetworkProfile",
    "NetworkProfileError",
    "SelftestRow",
    "ShapingProxy",
    "get_profile",
    "proc_stat_fields",
    "profile_names",
    "selftest",
]

logger = logging.getLogger(__name__)

_RECV_BYTES = 256 * 1024
_MIN_QUEUE_BYTES = 4 * 1024 * 1024
_MIN_SHAPED_QUEUE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """How the link between puller and registry behaves.

    Parameters
    ----------
    name : str
        Profile name (recorded in results as ``network_profile``).
    rtt_ms : float
        Added round-trip time in milliseconds; each direction is delayed by ``rtt_ms / 2``.
    bandwidth_mbit_s : float or None
        Link rate in Mbit/s (10**6 bit/s) per direction, shared by all connections through the
        proxy. ``None``: unlimited.
    per_connection_mbit_s : float or None
        Extra cap per connection and direction, Mbit/s. ``None``: unlimited.
    jitter_ms : float
        Standard deviation of a normal jitter added to each chunk's one-way delay (ms). Order is
        preserved (a TCP stream cannot reorder), so jitter never makes data overtake earlier data.
    max_send_bytes : int or None
        Upper bound on bytes per ``send()`` towards either side (emulates small segments or TLS
        records reaching the peer; effective when the peer reads faster than the link delivers).
    seed : int
        Seed of the jitter generator (runs are reproducible).
    use_proxy : bool
        ``False`` only for ``loopback``: connect to the registry directly.
    """

    name: str
    rtt_ms: float = 0.0
    bandwidth_mbit_s: float | None = None
    per_connection_mbit_s: float | None = None
    jitter_ms: float = 0.0
    max_send_bytes: int | None = None
    seed: int = 0
    use_proxy: bool = True

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise NetworkProfileError(
                f"network profile {self.name!r}: rtt_ms and jitter_ms must be >= 0 "
                f"(got rtt_ms={self.rtt_ms}, jitter_ms={self.jitter_ms})"
            )
        for field in ("bandwidth_mbit_s", "per_connection_mbit_s"):
            value = getattr(self, field)
            if value is not None and value <= 0:
                raise NetworkProfileError(
                    f"network profile {self.name!r}: {field} must be > 0 or None (unlimited), "
                    f"got {value}"
                )
        if self.max_send_bytes is not None and self.max_send_bytes < 1:
            raise NetworkProfileError(
                f"network profile {self.name!r}: max_send_bytes must be >= 1 or None"
            )

    @property
    def one_way_delay_s(self) -> float:
        """Delay added to each direction, seconds."""
        return self.rtt_ms / 2000.0

    @property
    def shapes(self) -> bool:
        """Whether the profile changes anything (delay, rate, jitter or send size)."""
        return bool(
            self.rtt_ms
            or self.jitter_ms
            or self.bandwidth_mbit_s
            or self.per_connection_mbit_s
            or self.max_send_bytes
        )

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-able dict (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkProfile:
        """Build a profile from :meth:`to_dict` output; unknown keys raise NetworkProfileError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NetworkProfileError(
                f"unknown network profile field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile("loopback", use_proxy=False),
        NetworkProfile("passthrough"),
        NetworkProfile("lan-1g", rtt_ms=0.2, bandwidth_mbit_s=1000.0),
        NetworkProfile("wan-200m", rtt_ms=20.0, bandwidth_mbit_s=200.0),
        NetworkProfile("wan-50m", rtt_ms=60.0, bandwidth_mbit_s=50.0),
    )
}
"""The named profiles (name → :class:`NetworkProfile`)."""


def profile_names() -> list[str]:
    """Names of the built-in profiles, in definition order."""
    return list(PROFILES)


def _parse_custom(spec: str) -> NetworkProfile:
    body = spec.split(":", 1)[1] if ":" in spec else ""
    fields: dict[str, Any] = {}
    types = {
        "rtt_ms": float,
        "bandwidth_mbit_s": float,
        "per_connection_mbit_s": float,
        "jitter_ms": float,
        "max_send_bytes": int,
        "seed": int,
    }
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise NetworkProfileError(
                f"bad custom network profile item {item!r} in {spec!r}: expected key=value with "
                f"key one of {sorted(types)} (e.g. 'custom:rtt_ms=5,bandwidth_mbit_s=100')"
            )
        try:
            fields[key] = None if value.strip().lower() == "none" else types[key](value)
        except ValueError as exc:
            raise NetworkProfileError(
                f"bad value {value!r} for {key} in custom network profile {spec!r}"
            ) from exc
    return NetworkProfile(name=spec, **fields)


def get_profile(profile: str | NetworkProfile) -> NetworkProfile:
    """Look up a network profile.

    Parameters
    ----------
    profile : str or NetworkProfile
        A built-in name (see :data:`PROFILES`), a custom spec
        ``"custom:rtt_ms=5,bandwidth_mbit_s=100"``
        (keys: rtt_ms, bandwidth_mbit_s, per_connection_mbit_s, jitter_ms, max_send_bytes, seed),
        or a profile (returned unchanged).

    Returns
    -------
    NetworkProfile

    Raises
    ------
    NetworkProfileError
        Unknown name (the message lists the known ones) or a malformed custom spec.
    """
    if isinstance(profile, NetworkProfile):
        return profile
    if profile in PROFILES:
        return PROFILES[profile]
    if profile.startswith("custom"):
        return _parse_custom(profile)
    raise NetworkProfileError(
        f"unknown network profile {profile!r}; known profiles: {', '.join(PROFILES)} "
        f"(or a custom spec like 'custom:rtt_ms=5,bandwidth_mbit_s=100')"
    )


# ---------------------------------------------------------------------------------------------
# The shaping engine (runs in the proxy process; usable in-process for tests of the engine)
# ---------------------------------------------------------------------------------------------


class _TokenBucket:
    """Token bucket in debt form: ``reserve(n)`` returns how long to wait before sending n bytes."""

    def __init__(self, rate_bytes_s: float, burst_bytes: float) -> None:
        self.rate = rate_bytes_s
        self.cap = burst_bytes
        self.tokens = burst_bytes
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def reserve(self, n: int) -> float:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.cap, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def _bucket(mbit_s: float | None) -> _TokenBucket | None:
    if mbit_s is None:
        return None
    rate = mbit_s * 1e6 / 8.0
    # 10 ms of burst: the pacer catches up after a scheduling hiccup (a busy 2-core machine)
    # instead of losing that time for good; short enough not to show at the self-test's scale.
    return _TokenBucket(rate, max(64 * 1024, rate * 0.01))


def _quantum(profile: NetworkProfile) -> int:
    """Largest single send: about 1 ms of link time (smooth pacing), 4 KiB..256 KiB."""
    rates = [r for r in (profile.bandwidth_mbit_s, profile.per_connection_mbit_s) if r]
    q = _RECV_BYTES
    if rates:
        q = int(min(max(min(rates) * 1e6 / 8.0 * 0.001, 4096), _RECV_BYTES))
    if profile.max_send_bytes:
        q = min(q, profile.max_send_bytes)
    return q


_SPIN_S = 0.002


def _sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (monotonic): coarse sleep, then yield-spin the last 2 ms.

    A plain ``time.sleep`` overshoots by ~0.1 ms plus the wake-up latency of an idle CPU; the
    spin keeps the added RTT within the self-test's ±1 ms at 60 ms RTT.
    """
    while True:
        delta = deadline - time.monotonic()
        if delta <= 0:
            return
        if delta > _SPIN_S:
            time.sleep(delta - _SPIN_S)
        else:
            time.sleep(0)


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.upstream_failures = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.last_error = ""

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "connections": self.connections,
                "active": self.active,
                "upstream_failures": self.upstream_failures,
                "bytes_to_upstream": self.bytes_up,
                "bytes_to_client": self.bytes_down,
                "last_error": self.last_error,
            }


class _Direction:
    """One direction of one connection: a delay line plus a paced writer."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket,
                 shared: _TokenBucket | None, upstream_bound: bool) -> None:
        p = conn.engine.profile
        self.conn = conn
        self.src = src
        self.dst = dst
        self.delay = p.one_way_delay_s
        self.jitter = p.jitter_ms / 1000.0
        self.rng = random.Random(p.seed * 1_000_003 + conn.index * 2 + int(upstream_bound))
        self.buckets = [b for b in (shared, _bucket(p.per_connection_mbit_s)) if b is not None]
        self.quantum = _quantum(p)
        rate = min((b.rate for b in self.buckets), default=0.0)
        # The line holds about three bandwidth-delay products (a link's in-flight data plus a
        # modest router queue); unlimited links get a generous fixed line.
        self.recv_bytes = 64 * 1024 if rate else _RECV_BYTES
        # At least 100 ms of data, so a reader thread waiting for the CPU (a busy 2-core machine)
        # or the GIL never starves the writer.
        self.limit = (max(_MIN_SHAPED_QUEUE_BYTES, int(3 * rate * (self.delay + self.jitter * 3)),
                          int(rate * 0.1)) + 2 * self.recv_bytes if rate else _MIN_QUEUE_BYTES)
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.last_release = 0.0
        self.upstream_bound = upstream_bound
        self.reset = False  # the source reset the connection: reset the destination too

    def read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self.src.recv(self.recv_bytes)
                except OSError:
                    self.reset = True
                    data = b""
                now = time.monotonic()
                release = now + self.delay
                if self.jitter:
                    release += self.rng.gauss(0.0, self.jitter)
                release = max(release, self.last_release, now)
                self.last_release = release
                with self.cond:
                    while self.queued > self.limit and not self.conn.closed:
                        self.cond.wait(0.5)
                    if self.conn.closed:
                        return
                    self.queue.append((release, data or None))
                    self.queued += len(data)
                    self.cond.notify_all()
                if not data:
                    return
        finally:
            with self.cond:
                self.cond.notify_all()

    def write_loop(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.conn.closed:
                        self.cond.wait(0.5)
                    if self.conn.closed and not self.queue:
                        return
                    release, data = self.queue.popleft()
                    if data:
                        self.queued -= len(data)
                    self.cond.notify_all()
                _sleep_until(release)
                if data is None:
                    self.finish()
                    return
                view = memoryview(data)
                while view:
                    piece = view[: self.quantum]
                    wait = 0.0
                    for bucket in self.buckets:
                        wait = max(wait, bucket.reserve(len(piece)))
                    if wait:
                        time.sleep(wait)
                    self.dst.sendall(piece)
                    view = view[len(piece):]
                    with self.conn.engine.counters.lock:
                        if self.upstream_bound:
                            self.conn.engine.counters.bytes_up += len(piece)
                        else:
                            self.conn.engine.counters.bytes_down += len(piece)
        except OSError:
            self.conn.abort()
        finally:
            self.conn.direction_done()

    def finish(self) -> None:
        if self.reset:
            self.conn.abort()
            return
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)


class _Connection:
    def __init__(self, engine: _Engine, client: socket.socket, upstream: socket.socket,
                 index: int) -> None:
        self.engine = engine
        self.client = client
        self.upstream = upstream
        self.index = index
        self.closed = False
        self.lock = threading.Lock()
        self.pending = 2
        self.up = _Direction(self, client, upstream, engine.shared_up, True)
        self.down = _Direction(self, upstream, client, engine.shared_down, False)

    def start(self) -> None:
        for direction in (self.up, self.down):
            for target in (direction.read_loop, direction.write_loop):
                threading.Thread(target=target, daemon=True,
                                 name=f"proxy-{self.index}-{target.__name__}").start()

    def direction_done(self) -> None:
        with self.lock:
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.close()

    def abort(self) -> None:
        """Reset both sides (RST), as a link failure would look to both peers."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            # shutdown(SHUT_RD) wakes a thread blocked in recv(); close() alone would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                sock.close()
        for direction in (self.up, self.down):
            with direction.cond:
                direction.cond.notify_all()
        with self.engine.counters.lock:
            self.engine.counters.active -= 1


class _Engine:
    """Accept loop + connections. Runs inside the proxy process."""

    def __init__(self, profile: NetworkProfile, upstream: tuple[str, int],
                 listen: tuple[str, int]) -> None:
        self.profile = profile
        self.upstream = upstream
        self.shared_up = _bucket(profile.bandwidth_mbit_s)
        self.shared_down = _bucket(profile.bandwidth_mbit_s)
        self.counters = _Counters()
        self.server = socket.create_server(listen, backlog=128)
        self.address: tuple[str, int] = self.server.getsockname()[:2]
        self.stopping = False

    def check_upstream(self) -> str | None:
        """Try one TCP connection to the upstream; the error text, or None when reachable."""
        try:
            with socket.create_connection(self.upstream, timeout=5):
                return None
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"

    def serve_forever(self) -> None:
        index = 0
        while not self.stopping:
            try:
                client, _ = self.server.accept()
            except OSError:
                if self.stopping:
                    return
                raise
            index += 1
            with self.counters.lock:
                self.counters.connections += 1
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError as exc:
                with self.counters.lock:
                    self.counters.upstream_failures += 1
                    self.counters.last_error = f"{type(exc).__name__}: {exc}"
                sys.stderr.write(f"pullbench proxy: cannot reach upstream "
                                 f"{self.upstream[0]}:{self.upstream[1]}: {exc}\n")
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.counters.lock:
                self.counters.active += 1
            _Connection(self, client, upstream, index).start()

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self.server.close()


def _child_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the proxy process: serve, answer control lines on stdin, exit on EOF."""
    parser = argparse.ArgumentParser(prog="python -m pullbench.servers._proxy")
    parser.add_argument("--upstream", required=True, help="host:port of the registry")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--profile", required=True, help="profile as JSON")
    args = parser.parse_args(argv)
    uh, _, up = args.upstream.rpartition(":")
    lh, _, lp = args.listen.rpartition(":")
    profile = NetworkProfile.from_dict(json.loads(args.profile))
    sys.setswitchinterval(0.001)  # shorter GIL hand-offs between reader and writer threads
    try:
        engine = _Engine(profile, (uh, int(up)), (lh, int(lp)))
    except OSError as exc:
        sys.stdout.write(json.dumps({"error": f"cannot listen on {args.listen}: {exc}"}) + "\n")
        sys.stdout.flush()
        return 1
    def on_sigterm(*_: object) -> None:
        os._exit(0)

    # the parent publishes this process's pid file; the process removes it itself when it ends,
    # also when the parent was killed and never got to (stdin EOF) or it gets SIGTERM
    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=engine.serve_forever, daemon=True, name="proxy-accept").start()
    sys.stdout.write(json.dumps({"port": engine.address[1], "host": engine.address[0]}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            reply: dict[str, Any] = engine.counters.snapshot()
        elif command == "check":
            reply = {"error": engine.check_upstream()}
        else:
            reply = {"error": f"unknown command {command!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    engine.stop()
    return 0


# ---------------------------------------------------------------------------------------------
# Parent-side handle
# ---------------------------------------------------------------------------------------------


def proc_stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: ``[0]`` is the state.

    The command name may contain spaces and parentheses, so the split starts after the last
    ``)``. Raises OSError when the process does not exist (proc(5)).
    """
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    return stat[stat.rindex(")") + 2:].split()


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat, seconds (10 ms resolution)."""
    fields = proc_stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ShapingProxy:
    """A shaping TCP proxy in front of one upstream (a registry), running in its own process.

    Parameters
    ----------
    upstream : tuple of (str, int) or str
        The registry's ``(host, port)`` or ``"host:port"``.
    profile : str or NetworkProfile
        Network profile (see :func:`get_profile`). ``loopback`` is accepted and still starts a
        proxy (use :func:`pullbench.servers.open_endpoint` to skip the proxy for loopback).
    listen_host : str
        Address to listen on (loopback by default).
    listen_port : int
        Port to listen on; 0 picks a free one.

    Examples
    --------
    >>> with ShapingProxy(("127.0.0.1", 5000), "wan-50m") as proxy:   # doctest: +SKIP
    ...     url = f"http://{proxy.address}"      # pull from here
    ...     proxy.cpu_s()

    Raises
    ------
    ServerError
        The proxy process could not start or listen.
    RegistryUnavailable
        The proxy cannot reach the upstream (checked in :meth:`start`, before any run).
    """

    def __init__(self, upstream: tuple[str, int] | str,
                 profile: str | NetworkProfile = "passthrough", *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        if isinstance(upstream, str):
            host, _, port = upstream.rpartition(":")
            upstream = (host, int(port))
        self.upstream = upstream
        self.profile = get_profile(profile)
        self.listen = (listen_host, listen_port)
        self.host = listen_host
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._final_cpu_s: float | None = None

    @property
    def address(self) -> str:
        """``host:port`` the puller should connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the proxy process (None before start / after stop)."""
        return self._proc.pid if self._proc else None

    def start(self, *, check_upstream: bool = True) -> ShapingProxy:
        """Start the proxy process and (by default) check that it can reach the upstream."""
        if self._proc is not None:
            return self
        cmd = [
            sys.executable, "-I", str(Path(__file__).resolve()),
            "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
            "--listen", f"{self.listen[0]}:{self.listen[1]}",
            "--profile", json.dumps(self.profile.to_dict()),
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        line = self._readline(proc, timeout_s=30.0)
        if line:
            reply = json.loads(line)
        else:
            reply = {"error": "proxy process exited: "
                     + (proc.stderr.read() if proc.stderr else "")}
        if "error" in reply:
            self._kill(proc)
            raise ServerError(f"shaping proxy did not start: {reply['error']}")
        self._proc = proc
        self.port = int(reply["port"])
        self._final_cpu_s = None
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True).start()
        logger.info("shaping proxy %s → %s:%s profile %s (pid %s)", self.address,
                    *self.upstream, self.profile.name, proc.pid)
        if check_upstream:
            try:
                self.check()
            except RegistryUnavailable:
                self.stop()
                raise
        return self

    @staticmethod
    def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        return proc.stdout.readline() if ready else ""

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            logger.warning("%s", line.rstrip())

    def _command(self, command: str) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise ServerError(
                    f"shaping proxy for {self.upstream[0]}:{self.upstream[1]} is not running "
                    "(call start())"
                )
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
            line = self._readline(proc, timeout_s=30.0)
        if not line:
            raise ServerError(f"shaping proxy {self.address} did not answer {command!r}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def check(self) -> None:
        """Verify the proxy can reach its upstream now.

        Raises
        ------
        RegistryUnavailable
            With the upstream address and the connection error, before any run starts.
        """
        error = self._command("check").get("error")
        if error:
            raise RegistryUnavailable(
                f"the shaping proxy {self.address} cannot reach the registry at "
                f"{self.upstream[0]}:{self.upstream[1]} ({error}); start the registry first or "
                "fix its address",
                registry=f"{self.upstream[0]}:{self.upstream[1]}",
            )

    def stats(self) -> dict[str, Any]:
        """Counters: connections, active, upstream_failures, bytes_to_upstream, bytes_to_client."""
        return self._command("stats")

    def cpu_s(self) -> float:
        """CPU time (user + system) the proxy process has used so far, seconds."""
        if self._proc is None:
            return self._final_cpu_s or 0.0
        try:
            return _proc_cpu_s(self._proc.pid)
        except (OSError, ValueError, IndexError):
            return self._final_cpu_s or 0.0

    def stop(self) -> None:
        """Stop the proxy process (closes every connection through it)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._final_cpu_s = _proc_cpu_s(proc.pid)
        self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        stop_process(proc, what="shaping proxy")
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                if stream:
                    stream.close()

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


# ---------------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelftestRow:
    """What the proxy achieved for one target.

    Attributes
    ----------
    profile : str
    target_mbit_s, achieved_mbit_s : float
        Link rate asked for and measured over a bulk transfer on one connection, from the
        moment 10 % had arrived (past the token bucket's 10 ms burst) to the last byte.
    throughput_error_pct : float
        ``100 * (achieved / target - 1)``.
    target_rtt_ms, added_rtt_ms : float
        RTT asked for and measured (median ping-pong through the proxy minus median direct).
    rtt_error_ms : float
        ``added - target``.
    transfer_bytes : int
        Bytes of the bulk transfer.
    proxy_cpu_s : float
        Proxy process CPU time during this row's transfers.
    passed : bool
        ``|throughput_error_pct| <= 5`` and ``|rtt_error_ms| <= 1``.
    """

    profile: str
    target_mbit_s: float
    achieved_mbit_s: float
    throughput_error_pct: float
    target_rtt_ms: float
    added_rtt_ms: float
    rtt_error_ms: float
    transfer_bytes: int
    proxy_cpu_s: float
    passed: bool


class _Source:
    """Tiny TCP server: 'B<n>\\n' → send n bytes then close; 'P' → echo 'P' (ping)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()[:2]
        self.payload = memoryview(os.urandom(1024 * 1024))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, contextlib.suppress(OSError):
            while True:
                kind = conn.recv(1)
                if kind == b"P":
                    conn.sendall(b"P")
                elif kind == b"B":
                    line = b""
                    while not line.endswith(b"\n"):
                        line += conn.recv(1)
                    remaining = int(line)
                    while remaining > 0:
                        piece = self.payload[: min(remaining, len(self.payload))]
                        conn.sendall(piece)
                        remaining -= len(piece)
                    return
                else:
                    return

    def close(self) -> None:
        self.server.close()


def _median_ping_ms(address: tuple[str, int], pings: int) -> float:
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(pings + 2):
            t0 = time.perf_counter()
            sock.sendall(b"P")
            if sock.recv(1) != b"P":
                raise ServerError("self-test ping got a wrong answer")
            samples.append((time.perf_counter() - t0) * 1000.0)
        sock.sendall(b"X")
    return statistics.median(samples[2:])


def _bulk_mbit_s(address: tuple[str, int], nbytes: int) -> float:
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    # Steady state: the clock starts once 10 % has arrived (after the token bucket's burst).
    skip = nbytes // 10
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(b"B%d\n" % nbytes)
        got = 0
        start_bytes = 0
        t_start = t_last = 0.0
        while got < nbytes:
            n = sock.recv_into(view)
            if not n:
                raise ServerError(f"self-test transfer ended early at {got} of {nbytes} bytes")
            got += n
            t_last = time.perf_counter()
            if not start_bytes and got >= skip:
                start_bytes, t_start = got, t_last
    elapsed = t_last - t_start
    if elapsed <= 0:
        return float("inf")
    return (nbytes - start_bytes) * 8 / elapsed / 1e6


def selftest(
    profiles: Iterable[str | NetworkProfile] | None = None,
    *,
    rates_mbit_s: Iterable[float] = (10.0, 100.0, 1000.0),
    rtt_ms: float = 20.0,
    duration_s: float = 1.0,
    max_transfer_bytes: int = 128 * 1024 * 1024,
    pings: int = 20,
) -> list[SelftestRow]:
    """Measure what the shaping proxy achieves against its targets.

    For each profile (default: one custom profile per rate in ``rates_mbit_s`` with ``rtt_ms``)
    a proxy is started in front of a local source; the added RTT is the median of ``pings``
    ping-pongs through the proxy minus the median direct, and the throughput is measured over a
    bulk transfer of about ``duration_s`` seconds at the target rate (bounded by
    ``max_transfer_bytes``), first to last byte.

    Parameters
    ----------
    profiles : iterable of str or NetworkProfile, optional
        Profiles to check; profiles without a bandwidth limit report ``target_mbit_s = nan``.
    rates_mbit_s : iterable of float
        Used when ``profiles`` is None.
    rtt_ms : float
        Used when ``profiles`` is None.
    duration_s : float
        Target duration of each bulk transfer, seconds (the transfer is bounded, never open-ended).
    max_transfer_bytes : int
        Cap on the bulk transfer size (the size itself for profiles without a rate limit).
    pings : int
        Number of ping-pongs per measurement.

    Returns
    -------
    list of SelftestRow
        One row per profile; ``passed`` says whether it met ±5 % throughput and ±1 ms RTT.
    """
    if profiles is None:
        chosen = [NetworkProfile(f"custom:rtt_ms={rtt_ms:g},bandwidth_mbit_s={r:g}",
                                 rtt_ms=rtt_ms, bandwidth_mbit_s=r) for r in rates_mbit_s]
    else:
        chosen = [get_profile(p) for p in profiles]
    source = _Source()
    rows: list[SelftestRow] = []
    try:
        direct_ms = _median_ping_ms(source.address, pings)
        for profile in chosen:
            shaped = dataclasses.replace(profile, use_proxy=True)
            with ShapingProxy(source.address, shaped) as proxy:
                target_addr = (proxy.host, proxy.port)
                cpu0 = proxy.cpu_s()
                added = _median_ping_ms(target_addr, pings) - direct_ms
                rate = profile.bandwidth_mbit_s
                if profile.per_connection_mbit_s:
                    rate = min(rate or float("inf"), profile.per_connection_mbit_s)
                if rate:
                    nbytes = int(min(max(rate * 1e6 / 8 * duration_s, 256 * 1024),
                                     max_transfer_bytes))
                else:
                    nbytes = int(max_transfer_bytes)
                achieved = _bulk_mbit_s(target_addr, nbytes)
                cpu = proxy.cpu_s() - cpu0
            target = float(rate) if rate else float("nan")
            err_pct = 100.0 * (achieved / target - 1.0) if rate else float("nan")
            rtt_err = added - profile.rtt_ms
            passed = abs(rtt_err) <= 1.0 and (not rate or abs(err_pct) <= 5.0)
            rows.append(SelftestRow(
                profile=profile.name, target_mbit_s=target, achieved_mbit_s=achieved,
                throughput_error_pct=err_pct, target_rtt_ms=profile.rtt_ms, added_rtt_ms=added,
                rtt_error_ms=rtt_err, transfer_bytes=nbytes, proxy_cpu_s=cpu, passed=passed,
            ))
            logger.info("selftest %s", rows[-1])
    finally:
        source.close()
    return rows


if __name__ == "__main__":
    sys.exit(_child_main())
