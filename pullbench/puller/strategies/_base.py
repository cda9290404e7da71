"""Copy-strategy records and the base class: temp file, size and digest check, rename.

Also the hashing helper thread and the parameter checks every strategy shares.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import requests
import urllib3

from ..._errors import BlobError, CopyCancelled, DigestMismatch, SizeMismatch, StrategyError
from ..._sizes import SIZE_FORMATS
from .._probes import Meter, ProbeSample, ThreadProbe, median_of_counts, power_of_two_histogram
from .._transport import RetryPolicy
from ._partial import PartialFile, Watchdog, describe

__all__ = ["CopyCancelled", "CopyStats", "CopyStrategy", "Reopen", "StrategyInfo"]

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
_ALGORITHMS = frozenset({"sha256", "sha512"})  # OCI-registered (image-spec descriptor.md)
#: What ends a body early and can be resumed from (not a disk error, not a bug).
_INTERRUPTIONS = (
    urllib3.exceptions.HTTPError,
    requests.RequestException,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)

#: ``reopen(offset) -> (response, start)``: the blob again from byte ``offset`` (``start`` is
#: ``offset`` for a 206, 0 when the server sent the whole blob).
Reopen = Callable[[int], "tuple[requests.Response, int]"]


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
    resumes : int
        Range requests that continued an interrupted body (or restarted it from zero).
    backoff_s : float
        Seconds waited before those requests.
    helper : ProbeSample or None
        CPU and I/O of helper threads (the hashing thread), measured inside them; None when not
        measured.
    hash_s : float or None
        Wall time computing the blob's digest: the digest updates in the copy loop (inline),
        in the hashing thread (``hash_mode="thread"``: it overlaps the copy), or re-reading the
        file after it (``after``, ``splice``; also the re-hash of the bytes a resume keeps).
        None when not measured (probes off, or a strategy that does not time its hashing).
    write_s : float or None
        Wall time inside the write system calls to the temp file (``os.write``; ``splice``'s
        pipe → file splices). None when not measured.

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
    resumes: int = 0
    backoff_s: float = 0.0
    hash_s: float | None = None
    write_s: float | None = None

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
    #: Whether an interrupted body continues from the bytes already written (a Range request)
    #: or, False, the blob restarts from byte 0.
    resumable: ClassVar[bool] = True

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

    def ineffective_params(self) -> dict[str, str]:
        """Parameters that cannot change what this strategy does, given the other parameters.

        Returns
        -------
        dict of str to str
            Parameter name -> why it has no effect (one sentence that names the parameters it
            depends on and what would make it count). Empty by default. The experiment runner
            warns (:class:`~pullbench.ParameterWarning`) about those a user set.
        """
        return {}

    def transfer(
        self, response: requests.Response, fd: int, meter: Meter, *, limit: int, hasher: Any
    ) -> Any | None:
        """Move the body of ``response`` into ``fd``. Override this.

        Parameters
        ----------
        response : requests.Response
            Streamed (``stream=True``) response, body unread.
        fd : int
            The temp file, open for writing at its current offset (0, or where a resumed copy
            continues).
        meter : Meter
            Record each read (:meth:`Meter.read`) and write (:meth:`Meter.write` does the
            ``os.write``, records and times it); add the time spent in ``hasher.update`` with
            :meth:`Meter.hashed` (else the hash stage of the copy is reported as unknown).
        limit : int
            Read at most this many bytes (the bytes still missing + 1: a longer body is detected
            without reading all of it).
        hasher : hashlib object
            Hasher for the expected digest's algorithm, already fed with the bytes before the
            file's offset when the copy resumes.

        Returns
        -------
        hashlib object or None
            The hasher fed with every byte written, or None to have the file re-read and hashed.
        """
        raise NotImplementedError

    def copy(
        self,
        response: requests.Response | None,
        dest: str | Path,
        *,
        expected_size: int,
        expected_digest: str,
        probe: Meter | None = None,
        reopen: Reopen | None = None,
        policy: RetryPolicy | None = None,
        cancel: threading.Event | None = None,
    ) -> CopyStats:
        """Copy the body into ``dest`` through a locked temp file beside it; verify; rename.

        With ``reopen``, an interrupted body (connection dropped, reset, stalled or slower than
        the low-speed limit) is resumed with a Range request from the bytes already in the temp
        file, as containerd and containers/image do (containerd/containerd:core/remotes/docker/
        fetcher.go; containers/image:docker/body_reader.go): the file's bytes are re-hashed, the
        strategy continues from there, and the digest is checked over the whole blob. A strategy
        with ``resumable = False`` restarts from byte 0 instead. A digest mismatch after a resume
        restarts the blob from zero once (moby/moby:distribution/pull_v2.go does the same). A
        temp file left by a killed pull into the same store is resumed from too.

        Parameters
        ----------
        response : requests.Response or None
            Streamed blob response (closed on return), or None to have ``reopen(0)`` (or
            ``reopen(<bytes of a leftover temp file>)``) open it.
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
        reopen : callable, optional
            ``reopen(offset) -> (response, start)``: the blob from byte ``offset``; ``start`` is
            ``offset``, or 0 when the server sent the whole blob. None: no resume.
        policy : RetryPolicy, optional
            Attempts, deadline, backoff, resume and low-speed limits (default
            ``RetryPolicy()`` when ``reopen`` is given).
        cancel : threading.Event, optional
            Set it to stop the copy at once (the body's socket is shut down); the temp file is
            removed and :class:`CopyCancelled` raised.

        Returns
        -------
        CopyStats

        Raises
        ------
        SizeMismatch
            Short or long body (also when the connection drops mid-body and cannot be resumed;
            the message says how often it was tried). The temp file is removed.
        DigestMismatch
            The bytes do not hash to ``expected_digest``. The temp file is removed; ``dest`` is not
            created.
        BlobError
            A digest algorithm other than sha256/sha512.
        CopyCancelled
            ``cancel`` was set.
        StrategyError
            The strategy cannot handle this response (e.g. ``splice`` over TLS).
        """
        dest = Path(dest)
        meter = probe if probe is not None else Meter()
        algorithm = expected_digest.partition(":")[0]
        if algorithm not in _ALGORITHMS:
            if response is not None:
                response.close()
            raise BlobError(
                f"unsupported digest algorithm {algorithm[:40]!r} in {expected_digest[:80]}; "
                "only sha256 and sha512 are verified"
            )
        if reopen is not None and policy is None:
            policy = RetryPolicy()
        if response is None and reopen is None:
            raise StrategyError("copy() needs a response or a reopen callable")
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter_ns()
        part = PartialFile.claim(dest, expected_size)
        watchdog = None
        if policy is not None:
            watchdog = Watchdog(policy.speed_limit_bytes_s, policy.speed_time_s, cancel)
        elif cancel is not None:
            watchdog = Watchdog(0, 30.0, cancel)
        offset = part.reused_bytes if reopen is not None else 0
        if offset and response is not None:
            response.close()
            response = None
        if not offset:
            part.restart()
        elif offset:
            logger.info("blob %s: resuming from %d bytes left by an interrupted pull",
                        expected_digest, offset)
        resumes = 0
        failures = 0
        backoff = 0.0
        restarted_clean = False
        resumed = offset > 0
        started = time.monotonic()
        ok = False
        fd = part.fd
        try:
            meter.hold(self.buffer_bytes())
            while True:
                if response is None:
                    assert reopen is not None
                    response, start = reopen(offset)
                    if start != offset:  # the registry ignored Range: start over
                        offset = 0
                        part.restart()
                hasher = hashlib.new(algorithm)
                if offset:
                    _rehash(fd, hasher, meter, end=offset)
                if watchdog is not None:
                    watchdog.watch(response, fd)
                interrupted: BaseException | None = None
                result: Any = None
                try:
                    result = self.transfer(response, fd, meter,
                                           limit=expected_size - offset + 1, hasher=hasher)
                except _INTERRUPTIONS as exc:
                    interrupted = exc
                except ValueError as exc:  # a read on a socket the watchdog shut down
                    if watchdog is None or watchdog.tripped is None:
                        raise
                    interrupted = exc
                finally:
                    if watchdog is not None:
                        watchdog.stop()
                    response.close()
                    response = None
                if watchdog is not None and watchdog.tripped == "cancelled":
                    raise CopyCancelled(f"blob {expected_digest}: copy cancelled",
                                        expected=expected_size, actual=part.size())
                size = part.size()
                slow = watchdog is not None and watchdog.tripped == "slow"
                if not slow and interrupted is None and size >= expected_size:
                    if size > expected_size:
                        raise SizeMismatch(
                            f"blob {expected_digest}: long body, received {size}+ bytes, "
                            f"descriptor size {expected_size}",
                            expected=expected_size, actual=size)
                    final = result if result is not None else _rehash(
                        fd, hashlib.new(algorithm), meter)
                    actual = f"{algorithm}:{final.hexdigest()}"
                    if actual == expected_digest:
                        break
                    if resumed and reopen is not None and not restarted_clean:
                        logger.warning("blob %s: resumed bytes hash to %s; fetching it again "
                                       "from byte 0", expected_digest, actual)
                        restarted_clean = True
                        resumed = False
                        offset = 0
                        part.restart()
                        resumes += 1
                        continue
                    raise DigestMismatch(
                        f"blob {expected_digest}: received {size} bytes hash to {actual}; the "
                        "registry served corrupted content (nothing was stored)",
                        expected=expected_digest,
                        actual=actual,
                    )
                # short: cut off, stalled, too slow, or the server closed early
                why = (watchdog.reason if slow and watchdog is not None
                       else describe(interrupted) if interrupted is not None
                       else "the server closed the body early")
                progress = size - offset
                failures = failures + 1 if (slow or progress <= 0) else 0
                tried = f"; {resumes} resume(s) tried" if resumes else ""
                if reopen is None or policy is None:
                    raise SizeMismatch(
                        f"blob {expected_digest}: body ended after {size} of {expected_size} "
                        f"bytes ({why})",
                        expected=expected_size, actual=size)
                elapsed = time.monotonic() - started
                wait = policy.backoff_s(failures) if failures else 0.0
                if (failures >= policy.attempts or resumes >= policy.max_resumes
                        or elapsed + wait > policy.deadline_s):
                    raise SizeMismatch(
                        f"blob {expected_digest}: body ended after {size} of {expected_size} "
                        f"bytes ({why}){tried}; gave up (RetryPolicy attempts="
                        f"{policy.attempts}, max_resumes={policy.max_resumes}, deadline_s="
                        f"{policy.deadline_s:g})",
                        expected=expected_size, actual=size)
                how = "from byte 0" if not self.resumable else f"from byte {size}"
                logger.warning("blob %s: body cut after %d of %d bytes (%s); resuming %s "
                               "in %.2f s", expected_digest, size, expected_size, why, how, wait)
                if wait:
                    if cancel is not None and cancel.wait(wait):
                        raise CopyCancelled(f"blob {expected_digest}: copy cancelled",
                                            expected=expected_size, actual=size)
                    if cancel is None:
                        time.sleep(wait)
                    backoff += wait
                resumes += 1
                if self.resumable:
                    offset = size
                    part.resume_at(size)
                    resumed = True
                else:
                    offset = 0
                    part.restart()
            part.commit(dest)
            ok = True
        finally:
            if not ok:
                part.discard()
            if response is not None:
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
            resumes=resumes,
            backoff_s=backoff,
            hash_s=meter.hash_ns / 1e9 if counted and meter.hash_timed else None,
            write_s=meter.write_ns / 1e9 if counted and meter.write_timed else None,
        )


def _rehash(fd: int, hasher: Any, meter: Meter, end: int | None = None) -> Any:
    """Hash a file's bytes ``[0, end)`` (all of it by default) by re-reading it (1 MiB
    ``preadv`` calls; page-cache reads); the time, reads included, is the hash stage's."""
    t0 = time.perf_counter_ns()
    buf = bytearray(_REHASH_CHUNK)
    view = memoryview(buf)
    offset = 0
    while end is None or offset < end:
        want = _REHASH_CHUNK if end is None else min(_REHASH_CHUNK, end - offset)
        n = os.preadv(fd, [view[:want]], offset)
        if n == 0:
            break
        hasher.update(view[:n])
        offset += n
    meter.hashed(time.perf_counter_ns() - t0)
    return hasher



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
        timed = self.meter.active
        probe = ThreadProbe() if timed else None
        update = self.hasher.update
        now = time.perf_counter_ns
        busy = 0
        try:
            while True:
                item = self.work.get()
                if item is None:
                    break
                if timed:
                    t0 = now()
                    update(item[1])
                    busy += now() - t0
                else:
                    update(item[1])
                self.free.put(item[0])
        except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
            self.error = exc
        finally:
            if probe is not None:
                self.meter.add_cpu(probe.stop())
                self.meter.hashed(busy)

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


