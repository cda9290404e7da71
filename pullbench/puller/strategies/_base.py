"""Copy-strategy records and the base class: temp file, size and digest check, rename.

Also the hashing helper thread and the parameter checks every strategy shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import requests
import urllib3

from ..._errors import BlobError, DigestMismatch, SizeMismatch, StrategyError
from ..._sizes import SIZE_FORMATS
from .._probes import Meter, ProbeSample, ThreadProbe, median_of_counts, power_of_two_histogram

__all__ = ["CopyStats", "CopyStrategy", "StrategyInfo"]

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
        was not metered (a :class:`~pullbench.puller._probes.NullMeter`, i.e. ``probes=False``).
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
            :class:`~pullbench.puller._probes.NullMeter` counts nothing: the returned sizes and
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


