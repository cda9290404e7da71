"""What lets a blob copy survive faults: a locked temp file that a later pull can resume, the
cleaning of a killed pull's leftovers, and a watchdog for slow bodies and cancellation.

Temp files are ``.<encoded digest>.partial`` beside the blob's final path, held with an
exclusive ``flock`` for as long as a copy writes them: a pull killed with SIGKILL leaves one
behind (the kernel drops the lock), the next pull into the same store finds it unlocked and
resumes from it (its bytes are re-hashed, and the whole blob's digest is checked as always), and
:func:`clean_stale_partials` removes the ones no pull needs. A file locked by a live pull is never
touched; a second pull copying the same blob at the same time writes a private temp file instead.

The :class:`Watchdog` implements a low-speed limit as curl's ``--speed-limit/--speed-time``
(curl/curl:lib/progress.c ``Curl_speedcheck``): a body averaging fewer than ``speed_limit``
bytes per second over the last ``speed_time`` seconds is cut, by shutting its socket down, so
the read blocked in the copy loop returns at once. Progress is the bytes the kernel received on
the connection (``TCP_INFO`` ``tcpi_bytes_received``, Linux ≥ 4.1): it counts what arrived
whatever the strategy's read path (``splice`` never brings bytes to user space) and however its
writes are coalesced; without it, the size of the temp file. The same shutdown stops a copy at
once when the pull is cancelled (Ctrl-C).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from ..._errors import BlobError

__all__ = ["PartialFile", "Watchdog", "clean_stale_partials", "response_socket",
           "write_atomically"]

logger = logging.getLogger(__name__)

_SUFFIX = ".partial"
_TCPI_BYTES_RECEIVED = 128  # offset in struct tcp_info (include/uapi/linux/tcp.h)


def partial_name(dest: Path) -> str:
    """The resumable temp file's name for the blob stored at ``dest``."""
    return f".{dest.name}{_SUFFIX}"


def _lock(fd: int, *, wait: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


class PartialFile:
    """An exclusively locked temp file beside a blob's final path.

    Attributes
    ----------
    fd : int
        Open for reading and writing.
    path : Path
    reused_bytes : int
        Bytes left by an earlier, killed copy (0 for a new file).
    """

    def __init__(self, fd: int, path: Path, reused_bytes: int) -> None:
        self.fd = fd
        self.path = path
        self.reused_bytes = reused_bytes

    @classmethod
    def claim(cls, dest: Path, expected_size: int) -> PartialFile:
        """Lock ``.<name>.partial`` beside ``dest`` (reusing what a killed pull left), or a
        private temp file when a live pull holds that one.

        Raises
        ------
        BlobError
            The file could not be claimed (it kept disappearing under a concurrent clean-up).
        """
        path = dest.with_name(partial_name(dest))
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if not _lock(fd, wait=False):
                os.close(fd)
                fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                            suffix=_SUFFIX)
                _lock(fd, wait=True)
                return cls(fd, Path(name), 0)
            try:
                same = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by a clean-up between our open and our lock
                os.close(fd)
                continue
            size = os.fstat(fd).st_size
            if size > expected_size:
                os.ftruncate(fd, 0)
                size = 0
            os.lseek(fd, size, os.SEEK_SET)
            return cls(fd, path, size)
        raise BlobError(f"could not claim a temp file for {dest}: it kept disappearing")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def restart(self) -> None:
        """Empty the file and write from byte 0 again."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def resume_at(self, offset: int) -> None:
        """Cut the file to ``offset`` bytes and write from there."""
        os.ftruncate(self.fd, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)

    def commit(self, dest: Path) -> None:
        """Rename into place (still locked), then release."""
        self.path.replace(dest)
        os.close(self.fd)
        self.fd = -1

    def discard(self) -> None:
        """Remove the file (still locked), then release; no temp file stays behind."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def write_atomically(path: Path, data: bytes) -> None:
    """Write a small file through a locked temp file and an atomic rename (so neither a reader
    nor :func:`clean_stale_partials` of another pull ever sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_SUFFIX)
    try:
        _lock(fd, wait=True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        Path(name).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(name).unlink()
        raise
    finally:
        os.close(fd)


def clean_stale_partials(root: Path, keep: Iterable[str] = ()) -> list[Path]:
    """Remove the temp files a killed pull left in the content store ``root``.

    Parameters
    ----------
    root : Path
        The store (``<root>/blobs/<algorithm>/`` and ``<root>`` itself are searched).
    keep : iterable of str
        Temp-file names to leave for resuming (:func:`partial_name` of the blobs about to be
        copied).

    Returns
    -------
    list of Path
        The files removed. Files locked by a live pull are never touched.
    """
    keep = set(keep)
    removed: list[Path] = []
    folders = [root, *sorted(p for p in (root / "blobs").glob("*") if p.is_dir())]
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{_SUFFIX}"):
            if path.name in keep:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if _lock(fd, wait=False):
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
    if removed:
        logger.info("removed %d stale temp file(s) left by an interrupted pull in %s",
                    len(removed), root)
    return removed


def response_socket(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed requests response (urllib3's connection, else http.client's
    stream), or None."""
    raw = response.raw
    conn = getattr(raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    bio = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(bio, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _bytes_received(sock: socket.socket) -> int | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_BYTES_RECEIVED + 8:
        return None
    return int(struct.unpack_from("=Q", info, _TCPI_BYTES_RECEIVED)[0])


class Watchdog:
    """Cut a blob body that is too slow, or at once when ``cancel`` is set.

    Parameters
    ----------
    speed_limit_bytes_s : int
        0 turns the speed check off (cancellation still works).
    speed_time_s : float
    cancel : threading.Event or None

    Attributes
    ----------
    tripped : str or None
        ``"slow"`` (the message in :attr:`reason`) or ``"cancelled"`` once the body was cut.
    """

    def __init__(self, speed_limit_bytes_s: int, speed_time_s: float,
                 cancel: threading.Event | None) -> None:
        self.limit = speed_limit_bytes_s
        self.window = speed_time_s
        self.cancel = cancel
        self.tripped: str | None = None
        self.reason = ""
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, response: requests.Response, fd: int) -> None:
        """Start watching one response (whose body is copied into ``fd``)."""
        self.tripped = None
        self._done.clear()
        sock = response_socket(response)
        if sock is None:
            return
        self._thread = threading.Thread(target=self._run, args=(sock, fd), daemon=True,
                                        name="pullbench-watchdog")
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (waits for the watchdog thread)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _progress(self, sock: socket.socket, fd: int) -> int:
        got = _bytes_received(sock)
        if got is not None:
            return got
        try:
            return os.fstat(fd).st_size
        except OSError:
            return 0

    def _run(self, sock: socket.socket, fd: int) -> None:
        tick = min(0.1, self.window / 4)
        samples: collections.deque[tuple[float, int]] = collections.deque()
        samples.append((time.monotonic(), self._progress(sock, fd)))
        while not self._done.wait(tick):
            if self.cancel is not None and self.cancel.is_set():
                self._cut(sock, "cancelled")
                return
            if self.limit <= 0:
                continue
            now, got = time.monotonic(), self._progress(sock, fd)
            samples.append((now, got))
            while len(samples) > 2 and samples[1][0] <= now - self.window:
                samples.popleft()
            t0, b0 = samples[0]
            if now - t0 >= self.window and got - b0 < self.limit * (now - t0):
                self.reason = (f"{got - b0} bytes in the last {now - t0:.1f} s, under the "
                               f"low-speed limit of {self.limit} bytes/s over {self.window:g} s")
                self._cut(sock, "slow")
                return

    def _cut(self, sock: socket.socket, why: str) -> None:
        self.tripped = why
        # socket.socket.shutdown, not SSLSocket.shutdown (which would unwrap TLS under the
        # reading thread): the blocked read returns at once, with EOF or an error
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def describe(exc: Any) -> str:
    return type(exc).__name__ + (f": {str(exc)[:120]}" if str(exc) else "")
