"""The strategy classes: socket short reads (Go-like), urllib3 accumulation, copyfileobj, splice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import requests

from ..._errors import StrategyError
from .._probes import Meter
from ._base import (
    _HASH_SLOTS,
    _IN_LOOP,
    _INTERRUPTIONS,
    _REHASH_CHUNK,
    HASH_MODES,
    READ_PATHS,
    WRITE_MODES,
    CopyStrategy,
    KiB,
    MiB,
    _choice,
    _HashWorker,
    _size,
)
from ._readpaths import _content_length_body, _finish_body, _http_response, _Reader, _socket_of

__all__ = ["CopyfileobjCopy", "IterContentCopy", "SocketCopy", "SpliceCopy"]

logger = logging.getLogger(__name__)




def _kib(n: int) -> str:
    """A byte size as ``--param`` takes it: ``64k``, ``1m``, or plain bytes."""
    for unit, factor in (("m", MiB), ("k", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


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

    def ineffective_params(self) -> dict[str, str]:
        """``write_size`` with per-read writes or bufio below ``read_size``; ``read_size`` above a
        fill buffer; ``hash_mode=on-read`` outside fill mode (see the class docstring)."""
        p = self.params
        mode, r, w = p["write_mode"], p["read_size"], p["write_size"]
        out: dict[str, str] = {}
        if mode == "per-read":
            out["write_size"] = ("write_mode=per-read writes exactly what each read returned; "
                                 "write_size is used only by write_mode=bufio or fill")
        elif mode == "bufio" and w < r:
            out["write_size"] = (
                f"write_size {_kib(w)} < read_size {_kib(r)} with write_mode=bufio: a read "
                "longer than the free buffer space goes straight to write() once the buffer is "
                "empty (Go's bufio.Writer.Write, golang/go:src/bufio/bufio.go), so the writes "
                f"follow the read sizes and only reads shorter than {_kib(w)} are coalesced; "
                f"set read_size <= write_size (e.g. read_size={_kib(w)}) for {_kib(w)} writes")
        elif mode == "fill" and r > w:
            out["read_size"] = (
                f"read_size {_kib(r)} > write_size {_kib(w)} with write_mode=fill: reads fill a "
                f"write_size buffer, so none is longer than {_kib(w)} (containerd's "
                "io.ReadAtLeast into its buffer); raise write_size instead")
        if p["hash_mode"] == "on-read" and mode != "fill":
            out["hash_mode"] = ("hash_mode=on-read hashes each read, which without "
                                "write_mode=fill is each write: the same as inline")
        return out

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
        now = time.perf_counter_ns
        hash_ns = 0
        total = 0
        slot = 0
        try:
            while total < limit:
                if worker is not None:
                    slot = worker.free.get()
                view = slots[slot]
                want = limit - total
                try:
                    n = read(view if want >= read_size else view[:want])
                except _INTERRUPTIONS:
                    if wbuf is not None and buffered:  # keep what arrived: a resume continues
                        write(fd, wbuf[:buffered])
                    raise
                if n == 0:
                    break
                total += n
                if count:
                    reads[n] += 1
                data = view[:n]
                if update is not None:
                    if count:
                        t0 = now()
                        update(data)
                        hash_ns += now() - t0
                    else:
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
        finally:
            if update is not None:
                meter.hashed(hash_ns)
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
        now = time.perf_counter_ns
        hash_ns = 0
        total = 0
        eof = False
        slot = 0
        try:
            while not eof and total < limit:
                if worker is not None:
                    slot = worker.free.get()
                buf = slots[slot]
                filled = 0
                cap = min(wsize, limit - total)
                while filled < cap:
                    try:
                        n = read(buf[filled : min(cap, filled + read_size)])
                    except _INTERRUPTIONS:
                        if filled:  # keep what arrived: a resume continues there
                            write(fd, buf[:filled])
                        raise
                    if n == 0:
                        eof = True
                        break
                    if count:
                        reads[n] += 1
                    if on_read is not None:
                        if count:
                            t0 = now()
                            on_read(buf[filled : filled + n])
                            hash_ns += now() - t0
                        else:
                            on_read(buf[filled : filled + n])
                    filled += n
                if filled == 0:
                    if worker is not None:
                        worker.free.put(slot)
                    break
                total += filled
                data = buf[:filled]
                if update is not None:
                    if count:
                        t0 = now()
                        update(data)
                        hash_ns += now() - t0
                    else:
                        update(data)
                elif worker is not None:
                    worker.work.put((slot, data))
                write(fd, data)
        finally:
            if on_read is not None or update is not None:
                meter.hashed(hash_ns)

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

    def ineffective_params(self) -> dict[str, str]:
        """``hash_mode=on-read``: each chunk is one write, so it is the same as inline."""
        if self.params["hash_mode"] == "on-read":
            return {"hash_mode": "hash_mode=on-read is the same as inline here: every chunk is "
                                 "read, hashed and written once"}
        return {}

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        mode = self.params["hash_mode"]
        worker = _HashWorker(hasher, _HASH_SLOTS, meter) if mode == "thread" else None
        update = hasher.update if mode in _IN_LOOP else None
        reads = meter.reads
        count = meter.active
        write = meter.write
        now = time.perf_counter_ns
        hash_ns = 0
        total = 0
        try:
            for chunk in response.raw.stream(self.params["chunk_size"], decode_content=False):
                n = len(chunk)
                if count:
                    reads[n] += 1
                if update is not None:
                    if count:
                        t0 = now()
                        update(chunk)
                        hash_ns += now() - t0
                    else:
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
            if update is not None:
                meter.hashed(hash_ns)
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

        now = time.perf_counter_ns

        class _Dst:
            hash_ns = 0

            def write(self, data: bytes) -> int:
                t0 = now()
                hasher.update(data)
                self.hash_ns += now() - t0
                return meter.write(fd, data)

        dst = _Dst()
        try:
            shutil.copyfileobj(_Src(), dst, self.params["chunk_size"])
        finally:
            meter.hashed(dst.hash_ns)
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
            now = time.perf_counter_ns
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
                    t0 = now()
                    m = os.splice(r, fd, left)
                    meter.wrote(m, now() - t0)
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


