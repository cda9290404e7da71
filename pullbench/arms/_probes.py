"""Probes for processes pullbench does not own: a client it launches and a daemon tree.

- Client: launched with :func:`run_client`, reaped with ``wait4(2)``, whose ``struct rusage``
  gives the client's own CPU (user, sys), including any children it waited for (a shell's
  commands) -- exact, and nothing of the daemon. Its peak RSS is *not* taken from
  ``ru_maxrss``: Linux carries the high-water mark of the forked copy of the parent across
  ``exec`` (fs/exec.c, ``setmax_mm_hiwater_rss``), so it would read as the runner's own size;
  a thread samples the kernel's ``VmHWM`` of the client and its children instead (exact for
  what the exec'd programs used, up to the last sample before they exit).
- Daemon tree (dockerd and the containerd it starts; containerd): :class:`TreeProbe` takes
  per-run deltas of ``/proc/<pid>/stat`` (``utime``, ``stime``, ``cutime``, ``cstime``: children
  it reaped during the run, e.g. ``unpigz``, are counted) and ``/proc/<pid>/io`` (``rchar``,
  ``wchar``, ``write_bytes``, ...) summed over the tree (proc(5)); CPU resolution is one clock
  tick (10 ms at ``CLK_TCK`` 100).
- Daemon peak RSS per run, two ways: a sampling thread summing ``/proc/<pid>/statm`` resident
  pages over the tree every ``sample_interval_s``, children found during the run included
  (dockerd re-executes itself as ``docker-untar`` to unpack each layer, ~70 MB resident each),
  raised to at least the largest single process's kernel high-water mark; and the sum of the
  high-water marks (``VmHWM``, reset at the start of the run by writing ``5`` to
  ``/proc/<pid>/clear_refs``) of the processes alive at the end -- exact per process but blind
  to children that came and went. A memory cgroup is not used: it charges the page cache of the
  layer files the daemon writes (hundreds of MiB) to the daemon, which is not what peak RSS
  means in the strategies' rows (``ru_maxrss``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._daemons import process_tree, tail_text

__all__ = ["ClientResult", "TreeProbe", "TreeSample", "run_client"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_IO_KEYS = ("rchar", "wchar", "syscr", "syscw", "read_bytes", "write_bytes")


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One client process, launched and reaped by :func:`run_client`.

    Attributes
    ----------
    returncode : int
        Exit code (negative: killed by that signal).
    wall_s : float
        From just before ``fork`` to ``wait4`` returning (seconds).
    cpu_user_s, cpu_sys_s : float
        ``wait4`` rusage of the client and the children it reaped (seconds).
    peak_rss_bytes : int
        Largest sampled sum of ``VmHWM`` over the client and its children, bytes.
    stdout_tail, stderr_tail : str
        The last 1500 characters of each stream.
    timed_out : bool
        The client was killed after ``timeout_s``.
    """

    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_bytes: int
    stdout_tail: str
    stderr_tail: str
    timed_out: bool = False


def run_client(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               cwd: str | Path | None = None, timeout_s: float = 900.0) -> ClientResult:
    """Run ``argv`` to completion; time it and take its rusage from ``wait4(2)``.

    Output goes to temporary files (no pipe to drain during the timed section). A client still
    running after ``timeout_s`` is killed (``timed_out``).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=dict(env) if env is not None else None, cwd=cwd,
                                start_new_session=True)
        expired = threading.Event()

        def on_timeout() -> None:
            expired.set()
            _kill(proc)

        timer = threading.Timer(timeout_s, on_timeout)
        timer.daemon = True
        timer.start()
        sampler = _HwmSampler(proc.pid)
        try:
            while True:
                try:
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                except InterruptedError:
                    continue
        except BaseException:
            _kill(proc)
            with contextlib.suppress(ChildProcessError):
                os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        finally:
            timer.cancel()
            peak = sampler.stop()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ClientResult(
            returncode=proc.returncode, wall_s=wall, cpu_user_s=usage.ru_utime,
            cpu_sys_s=usage.ru_stime, peak_rss_bytes=peak,
            stdout_tail=tail_text(out.read()), stderr_tail=tail_text(err.read()),
            timed_out=expired.is_set(),
        )


class _HwmSampler:
    """Samples ``VmHWM`` summed over a process and its descendants until :meth:`stop`."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pullbench-client-rss",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            pids = [self.pid, *_descendants(self.pid)]
            self.peak = max(self.peak, sum(_hwm_bytes(p) for p in pids))
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _descendants(pid: int) -> list[int]:
    """Children of ``pid``, recursively (``/proc/<pid>/task/<tid>/children``)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                text = (task / "children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                if child not in out:
                    out.append(child)
                    todo.append(child)
    return out


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)


def _stat_cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, sys) clock ticks of ``pid`` including children it reaped; (0, 0) if gone."""
    from ..servers._proxy import proc_stat_fields

    try:
        f = proc_stat_fields(pid)
        return int(f[11]) + int(f[13]), int(f[12]) + int(f[14])
    except (OSError, IndexError, ValueError):
        return 0, 0


def _io(pid: int) -> dict[str, int]:
    out = dict.fromkeys(_IO_KEYS, 0)
    with contextlib.suppress(OSError, ValueError), Path(f"/proc/{pid}/io").open() as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in out:
                out[key] = int(value)
    return out


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _hwm_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError), Path(f"/proc/{pid}/status").open() as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class TreeSample:
    """What a daemon tree spent during one run.

    Attributes
    ----------
    cpu_user_s, cpu_sys_s : float
        Summed over the tree (seconds; one clock tick resolution).
    io : dict of str to int
        ``/proc/<pid>/io`` deltas summed over the tree: ``rchar``, ``wchar``, ``syscr``,
        ``syscw``, ``read_bytes``, ``write_bytes`` (bytes / calls).
    peak_rss_bytes : int
        Largest sampled sum of resident memory over the tree (transient children included),
        at least the largest single process's high-water mark.
    hwm_sum_rss_bytes : int or None
        Sum of the high-water marks since the run started of the processes alive at its end;
        None when ``clear_refs`` could not be written (not root).
    pids : tuple of int
        The tree at the end of the run.
    """

    cpu_user_s: float
    cpu_sys_s: float
    io: dict[str, int]
    peak_rss_bytes: int
    hwm_sum_rss_bytes: int | None
    pids: tuple[int, ...]


class TreeProbe:
    """Per-run CPU, I/O and peak-RSS deltas of a process tree (see the module docstring).

    Parameters
    ----------
    roots : sequence of int
        Root PIDs (the daemon); their descendants are found at start and stop.
    sample_interval_s : float
        RSS sampling period of the helper thread.
    """

    def __init__(self, roots: Sequence[int], *, sample_interval_s: float = 0.01) -> None:
        self.roots = tuple(roots)
        self.sample_interval_s = sample_interval_s
        self._pids: list[int] = []
        self._cpu0: dict[int, tuple[int, int]] = {}
        self._io0: dict[int, dict[str, int]] = {}
        self._peak = 0
        self._hwm_ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tree(self) -> list[int]:
        """The roots and their descendants now."""
        seen: list[int] = []
        for root in self.roots:
            seen.extend(p for p in process_tree(root) if p not in seen)
        return seen

    def start(self) -> TreeProbe:
        """Snapshot the counters, reset the high-water marks and start sampling."""
        self._pids = self.tree()
        self._hwm_ok = all([_reset_hwm(p) for p in self._pids]) and bool(self._pids)
        self._cpu0 = {p: _stat_cpu_ticks(p) for p in self._pids}
        self._io0 = {p: _io(p) for p in self._pids}
        self._peak = sum(_rss_bytes(p) for p in self._pids)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="pullbench-rss-sampler",
                                        daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        pids = list(self._pids)
        n = 0
        while not self._stop.wait(self.sample_interval_s):
            n += 1
            if n % 50 == 0:  # pick up children started during the run (every ~0.5 s)
                pids = self.tree()
            self._peak = max(self._peak, sum(_rss_bytes(p) for p in pids))

    def stop(self) -> TreeSample:
        """Stop sampling and return the deltas since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        pids = self.tree()
        user = sys_ = 0
        io = dict.fromkeys(_IO_KEYS, 0)
        for pid in pids:
            u, s = _stat_cpu_ticks(pid)
            u0, s0 = self._cpu0.get(pid, (0, 0))
            user += u - u0
            sys_ += s - s0
            now, before = _io(pid), self._io0.get(pid)
            for key in _IO_KEYS:
                io[key] += now[key] - (before[key] if before else 0)
        hwms = [_hwm_bytes(p) for p in pids]
        peak = max([self._peak, sum(_rss_bytes(p) for p in pids), *hwms])
        return TreeSample(
            cpu_user_s=user / _CLK_TCK, cpu_sys_s=sys_ / _CLK_TCK, io=io, peak_rss_bytes=peak,
            hwm_sum_rss_bytes=sum(hwms) if self._hwm_ok else None, pids=tuple(pids),
        )


def thread_cpu_s() -> tuple[float, float]:
    """(user, sys) seconds of the calling thread (``RUSAGE_THREAD``)."""
    ru = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    return ru.ru_utime, ru.ru_stime
