"""Copy strategies: how one blob body moves from an HTTP response into a file.

A strategy reads the body, writes it to a temp file beside its final place, counting every read
and write (:class:`~pullbench._probes.Meter`) and hashing the bytes; :meth:`CopyStrategy.copy`
then checks size and digest and renames the temp file into place. On any mismatch the temp file is
removed and :class:`~pullbench.SizeMismatch` / :class:`~pullbench.DigestMismatch` is raised.

The dimensions (``pullbench strategies`` lists the presets built from them):

read path (``read_path``)
    ``readinto``: ``readinto1`` on http.client's socket stream (the ``io.BufferedReader`` over
    the socket that ``http.client`` reads from, ``response.raw._fp.fp``): first whatever the 8 KiB
    buffer already holds, then **one** ``recv`` into the caller's buffer. This is the Go-like short
    read: ``Read`` returns what one read of the socket gives (golang/go:src/io/io.go). Note that
    ``readinto`` on the *response* (http.client ``HTTPResponse.readinto``) keeps reading until the
    whole buffer is full, so it is not Go-like and is not offered as a short read.
    ``read1``: ``HTTPResponse.read1(n)`` on ``response.raw._fp``; also one socket read, but it
    allocates a new ``bytes`` per read and pullbench copies it into the buffer.
    ``recv_into``: after draining what http.client already buffered, ``socket.recv_into`` on the
    connection's socket, bounded by ``Content-Length``.
    urllib3 ``read(amt)`` / ``iter_content(N)`` accumulate until exactly ``N`` bytes are there
    (strategy ``requests-iter-content``); ``shutil.copyfileobj`` reads ``r.raw.read(N)``
    (``copyfileobj``); ``os.splice`` moves socket → pipe → file in the kernel (``splice``).
read size (``read_size``)
    The copy buffer: the most one read may return.
write coalescing (``write_mode``, ``write_size``)
    ``per-read``: one ``write`` per read (Go ``io.Copy``); ``bufio``: a ``write_size`` buffer with
    Go ``bufio.Writer`` semantics (a write larger than the free space goes straight to the file
    when the buffer is empty; golang/go:src/bufio/bufio.go); ``fill``: read until the
    ``write_size`` buffer is full, then write it (containerd's ``io.ReadAtLeast`` loop,
    containerd/containerd:core/content/helpers.go ``copyWithBuffer``).
hash location (``hash_mode``)
    ``inline`` (in the copy loop, as ``io.TeeReader`` into the digester; with ``fill`` each full
    buffer is hashed when it is written, as containerd's content writer does), ``on-read`` (each
    read is hashed as soon as it lands, while it is still in the CPU cache; differs from
    ``inline`` only for ``fill``), ``thread`` (a helper thread; ``hashlib`` releases the GIL for
    large updates, so hashing overlaps the socket read and the file write), or ``after``
    (re-read the finished file; what ``splice`` has to do).

Every strategy's reads must come from real reads: nothing is simulated. Counts are made by the
strategy itself as it calls the OS, so the write-size histogram of a pull equals what
``strace -e trace=write`` sees for the destination file (tests/test_probes.py checks it).

Registering your own strategy does not touch the puller::

    >>> from pullbench import CopyStrategy, register_strategy, get_strategy
    >>> class EightK(CopyStrategy):
    ...     '''Reads 8 KiB with urllib3, writes each chunk.'''
    ...     name = "eight-k"
    ...     mirrors = "nothing in particular"
    ...     defaults = {"chunk_size": 8192}
    ...     def transfer(self, response, fd, meter, *, limit, hasher):
    ...         for chunk in response.raw.stream(self.params["chunk_size"], decode_content=False):
    ...             meter.read(len(chunk)); hasher.update(chunk); meter.write(fd, chunk)
    ...         return hasher
    >>> _ = register_strategy(EightK, replace=True)
    >>> get_strategy("eight-k", chunk_size=4096).params["chunk_size"]
    4096
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import inspect
import logging
import os
import queue
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import requests
import urllib3

from ._errors import BlobError, DigestMismatch, SizeMismatch, StrategyError
from ._probes import Meter, ProbeSample, ThreadProbe, median_of_counts, power_of_two_histogram

__all__ = [
    "CopyStats",
    "CopyStrategy",
    "StrategyInfo",
    "get_strategy",
    "list_strategies",
    "parse_param_value",
    "register_strategy",
]

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
_MAX_BUFFER = 256 * MiB
_REHASH_CHUNK = 1 * MiB
_HASH_SLOTS = 3  # buffers in flight between the copy loop and the hashing thread

READ_PATHS = ("readinto", "read1", "recv_into")
WRITE_MODES = ("per-read", "bufio", "fill")
HASH_MODES = ("inline", "on-read", "thread", "after")
_IN_LOOP = frozenset({"inline", "on-read"})


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class CopyStats:
    """What one blob copy did.

    Attributes
    ----------
    digest : str
        The verified digest.
    size_bytes : int
    duration_s : float
        Wall time of the copy including the final hash and rename.
    read_sizes, write_sizes : Mapping[int, int] or None
        Exact ``{bytes: count}`` of reads and writes as the strategy made them; None when the copy
        was not metered (a :class:`~pullbench._probes.NullMeter`, i.e. ``probes=False``).
    buffer_bytes : int
        Memory the strategy held in buffers for this copy (user-space buffers, plus the pipe for
        ``splice``).
    helper : ProbeSample or None
        CPU and I/O of helper threads (the hashing thread), measured inside them; None when not
        measured.

    The derived properties (``read_count``, ``read_size_hist``, ``median_write_bytes`` ...) are
    None when the sizes were not counted.
    """

    digest: str
    size_bytes: int
    duration_s: float
    read_sizes: Mapping[int, int] | None = field(default_factory=dict)
    write_sizes: Mapping[int, int] | None = field(default_factory=dict)
    buffer_bytes: int = 0
    helper: ProbeSample | None = field(default_factory=ProbeSample)

    @property
    def read_count(self) -> int | None:
        return None if self.read_sizes is None else sum(self.read_sizes.values())

    @property
    def write_count(self) -> int | None:
        return None if self.write_sizes is None else sum(self.write_sizes.values())

    @property
    def read_size_hist(self) -> dict[int, int] | None:
        return None if self.read_sizes is None else power_of_two_histogram(self.read_sizes)

    @property
    def write_size_hist(self) -> dict[int, int] | None:
        return None if self.write_sizes is None else power_of_two_histogram(self.write_sizes)

    @property
    def median_write_bytes(self) -> float | None:
        return None if self.write_sizes is None else median_of_counts(self.write_sizes)


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    """A registered strategy: its name, default parameters, what it mirrors, and a description."""

    name: str
    params: Mapping[str, Any]
    mirrors: str
    description: str


# ----------------------------------------------------------------------------- base class


class CopyStrategy:
    """Base class: move one blob body from a response into a file, counting and hashing.

    Subclasses set ``name``, ``mirrors``, ``defaults`` (parameter name → default value) and
    implement :meth:`transfer`. Construct through :func:`get_strategy` so parameters are validated.

    Parameters
    ----------
    **params
        Overrides of ``defaults``; unknown names raise :class:`StrategyError`.
    """

    name: ClassVar[str] = "custom"
    mirrors: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise StrategyError(
                f"strategy {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        merged = {**self.defaults, **params}
        for key, value in merged.items():
            default = self.defaults[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                isinstance(default, int) and not isinstance(value, int)
            ):
                kind = (f"an integer number of bytes ({SIZE_FORMATS})"
                        if isinstance(default, int) and not isinstance(default, bool)
                        else f"{type(default).__name__} (default {default!r})")
                raise StrategyError(
                    f"strategy {self.name!r}: parameter {key}={value!r} must be {kind}"
                )
        self.params: dict[str, Any] = merged
        self.validate()

    def validate(self) -> None:
        """Check parameter values; raise :class:`StrategyError` naming the bad one."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<{type(self).__name__} {self.name!r} {args}>"

    def buffer_bytes(self) -> int:
        """Nominal bytes of buffers this strategy holds during one copy."""
        return 0

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        """Move the body of ``response`` into ``fd``. Override this.

        Parameters
        ----------
        response : requests.Response
            Streamed (``stream=True``) response, body unread.
        fd : int
            The temp file, open for writing at offset 0.
        meter : Meter
            Record each read (:meth:`Meter.read`) and write (:meth:`Meter.write` does the
            ``os.write`` and records it).
        limit : int
            Read at most this many bytes (the descriptor size + 1: a longer body is detected
            without reading all of it).
        hasher : hashlib object
            Fresh hasher for the expected digest's algorithm.

        Returns
        -------
        hashlib object or None
            The hasher fed with every byte written, or None to have the file re-read and hashed.
        """
        raise NotImplementedError

    def copy(
        self,
        response: requests.Response,
        dest: str | Path,
        *,
        expected_size: int,
        expected_digest: str,
        probe: Meter | None = None,
    ) -> CopyStats:
        """Copy the body into ``dest`` through a temp file beside it; verify; rename.

        Parameters
        ----------
        response : requests.Response
            Streamed blob response; closed on return.
        dest : path
            Final path (e.g. ``<store>/blobs/sha256/<hex>``).
        expected_size : int
            The descriptor's size in bytes.
        expected_digest : str
            The descriptor's digest (``sha256:`` or ``sha512:``).
        probe : Meter, optional
            Where to count reads/writes (a new one by default). A
            :class:`~pullbench._probes.NullMeter` counts nothing: the returned sizes and
            ``helper`` are None; size and digest are verified all the same.

        Returns
        -------
        CopyStats

        Raises
        ------
        SizeMismatch
            Short or long body (also when the connection drops mid-body). The temp file is removed.
        DigestMismatch
            The bytes do not hash to ``expected_digest``. The temp file is removed; ``dest`` is not
            created.
        StrategyError
            The strategy cannot handle this response (e.g. ``splice`` over TLS).
        """
        dest = Path(dest)
        meter = probe if probe is not None else Meter()
        algorithm = expected_digest.partition(":")[0]
        try:
            hasher = hashlib.new(algorithm)
        except ValueError:
            response.close()
            raise BlobError(
                f"unsupported digest algorithm {algorithm!r} in {expected_digest}"
            ) from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter_ns()
        fd, tmp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name[:16]}.", suffix=".partial"
        )
        ok = False
        try:
            meter.hold(self.buffer_bytes())
            try:
                result = self.transfer(response, fd, meter, limit=expected_size + 1, hasher=hasher)
            except (
                urllib3.exceptions.HTTPError,
                requests.RequestException,
                http.client.HTTPException,
                ConnectionError,
                TimeoutError,
            ) as exc:
                got = os.fstat(fd).st_size
                raise SizeMismatch(
                    f"blob {expected_digest}: body ended after {got} of {expected_size} bytes "
                    f"({type(exc).__name__})",
                    expected=expected_size,
                    actual=got,
                ) from None
            size = os.fstat(fd).st_size
            if size != expected_size:
                kind = "short" if size < expected_size else "long"
                raise SizeMismatch(
                    f"blob {expected_digest}: {kind} body, received {size}"
                    f"{'+' if size > expected_size else ''} bytes, descriptor size {expected_size}",
                    expected=expected_size,
                    actual=size,
                )
            if result is None:
                result = _rehash(fd, hasher, meter)
            actual = f"{algorithm}:{result.hexdigest()}"
            if actual != expected_digest:
                raise DigestMismatch(
                    f"blob {expected_digest}: received {size} bytes hash to {actual}; the registry "
                    "served corrupted content (nothing was stored)",
                    expected=expected_digest,
                    actual=actual,
                )
            os.close(fd)
            fd = -1
            Path(tmp_name).replace(dest)
            ok = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not ok:
                with contextlib.suppress(FileNotFoundError):
                    Path(tmp_name).unlink()
            response.close()
        counted = meter.active
        return CopyStats(
            digest=expected_digest,
            size_bytes=expected_size,
            duration_s=(time.perf_counter_ns() - t0) / 1e9,
            read_sizes=dict(meter.reads) if counted else None,
            write_sizes=dict(meter.writes) if counted else None,
            buffer_bytes=meter.buffer_bytes,
            helper=meter.helper if counted else None,
        )


def _rehash(fd: int, hasher: Any, meter: Meter) -> Any:
    """Hash a finished file by re-reading it (1 MiB ``preadv`` calls; page-cache reads)."""
    buf = bytearray(_REHASH_CHUNK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            return hasher
        hasher.update(view[:n])
        offset += n


# ----------------------------------------------------------------------------- body access


def _http_response(response: requests.Response) -> http.client.HTTPResponse:
    """http.client's response under requests/urllib3 (``response.raw._fp``)."""
    fp = getattr(response.raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse):
        raise StrategyError(
            "this strategy needs a requests response backed by urllib3/http.client "
            "(response.raw._fp); got " + type(fp).__name__
        )
    return fp


def _content_length_body(hr: http.client.HTTPResponse, strategy: str) -> tuple[Any, int]:
    """The socket stream (BufferedReader) and remaining length of a Content-Length body."""
    if hr.chunked or hr.length is None or hr.fp is None:
        raise StrategyError(
            f"strategy {strategy!r} reads the socket directly and needs a Content-Length body; the "
            "registry sent a chunked or unbounded body (use go-iocopy with read_path=read1)"
        )
    return hr.fp, hr.length


def _finish_body(response: requests.Response, hr: http.client.HTTPResponse, consumed: int) -> None:
    """Tell http.client and urllib3 the body was consumed outside them, so the connection is reused.

    Mirrors what ``HTTPResponse.read`` does when its length reaches 0 (``_close_conn``), then hands
    the connection back to urllib3's pool. Only when the whole Content-Length was read.
    """
    if hr.length is None:
        return
    hr.length = max(hr.length - consumed, 0)
    if hr.length == 0:
        hr._close_conn()  # type: ignore[attr-defined]
        response.raw.release_conn()
        response._content_consumed = True  # type: ignore[attr-defined]


class _Reader:
    """One read path: ``read(view) -> n`` returning what one read gave (0 at end of body)."""

    def __init__(self, response: requests.Response, path: str, strategy: str) -> None:
        self.response = response
        self.hr = _http_response(response)
        self.path = path
        self.consumed = 0
        if path == "read1":
            self.read = self._read1
            return
        self.bio, self.remaining = _content_length_body(self.hr, strategy)
        self._drained = False
        if path == "readinto":
            self._readinto1 = self.bio.readinto1
            self.read = self._readinto
        elif path == "recv_into":
            self.sock = _socket_of(self.bio)
            self.read = self._recv_into
        else:  # pragma: no cover - validated before
            raise StrategyError(f"unknown read_path {path!r}")

    def _read1(self, view: memoryview) -> int:
        data = self.hr.read1(len(view))
        n = len(data)
        view[:n] = data
        return n

    def _drain_first(self, view: memoryview) -> int:
        """First read of a body: the bytes http.client buffered with the headers, alone.

        BufferedReader.readinto1 returns what it holds *plus* one raw read, and a raw socket read
        would skip what it holds; Go's bufio.Reader returns only what it holds. After this, every
        read is exactly one read of the socket (one TLS record under TLS).
        """
        self._drained = True
        pending = len(self.bio.peek(1))  # one raw read if nothing is buffered; b"" at EOF
        return int(self.bio.readinto1(view[:pending]))

    def _account(self, n: int) -> int:
        self.remaining -= n
        self.consumed += n
        return n

    def _readinto(self, view: memoryview) -> int:
        if self.remaining <= 0:
            return 0
        view = view[: self.remaining]
        return self._account(self._readinto1(view) if self._drained else self._drain_first(view))

    def _recv_into(self, view: memoryview) -> int:
        if self.remaining <= 0:
            return 0
        view = view[: self.remaining]
        return self._account(self.sock.recv_into(view) if self._drained
                             else self._drain_first(view))

    def finish(self) -> None:
        # read1 went through http.client, which already counted the bytes (consumed=0 here).
        _finish_body(self.response, self.hr, 0 if self.path == "read1" else self.consumed)


def _socket_of(bio: Any) -> socket.socket:
    raw = getattr(bio, "raw", None)
    sock = getattr(raw, "_sock", None)
    if not isinstance(sock, socket.socket):
        raise StrategyError("cannot reach the connection's socket under http.client's stream")
    return sock


class _HashWorker:
    """A helper thread that hashes buffers handed to it, with a fixed number of slots in flight.

    ``acquire()`` returns a free slot index (blocks while all are being hashed), ``submit(i, view)``
    hands a filled slot over; the thread frees the slot after hashing. ``hashlib`` releases the GIL
    while hashing more than 2 KiB, so the copy loop's socket reads and file writes overlap it.
    """

    def __init__(self, hasher: Any, slots: int, meter: Meter) -> None:
        self.hasher = hasher
        self.meter = meter
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.work: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
        for i in range(slots):
            self.free.put(i)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pullbench-hash", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        probe = ThreadProbe() if self.meter.active else None
        update = self.hasher.update
        try:
            while True:
                item = self.work.get()
                if item is None:
                    break
                update(item[1])
                self.free.put(item[0])
        except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
            self.error = exc
        finally:
            if probe is not None:
                self.meter.add_cpu(probe.stop())

    def close(self) -> Any:
        self.work.put(None)
        self.thread.join()
        if self.error is not None:  # pragma: no cover
            raise self.error
        return self.hasher


# ----------------------------------------------------------------------------- strategies


class SocketCopy(CopyStrategy):
    """Short reads from the connection, then per-read, bufio-coalesced or filled writes.

    The general strategy behind ``go-iocopy``, ``pr48602``, ``pools-bufio32k`` and
    ``containerd-1m``; registered as ``tunable`` to combine the dimensions freely.

    Parameters
    ----------
    read_path : {"readinto", "read1", "recv_into"}
        See the module docstring.
    read_size : int
        Copy-buffer size: the most one read may return (bytes).
    write_mode : {"per-read", "bufio", "fill"}
    write_size : int
        Size of the write buffer for ``bufio`` and ``fill`` (bytes; ignored for ``per-read``).
    hash_mode : {"inline", "on-read", "thread", "after"}
    """

    name = "tunable"
    mirrors = "(parameterized; see the presets)"
    defaults: ClassVar[Mapping[str, Any]] = {
        "read_path": "readinto",
        "read_size": 32 * KiB,
        "write_mode": "per-read",
        "write_size": 32 * KiB,
        "hash_mode": "inline",
    }

    def validate(self) -> None:
        p = self.params
        _choice(self.name, "read_path", p["read_path"], READ_PATHS)
        _choice(self.name, "write_mode", p["write_mode"], WRITE_MODES)
        _choice(self.name, "hash_mode", p["hash_mode"], HASH_MODES)
        _size(self.name, "read_size", p["read_size"])
        _size(self.name, "write_size", p["write_size"])

    def buffer_bytes(self) -> int:
        p = self.params
        mode, r, w = p["write_mode"], p["read_size"], p["write_size"]
        if mode == "fill":
            per = w
            return int(per) * (_HASH_SLOTS if p["hash_mode"] == "thread" else 1)
        per = r * (_HASH_SLOTS if p["hash_mode"] == "thread" else 1)
        return int(per) + (int(w) if mode == "bufio" else 0)

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        p = self.params
        reader = _Reader(response, p["read_path"], self.name)
        hash_mode = p["hash_mode"]
        worker = _HashWorker(hasher, _HASH_SLOTS, meter) if hash_mode == "thread" else None
        try:
            if p["write_mode"] == "fill":
                self._fill(
                    reader, fd, meter, limit, hasher if hash_mode in _IN_LOOP else None, worker
                )
            else:
                self._stream(
                    reader, fd, meter, limit, hasher if hash_mode in _IN_LOOP else None, worker
                )
        finally:
            if worker is not None:
                worker.close()
        reader.finish()
        return None if hash_mode == "after" else hasher

    def _stream(
        self,
        reader: _Reader,
        fd: int,
        meter: Meter,
        limit: int,
        hasher: Any,
        worker: _HashWorker | None,
    ) -> None:
        p = self.params
        read_size = p["read_size"]
        bufio = p["write_mode"] == "bufio"
        slots = [memoryview(bytearray(read_size)) for _ in range(_HASH_SLOTS if worker else 1)]
        wsize = p["write_size"]
        wbuf = memoryview(bytearray(wsize)) if bufio else None
        buffered = 0
        read = reader.read
        reads = meter.reads
        count = meter.active
        write = meter.write
        update = hasher.update if hasher is not None else None
        total = 0
        slot = 0
        while total < limit:
            if worker is not None:
                slot = worker.free.get()
            view = slots[slot]
            want = limit - total
            n = read(view if want >= read_size else view[:want])
            if n == 0:
                break
            total += n
            if count:
                reads[n] += 1
            data = view[:n]
            if update is not None:
                update(data)
            elif worker is not None:
                worker.work.put((slot, data))
            if wbuf is None:
                write(fd, data)
                continue
            # golang/go:src/bufio/bufio.go (*Writer).Write
            while len(data) > wsize - buffered:
                if buffered == 0:
                    write(fd, data)  # large write, empty buffer: write directly
                    data = data[:0]
                    break
                room = wsize - buffered
                wbuf[buffered:] = data[:room]
                write(fd, wbuf)
                buffered = 0
                data = data[room:]
            m = len(data)
            if m:
                wbuf[buffered : buffered + m] = data
                buffered += m
        if wbuf is not None and buffered:
            write(fd, wbuf[:buffered])

    def _fill(
        self,
        reader: _Reader,
        fd: int,
        meter: Meter,
        limit: int,
        hasher: Any,
        worker: _HashWorker | None,
    ) -> None:
        # containerd/containerd:core/content/helpers.go copyWithBuffer:
        # io.ReadAtLeast(src, buf, len(buf))
        # then one Write of what was read; the content writer hashes each Write (inline).
        p = self.params
        read_size, wsize = p["read_size"], p["write_size"]
        slots = [memoryview(bytearray(wsize)) for _ in range(_HASH_SLOTS if worker else 1)]
        read = reader.read
        reads = meter.reads
        count = meter.active
        write = meter.write
        on_read = hasher.update if hasher is not None and p["hash_mode"] == "on-read" else None
        update = hasher.update if hasher is not None and on_read is None else None
        total = 0
        eof = False
        slot = 0
        while not eof and total < limit:
            if worker is not None:
                slot = worker.free.get()
            buf = slots[slot]
            filled = 0
            cap = min(wsize, limit - total)
            while filled < cap:
                n = read(buf[filled : min(cap, filled + read_size)])
                if n == 0:
                    eof = True
                    break
                if count:
                    reads[n] += 1
                if on_read is not None:
                    on_read(buf[filled : filled + n])
                filled += n
            if filled == 0:
                if worker is not None:
                    worker.free.put(slot)
                break
            total += filled
            data = buf[:filled]
            if update is not None:
                update(data)
            elif worker is not None:
                worker.work.put((slot, data))
            write(fd, data)


class IterContentCopy(CopyStrategy):
    """The common Python idiom ``for chunk in r.iter_content(chunk_size): f.write(chunk)``.

    Reads through urllib3's ``HTTPResponse.stream(chunk_size)`` — what ``iter_content`` calls
    (psf/requests:src/requests/models.py ``iter_content``) — with ``decode_content=False``:
    ``iter_content`` itself passes ``decode_content=True`` and would gunzip a body sent with
    ``Content-Encoding: gzip``, changing the bytes that must be hashed. urllib3's ``read(amt)``
    accumulates until exactly ``amt`` bytes are there (urllib3/urllib3:src/urllib3/response.py),
    so every chunk but the last is ``chunk_size``. The default 8192 is the value most published
    examples use. One write per chunk.

    Parameters
    ----------
    chunk_size : int
    hash_mode : {"inline", "on-read", "thread", "after"}
        ``on-read`` is the same as ``inline`` here.
    """

    name = "requests-iter-content"
    mirrors = "psf/requests:src/requests/models.py Response.iter_content (urllib3 read(amt))"
    defaults: ClassVar[Mapping[str, Any]] = {"chunk_size": 8192, "hash_mode": "inline"}

    def validate(self) -> None:
        _size(self.name, "chunk_size", self.params["chunk_size"])
        _choice(self.name, "hash_mode", self.params["hash_mode"], HASH_MODES)

    def buffer_bytes(self) -> int:
        slots = _HASH_SLOTS if self.params["hash_mode"] == "thread" else 1
        return int(self.params["chunk_size"]) * slots

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        mode = self.params["hash_mode"]
        worker = _HashWorker(hasher, _HASH_SLOTS, meter) if mode == "thread" else None
        update = hasher.update if mode in _IN_LOOP else None
        reads = meter.reads
        count = meter.active
        write = meter.write
        total = 0
        try:
            for chunk in response.raw.stream(self.params["chunk_size"], decode_content=False):
                n = len(chunk)
                if count:
                    reads[n] += 1
                if update is not None:
                    update(chunk)
                elif worker is not None:
                    worker.work.put((worker.free.get(), chunk))
                write(fd, chunk)
                total += n
                if total >= limit:
                    break
        finally:
            if worker is not None:
                worker.close()
        return None if mode == "after" else hasher


class CopyfileobjCopy(CopyStrategy):
    """``shutil.copyfileobj(r.raw, f, chunk_size)``, hashing in the file object's ``write``.

    Mirrors python/cpython:Lib/shutil.py ``copyfileobj`` (``buf = fsrc.read(length)`` then
    ``fdst.write(buf)``) over urllib3's raw response (requests sets ``decode_content=False``, so
    the bytes are raw). Default ``chunk_size`` is ``shutil.COPY_BUFSIZE`` (64 KiB on Linux).

    Parameters
    ----------
    chunk_size : int
    """

    name = "copyfileobj"
    mirrors = "python/cpython:Lib/shutil.py copyfileobj(r.raw, f, COPY_BUFSIZE)"
    defaults: ClassVar[Mapping[str, Any]] = {
        "chunk_size": getattr(shutil, "COPY_BUFSIZE", 64 * KiB)
    }

    def validate(self) -> None:
        _size(self.name, "chunk_size", self.params["chunk_size"])

    def buffer_bytes(self) -> int:
        return int(self.params["chunk_size"])

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        raw = response.raw

        class _Src:
            remaining = limit

            def read(self, n: int = -1, /) -> bytes:
                if self.remaining <= 0:
                    return b""
                want = self.remaining if n < 0 else min(n, self.remaining)
                data = raw.read(want, decode_content=False)
                self.remaining -= len(data)
                meter.read(len(data))
                return data

        class _Dst:
            def write(self, data: bytes) -> int:
                hasher.update(data)
                return meter.write(fd, data)

        shutil.copyfileobj(_Src(), _Dst(), self.params["chunk_size"])
        return hasher


class SpliceCopy(CopyStrategy):
    """Linux zero-copy: ``os.splice`` socket → pipe → file; digest by re-reading the file.

    The bytes never enter user space, so they cannot be hashed on the way; the file is re-read
    after the copy (page-cache reads) and hashed. Only for plain-HTTP bodies with a
    ``Content-Length`` (a TLS socket's plaintext exists only in user space). Whatever http.client
    already buffered is written with ``os.write`` first. Reads are ``splice(socket→pipe)`` calls and
    writes are ``splice(pipe→file)`` calls (``strace -e trace=write`` does not see them).

    Parameters
    ----------
    chunk_size : int
        ``len`` of each socket → pipe splice (bytes).
    pipe_size : int
        Pipe capacity set with ``F_SETPIPE_SZ`` (bounded by ``/proc/sys/fs/pipe-max-size``).
    """

    name = "splice"
    mirrors = "Linux splice(2) (os.splice): socket → pipe → file, as zero-copy servers/proxies do"
    defaults: ClassVar[Mapping[str, Any]] = {"chunk_size": 1 * MiB, "pipe_size": 1 * MiB}

    def validate(self) -> None:
        if not hasattr(os, "splice"):
            raise StrategyError("strategy 'splice' needs Linux os.splice (Python ≥ 3.10 on Linux)")
        _size(self.name, "chunk_size", self.params["chunk_size"])
        _size(self.name, "pipe_size", self.params["pipe_size"])

    def buffer_bytes(self) -> int:
        return int(self.params["pipe_size"]) + _REHASH_CHUNK

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        hr = _http_response(response)
        bio, remaining = _content_length_body(hr, self.name)
        sock = _socket_of(bio)
        if isinstance(sock, ssl.SSLSocket):
            raise StrategyError(
                "strategy 'splice' cannot read a TLS connection (the plaintext exists only "
                "in user space); use it with plain HTTP, or pick go-iocopy / containerd-1m"
            )
        budget = min(remaining, limit)
        consumed = 0
        if budget > 0:
            pending = bio.peek(1)[:budget]
            if pending:
                got = bio.read1(len(pending))
                meter.read(len(got))
                meter.write(fd, got)
                consumed += len(got)
        r, w = os.pipe()
        try:
            _set_pipe_size(w, self.params["pipe_size"])
            sfd = sock.fileno()
            timeout = sock.gettimeout()
            chunk = self.params["chunk_size"]
            poller = select.poll()
            poller.register(sfd, select.POLLIN)
            while consumed < budget:
                try:
                    n = os.splice(sfd, w, min(chunk, budget - consumed))
                except BlockingIOError:
                    if not poller.poll(None if timeout is None else timeout * 1000):
                        raise TimeoutError("socket read timed out during splice") from None
                    continue
                if n == 0:
                    break
                meter.read(n)
                consumed += n
                left = n
                while left:
                    m = os.splice(r, fd, left)
                    meter.wrote(m)
                    left -= m
        finally:
            os.close(r)
            os.close(w)
        _finish_body(response, hr, consumed)
        return None


def _set_pipe_size(fd: int, size: int) -> int:
    """``F_SETPIPE_SZ`` to ``size``, else to ``/proc/sys/fs/pipe-max-size``; return the size."""
    f_setpipe_sz = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        return fcntl.fcntl(fd, f_setpipe_sz, size)
    except OSError:
        pass
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        return fcntl.fcntl(fd, f_setpipe_sz, min(size, limit))
    except (OSError, ValueError):
        logger.debug("could not set the pipe size to %d; using the default", size)
        return 0


def _choice(strategy: str, key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise StrategyError(
            f"strategy {strategy!r}: {key}={value!r} is not one of {', '.join(options)}"
        )


def _size(strategy: str, key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_BUFFER:
        raise StrategyError(
            f"strategy {strategy!r}: {key}={value!r} must be a positive number of bytes "
            f"≤ {_MAX_BUFFER}"
        )


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: Callable[..., CopyStrategy]
    defaults: Mapping[str, Any]
    mirrors: str
    description: str


_REGISTRY: dict[str, _Entry] = {}
_REG_LOCK = threading.Lock()


def register_strategy(
    cls_or_factory: Callable[..., CopyStrategy],
    name: str | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    mirrors: str | None = None,
    description: str | None = None,
    replace: bool = False,
) -> Callable[..., CopyStrategy]:
    """Make a strategy available by name to :func:`get_strategy`, :func:`pull` and the CLI.

    Parameters
    ----------
    cls_or_factory : CopyStrategy subclass or callable
        A subclass (its ``name``, ``mirrors``, ``defaults`` and docstring are used unless given
        here), or a callable taking keyword parameters and returning a :class:`CopyStrategy`.
    name : str, optional
        Registry name; required for a plain factory.
    defaults : mapping, optional
        Parameter defaults (for a factory: its keyword defaults if omitted).
    mirrors, description : str, optional
    replace : bool
        Allow replacing an existing name.

    Returns
    -------
    The object registered (usable as a class decorator).

    Raises
    ------
    StrategyError
        Missing name, or the name is taken and ``replace`` is false.
    """
    is_class = isinstance(cls_or_factory, type) and issubclass(cls_or_factory, CopyStrategy)
    if is_class:
        cls: Any = cls_or_factory
        name = name or cls.name
        if defaults is None:
            defaults = dict(cls.defaults)
        mirrors = mirrors if mirrors is not None else cls.mirrors
        doc = inspect.getdoc(cls) or ""
        description = (
            description if description is not None else doc.split("\n\n")[0].replace("\n", " ")
        )
        preset_name = name

        def factory(**params: Any) -> CopyStrategy:
            obj = cls(**params)
            if obj.name != preset_name:
                obj.name = preset_name
            return obj  # type: ignore[no-any-return]
    else:
        if not name:
            raise StrategyError("register_strategy(factory, name=...) needs a name for a factory")
        factory = cls_or_factory
        if defaults is None:
            sig = inspect.signature(cls_or_factory)
            defaults = {
                k: p.default
                for k, p in sig.parameters.items()
                if p.default is not inspect.Parameter.empty
            }
        description = description or (inspect.getdoc(cls_or_factory) or "").split("\n\n")[0]
        mirrors = mirrors or ""
    if not name or not isinstance(name, str):
        raise StrategyError("a strategy needs a non-empty name")
    with _REG_LOCK:
        if name in _REGISTRY and not replace:
            raise StrategyError(
                f"strategy {name!r} is already registered; pass replace=True to replace it"
            )
        _REGISTRY[name] = _Entry(factory, dict(defaults), mirrors or "", description or "")
    return cls_or_factory


def _preset(
    cls: type[CopyStrategy], name: str, mirrors: str, description: str, **overrides: Any
) -> None:
    base = dict(cls.defaults)
    preset_defaults = {**base, **overrides}

    def factory(**params: Any) -> CopyStrategy:
        unknown = sorted(set(params) - set(preset_defaults))
        if unknown:
            raise StrategyError(
                f"strategy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(preset_defaults))}"
            )
        try:
            obj = cls(**{**preset_defaults, **params})
        except StrategyError as exc:
            # the class validates under its own name ('tunable'); the user typed the preset's
            raise StrategyError(str(exc).replace(f"strategy {cls.name!r}", f"strategy {name!r}",
                                                 1)) from None
        obj.name = name  # type: ignore[misc]
        return obj

    register_strategy(
        factory, name, defaults=preset_defaults, mirrors=mirrors, description=description
    )


def get_strategy(name: str, **params: Any) -> CopyStrategy:
    """Build a registered strategy with its defaults overridden by ``params``.

    Parameters
    ----------
    name : str
        A name from :func:`list_strategies` (e.g. ``"go-iocopy"``).
    **params
        Parameter overrides, e.g. ``read_size=16384``.

    Raises
    ------
    StrategyError
        Unknown name (the message lists the registered ones), unknown parameter (lists the valid
        ones) or an invalid value.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise StrategyError(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    unknown = sorted(set(params) - set(entry.defaults))
    if unknown:
        raise StrategyError(
            f"strategy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(entry.defaults)) or '(none)'}"
        )
    for key, value in list(params.items()):
        default = entry.defaults[key]
        if isinstance(value, str) and not isinstance(default, str):
            # a size typed as text (--param, YAML): parse it here so errors name `name`
            params[key] = _coerce_param(name, key, value, default)
    try:
        strategy = entry.factory(**params)
    except StrategyError:
        raise
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"strategy {name!r}: {exc}") from None
    if not isinstance(strategy, CopyStrategy):
        raise StrategyError(
            f"factory for {name!r} returned {type(strategy).__name__}, not a CopyStrategy"
        )
    return strategy


def list_strategies() -> list[StrategyInfo]:
    """Every registered strategy with its default parameters and what it mirrors, sorted by name."""
    return [
        StrategyInfo(n, dict(e.defaults), e.mirrors, e.description)
        for n, e in sorted(_REGISTRY.items())
    ]


_SUFFIXES = {"k": KiB, "ki": KiB, "kib": KiB, "m": MiB, "mi": MiB, "mib": MiB}


def parse_param_value(name: str, key: str, text: str) -> Any:
    """Convert a ``--param key=value`` string to the type of the strategy's default for ``key``.

    Integers accept ``0x`` prefixes and the suffixes ``k``/``Ki``/``KiB``/``M``/``Mi``/``MiB``
    (powers of 1024), e.g. ``512Ki``.

    Raises
    ------
    StrategyError
        Unknown strategy or key, or a value that does not parse.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise StrategyError(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    if key not in entry.defaults:
        raise StrategyError(
            f"strategy {name!r} has no parameter {key!r}; "
            f"valid: {', '.join(sorted(entry.defaults)) or '(none)'}"
        )
    return _coerce_param(name, key, text, entry.defaults[key])


#: The integer forms :func:`parse_param_value` accepts, quoted in its error messages.
SIZE_FORMATS = ("32768, 0x8000, or a size with a binary suffix: 64k = 64Ki = 64KiB = 65536, "
                "1M = 1Mi = 1MiB = 1048576")


def _coerce_param(name: str, key: str, text: str, default: Any) -> Any:
    """``text`` converted to the type of ``default`` (errors name strategy ``name``)."""
    if isinstance(default, bool):
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise StrategyError(f"strategy {name!r}: {key}={text!r} is not a boolean")
    if isinstance(default, int):
        t = text.strip().lower()
        mult = 1
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if t.endswith(suffix) and not t.startswith("0x"):
                mult, t = _SUFFIXES[suffix], t[: -len(suffix)]
                break
        try:
            return int(t, 0) * mult
        except ValueError:
            raise StrategyError(
                f"strategy {name!r}: {key}={text!r} is not an integer number of bytes; "
                f"accepted: {SIZE_FORMATS}"
            ) from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise StrategyError(f"strategy {name!r}: {key}={text!r} is not a number") from None
    return text


# ----------------------------------------------------------------------------- presets

register_strategy(
    SocketCopy,
    "tunable",
    description=("Any combination of read path, read size, write coalescing and hash location."),
)
_preset(
    SocketCopy,
    "go-iocopy",
    "moby/moby:distribution/pull_v2.go io.Copy(tmpFile, io.TeeReader(body, verifier)); "
    "golang/go:src/io/io.go copyBuffer (32 KiB)",
    "dockerd's legacy pull: 32 KiB short reads, one write per read, digest inline (TeeReader).",
    read_path="readinto",
    read_size=32 * KiB,
    write_mode="per-read",
    write_size=32 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "pr48602",
    "moby/moby#48602: 512 KiB copy buffer + 512 KiB bufio.Writer with io.Copy's ReaderFrom "
    "shortcut removed (golang/go:src/bufio/bufio.go)",
    "The PR: short reads up to 512 KiB, coalesced into 512 KiB writes, digest inline.",
    read_path="readinto",
    read_size=512 * KiB,
    write_mode="bufio",
    write_size=512 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "pools-bufio32k",
    "moby/moby#48605 / the #48602 review: pooled 32 KiB copy buffer + pooled 32 KiB bufio.Writer "
    "(moby/moby:pkg/pools/pools.go)",
    "Reviewer's proposal: 32 KiB short reads into a 32 KiB bufio writer, digest inline.",
    read_path="readinto",
    read_size=32 * KiB,
    write_mode="bufio",
    write_size=32 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "containerd-1m",
    "containerd/containerd:core/content/helpers.go copyWithBuffer: io.ReadAtLeast into a pooled "
    "1 MiB buffer, then Write (containerd/containerd#4653)",
    "containerd's content.Copy: fill 1 MiB with short reads, one 1 MiB write, digest per write.",
    read_path="readinto",
    read_size=1 * MiB,
    write_mode="fill",
    write_size=1 * MiB,
    hash_mode="inline",
)
register_strategy(IterContentCopy)
register_strategy(CopyfileobjCopy)
register_strategy(SpliceCopy)
