"""Preflight: is this machine quiet enough to benchmark on, and what should be fixed?

:func:`system_check` looks at the machine over a short window and returns a
:class:`SystemCheck`: load average, CPU used by other processes and the busiest of them, steal
time, the run queue, the CPU frequency governor, turbo boost and SMT, swap (configured, used and
active), and free memory, with a list of problems saying what to fix. ``pullbench system check``
prints it; ``pullbench bench`` runs it before the first run and records it in
``environment.json`` (key ``preflight``); :func:`wait_quiet` (``bench --wait-quiet``) waits,
bounded, until the machine has been quiet for a while.

*Quiet* means, over the window: other processes used at most :data:`QUIET_OTHER_CPU_CORES`
cores, steal stayed under :data:`QUIET_STEAL_CORES` cores, and nothing was swapped in or out. The
load average is reported but not used for the decision: it is a one-minute exponential average and
trails the machine by about a minute.

The checks follow pyperf's ``system show`` (governor, turbo boost, isolated CPUs;
psf/pyperf:pyperf/_system.py), read from ``/proc`` and ``/sys`` only; nothing is changed.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QUIET_OTHER_CPU_CORES",
    "QUIET_STEAL_CORES",
    "BusyProcess",
    "QuietWait",
    "SystemCheck",
    "cpu_settings",
    "system_check",
    "wait_quiet",
]

#: Other processes may use at most this many cores (summed) for the machine to count as quiet.
QUIET_OTHER_CPU_CORES = 0.25
#: Steal time above this many cores (summed over CPUs) makes the machine not quiet.
QUIET_STEAL_CORES = 0.05
#: How many of the busiest processes a check lists.
TOP_PROCESSES = 5
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CPU_SYS = Path("/sys/devices/system/cpu")


@dataclass(frozen=True, slots=True)
class BusyProcess:
    """A process that used CPU during the check's window.

    Attributes
    ----------
    pid : int
    name : str
        The command name (``comm``).
    cpu_cores : float
        CPU time used over the window divided by its length (1.0 = one core busy).
    command : str
        The start of its command line.
    """

    pid: int
    name: str
    cpu_cores: float
    command: str = ""


@dataclass(frozen=True, slots=True)
class SystemCheck:
    """What :func:`system_check` found.

    Attributes
    ----------
    captured_at : str
        UTC time of the check (ISO 8601).
    window_s : float
        Length of the observation window, seconds.
    cpu_count : int
        CPUs online.
    allowed_cpus : tuple of int
        CPUs this process may use.
    loadavg_1_5_15 : tuple of float or None
    other_cpu_cores : float or None
        CPU used over the window by every process but this one, cores.
    steal_cores : float or None
        Steal time over the window, cores.
    procs_running_mean : float or None
        Mean run-queue length over the window (the checking thread included).
    top_processes : tuple of BusyProcess
        The busiest other processes, busiest first.
    governors : dict of str to str
        Frequency governor -> CPU list (``{"powersave": "0-3"}``); empty without cpufreq.
    boost : bool or None
        Turbo boost on (True), off (False) or unknown (None).
    smt : str or None
        ``on``, ``off``, ``notsupported`` (``/sys/devices/system/cpu/smt/control``).
    isolated_cpus : str
        ``/sys/devices/system/cpu/isolated`` (``isolcpus=``), ``""`` when none.
    cpu_mhz : float or None
        Mean current CPU frequency where cpufreq is exposed.
    swap_total_bytes, swap_used_bytes : int or None
    swap_pages_per_s : float or None
        Pages swapped in + out per second over the window.
    mem_total_bytes, mem_available_bytes : int or None
    quiet : bool
        Whether the machine was quiet over the window (see the module docstring).
    problems : tuple of str
        What to fix, one sentence each (empty when nothing).
    notes : tuple of str
        Worth knowing but not a problem.
    """

    captured_at: str
    window_s: float
    cpu_count: int
    allowed_cpus: tuple[int, ...]
    loadavg_1_5_15: tuple[float, float, float] | None
    other_cpu_cores: float | None
    steal_cores: float | None
    procs_running_mean: float | None
    top_processes: tuple[BusyProcess, ...]
    governors: dict[str, str] = field(default_factory=dict)
    boost: bool | None = None
    smt: str | None = None
    isolated_cpus: str = ""
    cpu_mhz: float | None = None
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    swap_pages_per_s: float | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    quiet: bool = False
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (``environment.json`` key ``preflight``)."""
        out = asdict(self)
        out["top_processes"] = [asdict(p) for p in self.top_processes]
        out["allowed_cpus"] = list(self.allowed_cpus)
        out["loadavg_1_5_15"] = list(self.loadavg_1_5_15) if self.loadavg_1_5_15 else None
        out["problems"] = list(self.problems)
        out["notes"] = list(self.notes)
        return out

    def summary(self) -> str:
        """One line: quiet or not, load, other CPU, the busiest process."""
        state = "quiet" if self.quiet else "NOT quiet"
        if not self.quiet and self.problems:  # the reasons first, their fixes in format()
            state += " (" + "; ".join(p.split(" (")[0].split(":")[0] for p in self.problems) + ")"
        load = (f"load {self.loadavg_1_5_15[0]:.2f} on {self.cpu_count} CPUs"
                if self.loadavg_1_5_15 else f"{self.cpu_count} CPUs")
        other = (f"other processes {self.other_cpu_cores:.2f} cores"
                 if self.other_cpu_cores is not None else "other CPU unknown")
        top = ""
        if self.top_processes:
            p = self.top_processes[0]
            top = f", busiest {p.name} (pid {p.pid}) {p.cpu_cores:.2f} cores"
        return f"machine {state}: {load}, {other}{top} over {self.window_s:.1f} s"

    def format(self) -> str:
        """The full text ``pullbench system check`` prints."""
        lines = [self.summary()]
        if self.top_processes:
            lines.append("busiest other processes:")
            lines += [f"  {p.cpu_cores:5.2f} cores  pid {p.pid:<7d} {p.name:<16s} {p.command}"
                      for p in self.top_processes]
        gov = ", ".join(f"{g} on CPUs {c}" for g, c in self.governors.items()) or "not exposed"
        boost = {True: "on", False: "off", None: "unknown"}[self.boost]
        lines.append(f"governor: {gov}; turbo boost: {boost}; SMT: {self.smt or 'unknown'}; "
                     f"isolated CPUs: {self.isolated_cpus or 'none'}")
        mem = "unknown"
        if self.mem_available_bytes is not None and self.mem_total_bytes:
            mem = (f"{self.mem_available_bytes / 2**30:.1f} GiB available of "
                   f"{self.mem_total_bytes / 2**30:.1f} GiB")
        swap = "none configured"
        if self.swap_total_bytes:
            swap = (f"{(self.swap_used_bytes or 0) / 2**20:.0f} MiB used of "
                    f"{self.swap_total_bytes / 2**20:.0f} MiB")
        if self.swap_pages_per_s:
            swap += f", {self.swap_pages_per_s:.0f} pages/s swapped"
        steal = f"{self.steal_cores:.3f} cores" if self.steal_cores is not None else "unknown"
        lines.append(f"memory: {mem}; swap: {swap}; steal: {steal}")
        if self.problems:
            lines.append("to fix:")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("nothing to fix")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def _swap_pages() -> int | None:
    total = 0
    found = False
    for line in (_read("/proc/vmstat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key in ("pswpin", "pswpout"):
            total += int(value)
            found = True
    return total if found else None


def _process_ticks() -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
        except OSError:
            continue
        try:
            name = raw[raw.index(b"(") + 1: raw.rindex(b")")].decode(errors="replace")
            fields = raw[raw.rindex(b")") + 2:].split()
            out[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
        except (ValueError, IndexError):
            continue
    return out


def _command(pid: int, width: int = 70) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())  # one line
    return text if len(text) <= width else text[: width - 1] + "…"


def _governors() -> dict[str, str]:
    from ._isolation import format_cpu_list

    by_gov: dict[str, list[int]] = {}
    for path in sorted(_CPU_SYS.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        gov = _read(path)
        if gov:
            by_gov.setdefault(gov, []).append(int(path.parent.parent.name[3:]))
    return {g: format_cpu_list(c) for g, c in by_gov.items()}


def _boost() -> bool | None:
    value = _read(_CPU_SYS / "cpufreq" / "boost")
    if value in ("0", "1"):
        return value == "1"
    value = _read(_CPU_SYS / "intel_pstate" / "no_turbo")
    if value in ("0", "1"):
        return value == "0"
    return None


def cpu_settings() -> dict[str, Any]:
    """How the CPUs are set up for timing, as pyperf records it
    (psf/pyperf:pyperf/_collect_metadata.py, ``cpu_config``).

    Returns
    -------
    dict
        ``frequency_driver`` (``scaling_driver`` of cpu0, e.g. ``intel_pstate``), ``governors``
        (governor -> CPU list), ``boost`` (turbo boost on/off, None unknown), ``smt``
        (``/sys/devices/system/cpu/smt/control``: ``on``, ``off``, ``notsupported``...),
        ``isolated_cpus`` (``isolcpus=``; ``""`` none) and ``nohz_full`` (tickless CPUs; ``""``
        none). None where the kernel exposes nothing (no cpufreq in a VM or container).
    """
    driver = _read(_CPU_SYS / "cpu0" / "cpufreq" / "scaling_driver")
    return {
        "frequency_driver": driver,
        "governors": _governors(),
        "boost": _boost(),
        "smt": _read(_CPU_SYS / "smt" / "control"),
        "isolated_cpus": _read(_CPU_SYS / "isolated"),
        "nohz_full": _read(_CPU_SYS / "nohz_full"),
    }


def _mean_mhz() -> float | None:
    values = []
    for path in _CPU_SYS.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        value = _read(path)
        if value and value.isdigit():
            values.append(int(value) / 1000.0)
    return sum(values) / len(values) if values else None


def system_check(window_s: float = 1.0, *, exclude_pids: Iterable[int] = (),
                 sample_interval_s: float = 0.05, top: int = TOP_PROCESSES) -> SystemCheck:
    """Observe the machine for ``window_s`` seconds and say whether it is quiet.

    Parameters
    ----------
    window_s : float
        Observation window, seconds (CPU use of processes is measured over it).
    exclude_pids : iterable of int
        Processes not counted as "other" besides this one (e.g. a registry already started).
    sample_interval_s : float
        Period of the run-queue samples within the window.
    top : int
        How many of the busiest other processes to list.

    Returns
    -------
    SystemCheck
    """
    from ._interference import read_cpu_ticks, read_procs_running

    me = os.getpid()
    excluded = {me, *exclude_pids}
    cpu_count = os.cpu_count() or 1
    allowed = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") \
        else tuple(range(cpu_count))
    try:
        t0_ticks = read_cpu_ticks()
    except OSError:
        t0_ticks = None
    procs0 = _process_ticks()
    swap0 = _swap_pages()
    t0 = time.monotonic()
    samples: list[int] = []
    deadline = t0 + max(window_s, 0.0)
    while True:
        value = read_procs_running()
        if value is not None:
            samples.append(value)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(sample_interval_s, left))
    elapsed = max(time.monotonic() - t0, 1e-6)
    procs1 = _process_ticks()
    swap1 = _swap_pages()
    try:
        t1_ticks = read_cpu_ticks()
    except OSError:
        t1_ticks = None

    other_cores = steal_cores = None
    if t0_ticks is not None and t1_ticks is not None:
        own = sum(procs1.get(p, ("", 0))[1] - procs0.get(p, ("", 0))[1]
                  for p in excluded if p in procs0 and p in procs1)
        other_cores = max(0.0, (t1_ticks.busy - t0_ticks.busy - own) / _CLK_TCK / elapsed)
        steal_cores = (t1_ticks.steal - t0_ticks.steal) / _CLK_TCK / elapsed
    busy = []
    for pid, (name, ticks) in procs1.items():
        if pid in excluded or pid not in procs0:
            continue
        delta = ticks - procs0[pid][1]
        if delta > 0:
            busy.append(BusyProcess(pid, name, delta / _CLK_TCK / elapsed))
    busy.sort(key=lambda p: -p.cpu_cores)
    busiest = tuple(BusyProcess(p.pid, p.name, p.cpu_cores, _command(p.pid))
                    for p in busy[:top])
    swap_rate = ((swap1 - swap0) / elapsed) if swap0 is not None and swap1 is not None else None
    mem = _meminfo()
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    cpus = cpu_settings()
    governors, boost, smt = cpus["governors"], cpus["boost"], cpus["smt"]
    isolated = cpus["isolated_cpus"] or ""

    problems: list[str] = []
    notes: list[str] = []
    if other_cores is not None and other_cores > QUIET_OTHER_CPU_CORES:
        names = ", ".join(f"{p.name} (pid {p.pid}, {p.cpu_cores:.2f})" for p in busiest[:3])
        problems.append(
            f"other processes used {other_cores:.2f} cores during the check (quiet: <= "
            f"{QUIET_OTHER_CPU_CORES}): stop or pause them ({names}), or wait with "
            "`pullbench bench --wait-quiet`"
        )
    if steal_cores is not None and steal_cores > QUIET_STEAL_CORES:
        problems.append(
            f"steal time {steal_cores:.2f} cores: the hypervisor gives this VM's CPUs to others; "
            "use a dedicated host or instance type, or expect noisy timings"
        )
    if swap_rate:
        problems.append(f"the machine is swapping ({swap_rate:.0f} pages/s): free memory first")
    swap_total = mem.get("SwapTotal")
    swap_used = (swap_total - mem.get("SwapFree", 0)) if swap_total is not None else None
    if swap_used:
        notes.append(f"{swap_used / 2**20:.0f} MiB of swap in use (pages may be faulted back in "
                     "during runs)")
    available, total = mem.get("MemAvailable"), mem.get("MemTotal")
    if available is not None and total and (available < 0.1 * total or available < 2**30):
        problems.append(
            f"only {available / 2**30:.1f} GiB of {total / 2**30:.1f} GiB memory available: the "
            "page cache the pulls write into will be evicted; free memory"
        )
    slow = {g: c for g, c in governors.items() if g != "performance"}
    if slow:
        which = "; ".join(f"'{g}' on CPUs {c}" for g, c in slow.items())
        problems.append(
            f"CPU frequency governor {which}: the clock follows the load; set 'performance' "
            "(cpupower frequency-set -g performance)"
        )
    if boost:
        problems.append(
            "turbo boost is on: the clock depends on temperature and on how many cores are "
            "busy; disable it for stable timings (echo 0 > /sys/devices/system/cpu/cpufreq/boost, "
            "or echo 1 > /sys/devices/system/cpu/intel_pstate/no_turbo)"
        )
    if smt == "on":
        notes.append("SMT is on: hyper-thread siblings share a core; give the puller and the "
                     "registry different physical cores with --cpus, or turn SMT off")
    if load is not None and load[0] > len(allowed):
        notes.append(f"load average {load[0]:.2f} exceeds the {len(allowed)} usable CPUs "
                     "(it trails the machine by about a minute)")
    if len(allowed) < 2:
        notes.append("one usable CPU: the puller and the registry share it (no isolation)")
    quiet = ((other_cores is None or other_cores <= QUIET_OTHER_CPU_CORES)
             and (steal_cores is None or steal_cores <= QUIET_STEAL_CORES) and not swap_rate)
    return SystemCheck(
        captured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        window_s=elapsed, cpu_count=cpu_count, allowed_cpus=allowed, loadavg_1_5_15=load,
        other_cpu_cores=other_cores, steal_cores=steal_cores,
        procs_running_mean=sum(samples) / len(samples) if samples else None,
        top_processes=busiest, governors=governors, boost=boost, smt=smt, isolated_cpus=isolated,
        cpu_mhz=_mean_mhz(), swap_total_bytes=swap_total, swap_used_bytes=swap_used,
        swap_pages_per_s=swap_rate, mem_total_bytes=total, mem_available_bytes=available,
        quiet=quiet, problems=tuple(problems), notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class QuietWait:
    """What :func:`wait_quiet` saw.

    Attributes
    ----------
    quiet : bool
        The machine stayed quiet for ``quiet_for_s`` before the timeout.
    waited_s : float
        Time spent waiting, seconds.
    checks : int
        Windows observed.
    last : SystemCheck
        The last window's check.
    """

    quiet: bool
    waited_s: float
    checks: int
    last: SystemCheck

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return {"quiet": self.quiet, "waited_s": self.waited_s, "checks": self.checks,
                "last": self.last.to_dict()}


def wait_quiet(timeout_s: float = 300.0, *, quiet_for_s: float = 5.0, window_s: float = 1.0,
               exclude_pids: Iterable[int] = ()) -> QuietWait:
    """Wait until the machine has been quiet for ``quiet_for_s`` seconds, at most ``timeout_s``.

    Parameters
    ----------
    timeout_s : float
        Upper bound on the wait, seconds.
    quiet_for_s : float
        How long the machine must stay quiet (consecutive quiet windows); capped at
        ``timeout_s``.
    window_s : float
        Length of each observation window.
    exclude_pids : iterable of int
        Processes not counted as "other" (see :func:`system_check`).

    Returns
    -------
    QuietWait
        ``quiet`` False when the timeout came first (the caller decides whether to go on).
    """
    start = time.monotonic()
    need = min(quiet_for_s, timeout_s)
    streak = 0.0
    checks = 0
    excluded = tuple(exclude_pids)
    while True:
        left = timeout_s - (time.monotonic() - start)
        check = system_check(max(min(window_s, left), 0.05), exclude_pids=excluded)
        checks += 1
        streak = streak + check.window_s if check.quiet else 0.0
        waited = time.monotonic() - start
        if streak >= need:
            return QuietWait(True, waited, checks, check)
        if waited >= timeout_s:
            return QuietWait(False, waited, checks, check)
