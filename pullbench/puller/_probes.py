"""Probes cheap enough to leave on: wall time, CPU, syscall/byte counters, read/write sizes.

- Wall time: :func:`time.perf_counter_ns`.
- CPU: ``getrusage(RUSAGE_THREAD)`` in the thread that does the work (Linux), so a registry serving
  from the same process (the embedded registry's threads) is not counted; ``RUSAGE_SELF`` for the
  process and ``ru_maxrss`` for peak RSS.
- Syscalls and bytes: ``/proc/thread-self/io`` deltas (``syscr``, ``syscw``, ``rchar``, ``wchar``)
  taken in the same threads. Note the kernel's task I/O accounting counts ``read``/``write``-family
  calls (fs/read_write.c): socket ``recv``/``recv_into`` and ``splice`` are *not* in ``syscr``; the
  read-size histogram, counted by the strategy itself, counts reads as the strategy saw them.
- Read and write sizes: :class:`Meter` keeps exact sizes and reports power-of-two histograms
  (bucket = smallest power of two ≥ size, so a 32,768-byte write lands in bucket 32768 and a
  32,769-byte one in 65536).
- Hash and write stages inside the copy: :class:`Meter` accumulates the wall time of each write
  call to the temp file (:meth:`Meter.write`) and the strategies the time of each digest update
  (:attr:`Meter.hash_ns`), with :func:`time.perf_counter_ns` — ``CLOCK_MONOTONIC`` through the
  vDSO, so no system call is added per read or write. Per-stage *CPU* would need
  ``clock_gettime(CLOCK_THREAD_CPUTIME_ID)``, a real system call, around every call; it is not
  taken: hashing is CPU-bound in user space and a page-cache write is CPU in the kernel, so on a
  quiet machine their wall time is their CPU (on a loaded one it includes preemption).

With probes off (``pull(..., probes=False)``) the puller hands strategies a :class:`NullMeter`:
it counts nothing and measures no helper thread, so none of the above runs (only the wall clock).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "IoCounters",
    "Meter",
    "NullMeter",
    "ProbeSample",
    "ThreadProbe",
    "bucket_of",
    "median_of_counts",
    "power_of_two_histogram",
    "read_io_counters",
]

_IO_FIELDS = ("syscr", "syscw", "rchar", "wchar")


def bucket_of(size: int) -> int:
    """The power-of-two bucket (upper bound, bytes) that ``size`` falls in; 0 for 0."""
    return 0 if size <= 0 else 1 << (size - 1).bit_length()


def power_of_two_histogram(sizes: Mapping[int, int]) -> dict[int, int]:
    """Fold exact ``{size: count}`` into ``{power-of-two upper bound: count}`` sorted by bucket."""
    out: Counter[int] = Counter()
    for size, count in sizes.items():
        out[bucket_of(size)] += count
    return dict(sorted(out.items()))


def median_of_counts(sizes: Mapping[int, int]) -> float:
    """Median of a multiset given as ``{value: count}``; 0.0 when empty."""
    total = sum(sizes.values())
    if total == 0:
        return 0.0
    ordered = sorted(sizes.items())
    lo_rank, hi_rank = (total - 1) // 2, total // 2
    seen = 0
    lo = hi = None
    for value, count in ordered:
        nxt = seen + count
        if lo is None and lo_rank < nxt:
            lo = value
        if hi_rank < nxt:
            hi = value
            break
        seen = nxt
    assert lo is not None
    assert hi is not None
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class IoCounters:
    """Counters from ``/proc/<self|thread-self>/io`` (zeros where the file is missing)."""

    syscr: int = 0
    syscw: int = 0
    rchar: int = 0
    wchar: int = 0

    def __sub__(self, other: IoCounters) -> IoCounters:
        return IoCounters(
            self.syscr - other.syscr,
            self.syscw - other.syscw,
            self.rchar - other.rchar,
            self.wchar - other.wchar,
        )

    def __add__(self, other: IoCounters) -> IoCounters:
        return IoCounters(
            self.syscr + other.syscr,
            self.syscw + other.syscw,
            self.rchar + other.rchar,
            self.wchar + other.wchar,
        )


def read_io_counters(scope: str = "thread-self") -> IoCounters:
    """Read ``/proc/<scope>/io`` (``scope`` is ``thread-self`` or ``self``)."""
    values: dict[str, int] = {}
    try:
        with Path(f"/proc/{scope}/io").open(encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in _IO_FIELDS:
                    values[key] = int(value)
    except OSError:
        return IoCounters()
    return IoCounters(**values)


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """What one thread (or several running at the same time) spent between two snapshots.

    ``a + b`` combines the samples of threads that ran concurrently (a worker and its hashing
    thread): CPU times and I/O counters add up, wall time does not -- it is the longer of the two
    (a helper thread runs inside its worker's time span, so it adds no wall time).

    Attributes
    ----------
    wall_s, cpu_user_s, cpu_sys_s : float
        Seconds.
    io : IoCounters
    """

    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    io: IoCounters = field(default_factory=IoCounters)

    def __add__(self, other: ProbeSample) -> ProbeSample:
        return ProbeSample(
            max(self.wall_s, other.wall_s),
            self.cpu_user_s + other.cpu_user_s,
            self.cpu_sys_s + other.cpu_sys_s,
            self.io + other.io,
        )


class ThreadProbe:
    """Snapshot the calling thread's CPU and I/O counters; :meth:`stop` returns the delta.

    Must be started and stopped in the same thread.
    """

    __slots__ = ("_io", "_ru", "_t0")

    def __init__(self) -> None:
        self._t0 = time.perf_counter_ns()
        self._ru = resource.getrusage(_RUSAGE_THREAD)
        self._io = read_io_counters("thread-self")

    def stop(self) -> ProbeSample:
        io = read_io_counters("thread-self") - self._io
        ru = resource.getrusage(_RUSAGE_THREAD)
        wall = (time.perf_counter_ns() - self._t0) / 1e9
        return ProbeSample(
            wall, ru.ru_utime - self._ru.ru_utime, ru.ru_stime - self._ru.ru_stime, io
        )


class Meter:
    """Counts what a copy strategy does, as the strategy itself sees it.

    A strategy calls :meth:`read` with the size of each read it made and :meth:`write` /
    :meth:`wrote` for each write to the destination file; :meth:`hold` declares the bytes it keeps
    in buffers; :meth:`add_cpu` adds the CPU of a helper thread (e.g. a hashing thread).
    Thread-safe for the helper-thread case.

    ``active`` is True: strategies that update :attr:`reads` directly in their copy loop (the
    built-in ones do, to save a method call per read) and helper threads that would measure their
    CPU check it first, and skip that work for a :class:`NullMeter`.

    Stage times (nanoseconds, wall): :attr:`write_ns` is the time inside :meth:`write` (and the
    ``ns`` given to :meth:`wrote`); :attr:`hash_ns` is what the strategy added with
    :meth:`hashed` for its digest updates (inline, in a hashing thread, or re-reading the file).
    :attr:`hash_timed` / :attr:`write_timed` say whether those stages were timed at all: a
    custom strategy that hashes without :meth:`hashed`, or reports a write with :meth:`wrote`
    and no ``ns``, leaves them unknown (None in the results), never a misleading 0.
    """

    active: bool = True

    def __init__(self) -> None:
        self.reads: Counter[int] = Counter()
        self.writes: Counter[int] = Counter()
        self.buffer_bytes = 0
        self.helper = ProbeSample()
        self.hash_ns = 0
        self.write_ns = 0
        self.hash_timed = False
        self.write_timed = True
        self._lock = threading.Lock()

    def read(self, size: int) -> None:
        """Record one read that returned ``size`` bytes (0-byte EOF reads are not recorded)."""
        if size > 0:
            self.reads[size] += 1

    def wrote(self, size: int, ns: int | None = None) -> None:
        """Record one write system call that wrote ``size`` bytes in ``ns`` nanoseconds (None:
        not timed, which makes the write stage unknown for this copy)."""
        if size > 0:
            self.writes[size] += 1
        if ns is None:
            self.write_timed = False
        else:
            self.write_ns += ns

    def hashed(self, ns: int) -> None:
        """Add ``ns`` nanoseconds of digest computation (thread-safe: a hashing thread calls
        it once, at its end)."""
        with self._lock:
            self.hash_ns += ns
            self.hash_timed = True

    def write(self, fd: int, data: memoryview | bytes) -> int:
        """``os.write`` all of ``data`` to ``fd`` (looping on short writes), recording each and
        the time spent in them."""
        # the common case (one complete write) costs one os.write, one count and two vDSO clock
        # reads: this runs once per write of the copy, so it is part of what the probes cost
        t0 = time.perf_counter_ns()
        n = os.write(fd, data)
        writes = self.writes
        if n > 0:
            writes[n] += 1
        total = data.nbytes if isinstance(data, memoryview) else len(data)
        if n < total:
            view = memoryview(data).cast("B")
            done = n
            while done < total:
                n = os.write(fd, view[done:])
                if n > 0:
                    writes[n] += 1
                done += n
        self.write_ns += time.perf_counter_ns() - t0
        return total

    def hold(self, nbytes: int) -> None:
        """Declare ``nbytes`` more bytes of buffers held by the strategy during the copy."""
        self.buffer_bytes += nbytes

    def add_cpu(self, sample: ProbeSample) -> None:
        """Add a helper thread's CPU/IO (measured inside that thread) to this copy."""
        with self._lock:
            self.helper = self.helper + sample

    @property
    def read_count(self) -> int:
        return sum(self.reads.values())

    @property
    def write_count(self) -> int:
        return sum(self.writes.values())


class NullMeter(Meter):
    """A meter for ``probes=False``: counts no reads or writes and takes no helper-thread CPU.

    :meth:`read`, :meth:`wrote`, :meth:`hashed` and :meth:`add_cpu` do nothing (no stage is
    timed); :meth:`write` only does the
    ``os.write`` loop. ``active`` is False, so built-in strategies skip their per-read counting and
    the hashing thread takes no CPU or ``/proc`` snapshots. :meth:`hold` still records the buffers
    declared (a property of the strategy, not a measurement). Nothing here is needed for
    correctness: the size check uses ``fstat`` of the written file and the digest comes from the
    strategy's hasher. :attr:`reads` / :attr:`writes` stay empty (a custom strategy that writes
    to them anyway is harmless: what it puts there is discarded).
    """

    active = False

    def read(self, size: int) -> None:
        """Nothing (reads are not counted)."""

    def wrote(self, size: int, ns: int | None = None) -> None:
        """Nothing (writes are not counted)."""

    def hashed(self, ns: int) -> None:
        """Nothing (stages are not timed)."""

    def write(self, fd: int, data: memoryview | bytes) -> int:
        """``os.write`` all of ``data`` to ``fd`` (looping on short writes); nothing recorded."""
        done = os.write(fd, data)
        total = data.nbytes if isinstance(data, memoryview) else len(data)
        if done < total:
            view = memoryview(data).cast("B")
            while done < total:
                done += os.write(fd, view[done:])
        return total

    def add_cpu(self, sample: ProbeSample) -> None:
        """Nothing (helper threads are not measured)."""


def merge_counts(counters: Iterable[Mapping[int, int]]) -> Counter[int]:
    """Sum several ``{size: count}`` mappings."""
    out: Counter[int] = Counter()
    for c in counters:
        out.update(c)
    return out


def process_rusage() -> tuple[float, float, int]:
    """``(user_s, sys_s, peak_rss_bytes)`` of this process (``ru_maxrss`` is KiB on Linux)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime, ru.ru_maxrss * 1024
