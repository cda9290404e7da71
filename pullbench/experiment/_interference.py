"""Interference probes: how much the rest of the machine competed with a run while it ran.

An :class:`InterferenceProbe` wraps one pull (in the worker process, around the pull call only)
and adds these columns to its row:

``other_cpu_s``
    CPU time that processes *outside the measured set* consumed during the pull, seconds. The
    measured set is this process (the puller worker) and the processes named in
    ``measured_pids`` (the registry, the shaping proxy, daemons of real-puller arms). Computed as
    the machine's CPU time minus the measured processes' own: both sides come from the
    scheduler's nanosecond runtime accounting where the kernel offers it (``cpu_time_source``):
    the machine's from the root ``cpuacct`` cgroup (cgroup v1, every task) or from the sum over
    the top-level cgroups (cgroup v2; tasks left in the root cgroup, mostly kernel threads, are
    not seen), the measured processes' from their CPU-time clocks (``clock_gettime`` of
    ``CLOCK_PROCESS_CPUTIME_ID`` for this process, the process CPU clock of each other pid;
    clock_getcpuclockid(3), exited threads included). A task that runs without being switched
    out is accounted at every scheduler tick, so a reading lags by at most one tick per CPU
    (4 ms at ``HZ`` 250). Without either cgroup counter the machine's side is ``/proc/stat``'s
    user + nice + system, which the kernel samples at each tick: then the value carries about
    +/-2 clock ticks (+/-20 ms at ``USER_HZ`` 100) of noise and can come out slightly negative on
    a quiet machine.
``other_cpu_ticks_s``
    The same difference with the machine's side always from ``/proc/stat``'s tick-sampled
    user + nice + system, kept beside ``other_cpu_s`` to show what the finer counters buy
    (``benchmarks/bench_interference.py`` compares the flags each gives).
``cpu_time_source``
    Where the machine's CPU time came from: ``"cpuacct"`` (cgroup v1 root, nanoseconds),
    ``"cgroup2"`` (sum of the top-level cgroups' ``usage_usec``, microseconds) or
    ``"proc-stat"`` (tick-sampled).
``other_cpu_cores``
    ``other_cpu_s`` divided by the pull's wall time: how many cores' worth of foreign work ran
    alongside the pull (a CPU burner pinned to one core gives about 1.0).
``other_cpu_puller_cpus_s``
    The part of ``other_cpu_s`` that ran on the CPUs the puller was pinned to (busy time of those
    CPUs minus this process's CPU; per-CPU nanoseconds from ``cpuacct.usage_percpu`` when
    ``cpu_time_source`` is ``"cpuacct"``, ``/proc/stat``'s per-CPU lines otherwise); None when
    the puller was not pinned to CPUs of its own.
``measured_cpu_s``
    CPU time of the measured set during the pull.
``irq_cpu_s``
    Hard and soft interrupt time over all CPUs. Not attributed to anyone: the pull's own loopback
    traffic is processed in softirq context, so it is reported apart from ``other_cpu_s``.
``steal_cpu_s``
    Time the hypervisor ran something else while this machine's CPUs wanted to run (``steal`` in
    ``/proc/stat``), over all CPUs.
``interference_cores``
    ``(other_cpu_s + steal beyond one clock tick) / wall``: the run's interference score.
    ``/proc/stat`` counts steal in clock ticks, so the difference of two readings is within one
    tick of the truth; one tick is taken off it (never below zero) so that a rounding alone
    never makes a short pull look disturbed. The analysis judges its two parts,
    ``other_cpu_cores`` and the steal (the rest), each against its own quiet baseline.
``procs_running_mean``, ``procs_running_max``, ``procs_running_samples``
    Runnable tasks on the machine, sampled every ``interval_s`` (100 ms) by a thread of the
    worker from the fourth field of ``/proc/loadavg`` -- the kernel's ``nr_running()``, the same
    counter as ``procs_running`` in ``/proc/stat`` (torvalds/linux:fs/proc/loadavg.c,
    fs/proc/stat.c), read from the smaller file. The count includes the sampler itself and the
    puller's own running threads.
``cpu_pressure_some``
    Share of the pull's wall time during which some task on the machine waited for a CPU
    (PSI, ``/proc/pressure/cpu`` ``some total``; Documentation/accounting/psi.rst); None without
    PSI. The puller's own threads count too.
``cpu_mhz``
    Mean of ``scaling_cur_freq`` over the puller's CPUs at the start and end of the pull, where
    ``/sys/devices/system/cpu/cpu*/cpufreq`` exists (None on machines, often VMs, without it).
``worker_nivcsw``
    Involuntary context switches of the puller worker during the pull (``getrusage``: all its
    threads, exited ones included): how often the scheduler took the CPU away from it.
``worker_nvcsw``
    Voluntary context switches of the puller worker during the pull: how often its threads
    blocked (waiting for data from the socket, for the disk, for a lock or the GIL).
``servers_nivcsw``
    The same for the other measured processes, summed over their live threads
    (``nonvoluntary_ctxt_switches`` in ``/proc/<pid>/task/<tid>/status``); threads that exited
    during the pull are not counted.
``worker_run_delay_s``, ``worker_wait_share``
    Time the puller worker's threads were runnable but waited for a CPU during the pull
    (``run_delay`` from ``/proc/self/task/<tid>/schedstat``, read by the sampler; a thread that
    exits between two samples loses at most one interval), and that wait as a share of the
    threads' runnable time (wait / (wait + on-CPU)). Includes waits for the puller's own threads
    when they outnumber its CPUs.
``cpus_online``
    CPUs of the machine (``os.cpu_count()``): the scale of the ``*_cores`` columns.
``probe_overhead_s``
    Wall time the probe itself spent at the start and the end, outside the timed pull: reading
    the counters, starting and stopping the sampler thread.
``probe_sampler_cpu_s``
    CPU time of the sampler thread (``time.thread_time``) from the probe's start to its stop:
    the probe's cost inside the timed section, taken from the same CPUs as the pull.

Everything here reads ``/proc`` and ``/sys`` only; a counter the kernel does not offer gives None.
"""

from __future__ import annotations

import functools
import os
import resource
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "INTERFERENCE_COLUMNS",
    "CpuTicks",
    "InterferenceProbe",
    "MachineCpuClock",
    "MachineCpuTime",
    "cpu_freq_mhz",
    "process_cpu_s",
    "process_nivcsw",
    "read_cpu_ticks",
    "read_procs_running",
]

#: Columns an :class:`InterferenceProbe` adds to a row.
INTERFERENCE_COLUMNS = (
    "other_cpu_s", "other_cpu_cores", "other_cpu_puller_cpus_s", "other_cpu_ticks_s",
    "cpu_time_source",
    "measured_cpu_s", "irq_cpu_s",
    "steal_cpu_s", "interference_cores", "procs_running_mean", "procs_running_max",
    "procs_running_samples", "cpu_pressure_some", "cpu_mhz", "worker_nivcsw", "worker_nvcsw",
    "servers_nivcsw", "worker_run_delay_s", "worker_wait_share", "cpus_online", "probe_overhead_s",
    "probe_sampler_cpu_s",
)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Default period of the run-queue sampler, seconds. Each wake costs about 0.1-0.3 ms of CPU
#: on a loaded 2-core VM (``benchmarks/bench_interference.py`` prints the sampler's share of a
#: pull): every 100 ms that is <= 0.3 % of a core, and a 0.2 s pull still gets two samples.
SAMPLE_INTERVAL_S = 0.1


@dataclass(frozen=True, slots=True)
class CpuTicks:
    """One reading of ``/proc/stat``'s CPU lines, in clock ticks (``USER_HZ``).

    Attributes
    ----------
    busy : int
        user + nice + system over all CPUs (guest time is already inside user).
    irq : int
        irq + softirq over all CPUs.
    steal : int
        steal over all CPUs.
    per_cpu_busy : dict of int to int
        user + nice + system of each CPU.
    """

    busy: int
    irq: int
    steal: int
    per_cpu_busy: dict[int, int]


def read_cpu_ticks(path: str = "/proc/stat") -> CpuTicks:
    """Read the machine's CPU time counters from ``/proc/stat`` (proc(5)).

    Returns
    -------
    CpuTicks

    Raises
    ------
    OSError
        ``/proc/stat`` cannot be read (not Linux).
    """
    busy = irq = steal = 0
    per_cpu: dict[int, int] = {}
    with Path(path).open("rb") as fh:
        for raw in fh:
            if not raw.startswith(b"cpu"):
                break  # the cpu lines come first
            parts = raw.split()
            values = [int(v) for v in parts[1:9]] + [0] * max(0, 9 - len(parts))
            user, nice, system, _idle, _iowait, hard, soft, stolen = values[:8]
            if parts[0] == b"cpu":
                busy, irq, steal = user + nice + system, hard + soft, stolen
            else:
                per_cpu[int(parts[0][3:])] = user + nice + system
    return CpuTicks(busy=busy, irq=irq, steal=steal, per_cpu_busy=per_cpu)


@dataclass(frozen=True, slots=True)
class MachineCpuTime:
    """One reading of the machine's CPU time from the scheduler's runtime accounting.

    Attributes
    ----------
    source : str
        ``"cpuacct"`` or ``"cgroup2"`` (see :class:`MachineCpuClock`).
    parts_ns : dict of str to int
        Nanoseconds of CPU time so far by part: by CPU (``"0"``, ``"1"``, ...) for
        ``"cpuacct"``, by top-level cgroup name for ``"cgroup2"``. Two readings are compared over
        the parts both have (a cgroup removed between them takes its total with it).
    """

    source: str
    parts_ns: dict[str, int]

    @property
    def per_cpu(self) -> bool:
        """The parts are CPUs (``"cpuacct"``)."""
        return self.source == "cpuacct"

    def busy_s_since(self, earlier: MachineCpuTime) -> float:
        """CPU time between ``earlier`` and this reading, seconds (parts both readings hold)."""
        return sum(v - earlier.parts_ns[k] for k, v in self.parts_ns.items()
                   if k in earlier.parts_ns) / 1e9

    def cpus_busy_s_since(self, earlier: MachineCpuTime, cpus: Iterable[int]) -> float | None:
        """CPU time of ``cpus`` between the readings, seconds; None when the parts are not CPUs."""
        if not (self.per_cpu and earlier.per_cpu):
            return None
        keys = [str(c) for c in cpus]
        return sum(self.parts_ns.get(k, 0) - earlier.parts_ns.get(k, 0) for k in keys) / 1e9


def _mountinfo_cgroups(path: str = "/proc/self/mountinfo") -> list[tuple[str, str, str, str]]:
    """(fstype, root, mount point, super options) of the cgroup mounts (proc(5) mountinfo)."""
    out: list[tuple[str, str, str, str]] = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((tail[0], fields[3], fields[4].replace("\\040", " "), tail[2]))
    return out


class MachineCpuClock:
    """The machine's CPU time from the scheduler's runtime accounting, where the kernel has it.

    The kernel charges every task's runtime (nanoseconds, ``update_curr`` in
    kernel/sched/fair.c) to its cgroups as it runs; unlike ``/proc/stat``, which samples the
    running task at each tick, the total is exact up to the current slice (at most one tick
    behind for a task that is never switched out). The sources, tried in this order:

    ``"cpuacct"``
        cgroup v1's ``cpuacct`` controller mounted at its root (mountinfo root ``/``): the root
        group's ``cpuacct.usage_percpu`` holds every task's runtime, per CPU
        (Documentation/admin-guide/cgroup-v1/cpuacct.rst).
    ``"cgroup2"``
        The cgroup v2 hierarchy mounted at its real root (no ``cgroup.freeze`` there: only the
        root lacks it), with this process in a child group: the sum of ``usage_usec`` in the
        top-level groups' ``cpu.stat`` (Documentation/admin-guide/cgroup-v2.rst). The root
        group's own ``cpu.stat`` is not used: the kernel derives it from the tick-sampled
        ``/proc/stat`` counters. Tasks left in the root group (mostly kernel threads) are not
        counted.

    Inside a container whose cgroup mount is its own group (mountinfo root not ``/``), neither
    counter sees the rest of the machine and :attr:`source` is None (use ``/proc/stat``).

    Parameters
    ----------
    mountinfo : str
        Path of the mount table to search (the default is this process's).
    cgroup : str
        Path of the cgroup membership that decides whether this process is below the cgroup v2
        root (the default is this process's).

    Attributes
    ----------
    source : str or None
        The source found, None when there is none.
    """

    def __init__(self, mountinfo: str = "/proc/self/mountinfo",
                 cgroup: str = "/proc/self/cgroup") -> None:
        self.source: str | None = None
        self._path: str | None = None
        mounts = _mountinfo_cgroups(mountinfo)
        for fstype, root, point, options in mounts:
            if fstype == "cgroup" and root == "/" and "cpuacct" in options.split(","):
                path = f"{point}/cpuacct.usage_percpu"
                if self._try("cpuacct", path):
                    return
        for fstype, root, point, _options in mounts:
            if (fstype == "cgroup2" and root == "/" and not Path(point, "cgroup.freeze").exists()
                    and _self_in_child_cgroup2(cgroup) and self._try("cgroup2", point)):
                return

    def _try(self, source: str, path: str) -> bool:
        self.source, self._path = source, path
        try:
            reading = self.read()
        except (OSError, ValueError):
            reading = None
        if reading is None or not reading.parts_ns:
            self.source = self._path = None
            return False
        return True

    def read(self) -> MachineCpuTime | None:
        """The machine's CPU time now; None when there is no source.

        Raises
        ------
        OSError, ValueError
            The counter file went away or holds something unexpected.
        """
        if self.source == "cpuacct" and self._path is not None:
            values = _read_bytes(self._path).split()
            return MachineCpuTime("cpuacct", {str(i): int(v) for i, v in enumerate(values)})
        if self.source == "cgroup2" and self._path is not None:
            parts: dict[str, int] = {}
            for entry in os.scandir(self._path):
                if not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    text = _read_bytes(f"{entry.path}/cpu.stat")
                except OSError:
                    continue  # removed meanwhile, or no cpu.stat
                if text.startswith(b"usage_usec "):
                    parts[entry.name] = int(text.split(None, 2)[1]) * 1000
            return MachineCpuTime("cgroup2", parts)
        return None


def _self_in_child_cgroup2(path: str = "/proc/self/cgroup") -> bool:
    """This process sits below the root of the cgroup v2 hierarchy (its ``0::`` line)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip() not in ("", "/")
    except OSError:
        pass
    return False


def read_procs_running(fd: int | None = None) -> int | None:
    """Runnable tasks on the machine now (``/proc/loadavg`` field 4, before the slash).

    Parameters
    ----------
    fd : int, optional
        An open descriptor of ``/proc/loadavg`` (re-read with ``pread`` at offset 0, so a sampler
        opens the file once).

    Returns
    -------
    int or None
        None when ``/proc/loadavg`` is unavailable.
    """
    try:
        if fd is None:
            data = Path("/proc/loadavg").read_bytes()
        else:
            data = os.pread(fd, 128, 0)
        return int(data.split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _read_bytes(path: str) -> bytes:
    """One read of a small /proc file (cheaper than pathlib's open/read/close)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _process_cpu_clock(pid: int) -> int:
    """The clock id of process ``pid``'s CPU-time clock (``clock_getcpuclockid(3)``: the kernel
    encodes it as ``(~pid << 3) | CPUCLOCK_SCHED``, include/linux/posix-timers_types.h)."""
    return ((~pid) << 3) | 2


def process_cpu_s(pid: int) -> float | None:
    """CPU time of process ``pid`` (all its threads, exited ones included), seconds.

    Read from the process's CPU-time clock (the scheduler's nanosecond runtime, the sum
    ``utime + stime`` is scaled to); where that clock cannot be read, from ``utime + stime``
    in ``/proc/<pid>/stat`` (clock ticks).

    Returns
    -------
    float or None
        None when the process does not exist (any more).
    """
    try:
        return time.clock_gettime_ns(_process_cpu_clock(pid)) / 1e9
    except (OSError, OverflowError):
        pass
    from ..servers._proxy import _proc_cpu_s

    try:
        return _proc_cpu_s(pid)
    except (OSError, ValueError, IndexError):
        return None


def process_nivcsw(pid: int) -> int | None:
    """Involuntary context switches of the live threads of process ``pid``; None if it is gone."""
    total = 0
    try:
        tids = [entry.name for entry in os.scandir(f"/proc/{pid}/task")]
    except OSError:
        return None
    for tid in tids:
        try:
            text = _read_bytes(f"/proc/{pid}/task/{tid}/status")
        except OSError:
            continue  # the thread exited meanwhile
        at = text.find(b"nonvoluntary_ctxt_switches:")
        if at >= 0:
            total += int(text[at:].split(b"\n", 1)[0].split()[1])
    return total


def cpu_freq_mhz(cpus: Iterable[int]) -> float | None:
    """Mean current frequency of ``cpus`` from ``/sys/.../cpufreq/scaling_cur_freq``, MHz.

    Returns None when the kernel exposes no cpufreq for any of them (common in VMs).
    """
    values = []
    for cpu in cpus:
        try:
            khz = _read_bytes(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq")
            values.append(int(khz) / 1000.0)
        except (OSError, ValueError):
            continue
    return sum(values) / len(values) if values else None


def read_cpu_pressure_us() -> int | None:
    """Total time (µs) some task waited for a CPU, machine-wide (``/proc/pressure/cpu``, PSI)."""
    try:
        first = _read_bytes("/proc/pressure/cpu").split(b"\n", 1)[0]
        return int(first.rsplit(b"total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


class _Sampler(threading.Thread):
    """Every ``interval_s`` until stopped: the run queue, and the run-queue wait of this
    process's threads (a daemon thread; its own waits are not counted)."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(name="pullbench-interference-sampler", daemon=True)
        self.interval_s = interval_s
        self.samples: list[int] = []
        #: tid -> (on-CPU ns, wait ns) when first seen, and when last seen
        self.first: dict[str, tuple[int, int]] = {}
        self.last: dict[str, tuple[int, int]] = {}
        self.started = threading.Event()
        #: CPU time of this thread from its first sample to its exit, seconds
        self.cpu_s: float | None = None
        self._stop_event = threading.Event()
        #: tid -> open descriptor of its schedstat, re-read with pread (cheaper than reopening)
        self._fds: dict[str, int] = {}

    def _schedstat(self, tid: str) -> tuple[int, int] | None:
        fd = self._fds.get(tid)
        try:
            if fd is None:
                fd = self._fds[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
            parts = os.pread(fd, 128, 0).split()
            return int(parts[0]), int(parts[1])
        except (OSError, IndexError, ValueError):
            return None  # the thread exited: its last sample stands

    def sample_threads(self, *, initial: bool = False) -> None:
        me = str(self.native_id)  # the sampler's own waits are not the puller's
        try:
            tids = [entry.name for entry in os.scandir("/proc/self/task")]
        except OSError:
            return
        for tid in tids:
            if tid == me:
                continue
            value = self._schedstat(tid)
            if value is None:
                continue
            if tid not in self.first:
                # a thread born during the pull started from zero
                self.first[tid] = value if initial else (0, 0)
            self.last[tid] = value

    def run(self) -> None:
        try:
            fd = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:
            self.started.set()
            return
        try:
            self.sample_threads(initial=True)
            cpu0 = time.thread_time()  # the thread's start and first scan precede the pull
            self.started.set()
            while True:
                value = read_procs_running(fd)
                if value is not None:
                    self.samples.append(value)
                if self._stop_event.wait(self.interval_s):
                    self.cpu_s = time.thread_time() - cpu0
                    return
                self.sample_threads()
        finally:
            os.close(fd)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(timeout=5)
        self.sample_threads()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        return list(self.samples)

    def run_delay(self) -> tuple[float, float]:
        """(wait s, on-CPU s) of this process's threads since the first sample."""
        wait = sum(self.last[t][1] - self.first[t][1] for t in self.last)
        oncpu = sum(self.last[t][0] - self.first[t][0] for t in self.last)
        return wait / 1e9, oncpu / 1e9


@dataclass(frozen=True, slots=True)
class _Reading:
    wall: float
    ticks: CpuTicks | None
    pressure_us: int | None
    self_cpu_s: float
    self_nivcsw: int
    self_nvcsw: int
    machine: MachineCpuTime | None
    others_cpu_s: dict[int, float | None]
    others_nivcsw: dict[int, int | None]
    mhz: float | None


@functools.cache
def _machine_cpu_clock() -> MachineCpuClock | None:
    """The machine CPU clock of this process, found once (None when the kernel offers none)."""
    clock = MachineCpuClock()
    return clock if clock.source is not None else None


class InterferenceProbe:
    """Measure the interference around one pull; :meth:`stop` returns the row columns.

    Parameters
    ----------
    measured_pids : mapping of str to int, optional
        Other processes of the measured set by role (``{"registry": 1234, "proxy": 1240}``);
        the processes they started (when the probe starts) are measured too, except those of
        ``harness`` (the runner, whose other children may be anyone's). This process is
        always measured; a pid equal to this process's is ignored (an embedded registry serving
        from the same process is already inside this process's counters).
    puller_cpus : iterable of int, optional
        CPUs the puller is pinned to; gives ``other_cpu_puller_cpus_s`` and the frequency's CPUs.
    exclusive_puller_cpus : bool
        True when no other measured process runs on ``puller_cpus`` (then the busy time of those
        CPUs minus this process's CPU is foreign work); otherwise ``other_cpu_puller_cpus_s`` is
        None.
    interval_s : float
        Period of the run-queue sampler; 0 disables it.
    include_children : bool
        Count this process's waited-for children in the measured set (``RUSAGE_CHILDREN``:
        every child that exited and was reaped during the pull, e.g. a real puller's client
        process started and waited for inside the timed section). The ``worker_*`` switch
        counts then include them; the run-delay columns, which see this process's own threads
        only, are left None.

    Examples
    --------
    >>> probe = InterferenceProbe({"registry": registry_pid}).start()   # doctest: +SKIP
    >>> result = pull(...)                                               # doctest: +SKIP
    >>> row.update(probe.stop())  # or probe.cancel() when the pull failed  # doctest: +SKIP
    """

    def __init__(self, measured_pids: Mapping[str, int] | None = None, *,
                 puller_cpus: Iterable[int] | None = None, exclusive_puller_cpus: bool = False,
                 interval_s: float = SAMPLE_INTERVAL_S, include_children: bool = False) -> None:
        from ._isolation import descendants

        self.include_children = include_children
        me = os.getpid()
        given = {role: int(pid) for role, pid in (measured_pids or {}).items() if pid}
        harness = given.get("harness")
        pids: dict[str, int] = {}
        seen = {me}
        for role, pid in given.items():
            if pid not in seen:
                pids[role] = pid
                seen.add(pid)
        for role, pid in list(pids.items()):
            if pid == harness:
                continue  # the runner's other children (a caller's processes) are not ours
            for i, child in enumerate(sorted(descendants(pid) - seen)):
                pids[f"{role}/child{i}"] = child  # e.g. dockerd's containerd
                seen.add(child)
        self.measured_pids = pids
        self.puller_cpus = sorted(set(puller_cpus)) if puller_cpus is not None else None
        self.exclusive_puller_cpus = exclusive_puller_cpus and bool(self.puller_cpus)
        self.interval_s = interval_s
        self._start: _Reading | None = None
        self._sampler: _Sampler | None = None
        self._overhead_s = 0.0
        self._freq_cpus: list[int] | None = None
        self._machine_clock = _machine_cpu_clock()

    def _read(self) -> _Reading:
        if self._freq_cpus is None:  # decided once: the CPUs whose frequency the kernel exposes
            cpus = (self.puller_cpus if self.puller_cpus is not None
                    else sorted(os.sched_getaffinity(0)))
            self._freq_cpus = [c for c in cpus if cpu_freq_mhz([c]) is not None]
        machine = self._machine_clock.read() if self._machine_clock is not None else None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self_cpu = time.process_time()  # nanosecond runtime, exited threads included
        nivcsw, nvcsw = usage.ru_nivcsw, usage.ru_nvcsw
        if self.include_children:
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            self_cpu += kids.ru_utime + kids.ru_stime
            nivcsw += kids.ru_nivcsw
            nvcsw += kids.ru_nvcsw
        try:
            ticks: CpuTicks | None = read_cpu_ticks()
        except OSError:
            ticks = None
        pids = set(self.measured_pids.values())
        reading = _Reading(
            wall=time.perf_counter(), ticks=ticks, pressure_us=read_cpu_pressure_us(),
            self_cpu_s=self_cpu, self_nivcsw=nivcsw, self_nvcsw=nvcsw, machine=machine,
            others_cpu_s={pid: process_cpu_s(pid) for pid in pids},
            others_nivcsw={pid: process_nivcsw(pid) for pid in pids},
            mhz=cpu_freq_mhz(self._freq_cpus) if self._freq_cpus else None,
        )
        return reading

    def start(self) -> InterferenceProbe:
        """Take the first reading and start the sampler; return ``self``."""
        t0 = time.perf_counter()
        if self.interval_s > 0:
            self._sampler = _Sampler(self.interval_s)
            self._sampler.start()
            self._sampler.started.wait(5)
        self._start = self._read()
        self._overhead_s += time.perf_counter() - t0
        return self

    def stop(self) -> dict[str, Any]:
        """Take the last reading, stop the sampler and return the columns (see the module)."""
        if self._start is None:
            raise RuntimeError("InterferenceProbe.stop() before start()")
        t0 = time.perf_counter()
        end = self._read()
        samples = self._sampler.stop() if self._sampler is not None else []
        self._overhead_s += time.perf_counter() - t0
        out = self._columns(self._start, end, samples)
        if self._sampler is not None:
            out["probe_sampler_cpu_s"] = self._sampler.cpu_s
        if self._sampler is not None and self._sampler.last and not self.include_children:
            wait, oncpu = self._sampler.run_delay()
            out["worker_run_delay_s"] = wait
            out["worker_wait_share"] = wait / (wait + oncpu) if wait + oncpu > 0 else None
        return out

    def _columns(self, a: _Reading, b: _Reading, samples: list[int]) -> dict[str, Any]:
        wall = max(b.wall - a.wall, 1e-9)
        self_cpu = b.self_cpu_s - a.self_cpu_s
        others = 0.0
        for pid in self.measured_pids.values():
            before, after = a.others_cpu_s.get(pid), b.others_cpu_s.get(pid)
            if before is not None and after is not None:
                others += after - before
        measured = self_cpu + others
        out: dict[str, Any] = dict.fromkeys(INTERFERENCE_COLUMNS)
        out["measured_cpu_s"] = measured
        ticks = (a.ticks, b.ticks) if a.ticks is not None and b.ticks is not None else None
        busy: float | None = None
        on_puller: float | None = None
        if a.machine is not None and b.machine is not None:
            busy = b.machine.busy_s_since(a.machine)
            if self.puller_cpus:
                on_puller = b.machine.cpus_busy_s_since(a.machine, self.puller_cpus)
            out["cpu_time_source"] = b.machine.source
        elif ticks is not None:
            busy = (ticks[1].busy - ticks[0].busy) / _CLK_TCK
            out["cpu_time_source"] = "proc-stat"
        steal = 0.0
        if ticks is not None:
            t0, t1 = ticks
            steal = (t1.steal - t0.steal) / _CLK_TCK
            out["irq_cpu_s"] = (t1.irq - t0.irq) / _CLK_TCK
            out["steal_cpu_s"] = steal
            out["other_cpu_ticks_s"] = (t1.busy - t0.busy) / _CLK_TCK - measured
            if on_puller is None and self.puller_cpus:
                on_puller = sum(t1.per_cpu_busy.get(c, 0) - t0.per_cpu_busy.get(c, 0)
                                for c in self.puller_cpus) / _CLK_TCK
        if busy is not None:
            other = busy - measured
            out["other_cpu_s"] = other
            out["other_cpu_cores"] = other / wall
            # a difference of two tick counts is within one tick of the truth: a rounding alone
            # must not make a short pull look disturbed
            out["interference_cores"] = (other + max(0.0, steal - 1.0 / _CLK_TCK)) / wall
            if self.exclusive_puller_cpus and on_puller is not None:
                out["other_cpu_puller_cpus_s"] = on_puller - self_cpu
        if samples:
            out["procs_running_mean"] = sum(samples) / len(samples)
            out["procs_running_max"] = max(samples)
        out["procs_running_samples"] = len(samples)
        if a.pressure_us is not None and b.pressure_us is not None:
            out["cpu_pressure_some"] = (b.pressure_us - a.pressure_us) / 1e6 / wall
        mhz = [m for m in (a.mhz, b.mhz) if m is not None]
        out["cpu_mhz"] = sum(mhz) / len(mhz) if mhz else None
        out["worker_nivcsw"] = b.self_nivcsw - a.self_nivcsw
        out["worker_nvcsw"] = b.self_nvcsw - a.self_nvcsw
        switches = [b.others_nivcsw.get(p) is not None and a.others_nivcsw.get(p) is not None
                    for p in self.measured_pids.values()]
        out["servers_nivcsw"] = (
            sum(int(b.others_nivcsw[p] or 0) - int(a.others_nivcsw[p] or 0)
                for p in self.measured_pids.values()
                if a.others_nivcsw.get(p) is not None and b.others_nivcsw.get(p) is not None)
            if any(switches) else None
        )
        out["cpus_online"] = os.cpu_count()
        out["probe_overhead_s"] = self._overhead_s
        return out

    def cancel(self) -> None:
        """Stop the sampler without a reading (the pull failed)."""
        if self._sampler is not None and self._sampler.is_alive():
            self._sampler.stop()
