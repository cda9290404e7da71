"""A bounded CPU burner: deliberate background load for checking interference handling.

:class:`CpuBurner` starts one busy-looping process per CPU it is given, each pinned to its CPU
(``sched_setaffinity``), optionally at another nice level, and each stopping by itself after
``seconds`` of wall time (it also dies with the process that started it:
``prctl(PR_SET_PDEATHSIG, SIGKILL)``). :meth:`CpuBurner.pause` and :meth:`CpuBurner.resume`
switch the load off and on (``SIGSTOP``/``SIGCONT``) without restarting it, so load can follow a
pattern of blocks. The tests and ``benchmarks/bench_interference.py`` use it to inject load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from types import TracebackType

from .._errors import BenchmarkError

__all__ = ["CpuBurner"]

_SCRIPT = """
import ctypes, os, sys, time
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except OSError:
    pass
cpu, seconds, nice = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
if nice != "none":
    os.setpriority(os.PRIO_PROCESS, 0, int(nice))
deadline = time.monotonic() + seconds
x = 0
while time.monotonic() < deadline:
    for _ in range(20000):
        x += 1
"""


class CpuBurner:
    """Busy loops on ``cpus`` for at most ``seconds`` (one process per CPU).

    Parameters
    ----------
    cpus : iterable of int or None
        CPUs to load, one burner process each; ``None`` entries make unpinned burners.
    seconds : float
        Wall-time bound of each burner; it exits by itself then (paused time counts).
    nice : int, optional
        Nice level of the burners (negative values need root). None keeps this process's.
    paused : bool
        Start them stopped (``SIGSTOP``); :meth:`resume` switches the load on.

    Examples
    --------
    >>> with CpuBurner([1], seconds=10) as burner:    # doctest: +SKIP
    ...     run_something()
    ...     burner.pause()
    """

    def __init__(self, cpus: Iterable[int | None], seconds: float, *, nice: int | None = None,
                 paused: bool = False) -> None:
        self.cpus = list(cpus)
        if not self.cpus:
            raise BenchmarkError("CpuBurner needs at least one CPU")
        if not 0 < seconds <= 3600:
            raise BenchmarkError(f"CpuBurner: seconds must be in (0, 3600], got {seconds}")
        self.seconds = float(seconds)
        self.nice = nice
        self.start_paused = paused
        self.procs: list[subprocess.Popen[bytes]] = []
        self.running = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the burners."""
        return [p.pid for p in self.procs]

    def start(self) -> CpuBurner:
        """Start the burners; return ``self``."""
        for cpu in self.cpus:
            arg = str(-1 if cpu is None else int(cpu))
            nice = "none" if self.nice is None else str(int(self.nice))
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", _SCRIPT, arg, str(self.seconds), nice],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            ))
        self.running = True
        time.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.stop()
                raise BenchmarkError(f"a CPU burner exited at once: {err.strip()[-300:]}")
        if self.start_paused:
            self.pause()
        return self

    def _signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, sig)

    def pause(self) -> None:
        """Switch the load off (``SIGSTOP``); idempotent."""
        if self.running:
            self._signal(signal.SIGSTOP)
            self.running = False

    def resume(self) -> None:
        """Switch the load on (``SIGCONT``); idempotent."""
        if not self.running:
            self._signal(signal.SIGCONT)
            self.running = True

    def stop(self) -> None:
        """Kill the burners (by pid) and reap them."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
        self.running = False

    def __enter__(self) -> CpuBurner:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
