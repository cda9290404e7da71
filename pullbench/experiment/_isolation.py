"""Isolation: which CPUs the puller worker, the registry, the proxy and daemons run on.

A :class:`CpuPlan` says which CPUs each *role* may use:

``puller``
    The worker process that pulls (or, in-process, the thread that runs the pull).
``registry``
    The registry pullbench started: the embedded registry's threads (they live in the runner
    process: only the threads it started are pinned, never the caller's own) or Distribution's
    process.
``proxy``
    The shaping proxy of a network profile.
``daemons``
    Processes an arm names in ``Endpoint.details["pids"]`` under any other role (the daemons of
    real-puller arms); they pull, so by default they share the puller's CPUs.

The setting is a spec key (``cpus``) and a CLI option (``--cpus``):

``auto`` (default)
    On two or more allowed CPUs, the registry and the proxy get the lower half of the CPUs this
    process may use (at least one), the puller and daemons the rest: on a 2-CPU machine
    ``registry=0 proxy=0 puller=1 daemons=1``. CPU 0 usually takes more interrupts, so the
    servers go there. On one CPU nothing is pinned.
``off``
    Nothing is pinned.
``puller=1,registry=0`` (roles ``puller``, ``registry``, ``proxy``, ``daemons``)
    CPU lists as in ``taskset -c``: ``0``, ``0-3``, ``0,2``; a bare number after a role
    continues its list (``puller=0,1,registry=2``). Roles not given follow the defaults above
    (the proxy follows the registry, daemons the puller); if only the puller or only the servers
    are given, the other side gets the remaining allowed CPUs.

Pinning uses ``sched_setaffinity`` (sched_setaffinity(2)) on every thread of a process (threads
created later inherit the affinity of the thread that creates them). Nice levels are recorded,
not changed (``nice`` from ``/proc/<pid>/stat``). This mirrors what pyperf does for its worker
processes (``--affinity``, psf/pyperf:doc/system.rst) at the level of the roles of a pull.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import BenchmarkError

__all__ = [
    "CPU_ROLES",
    "CpuPlan",
    "apply_plan",
    "descendants",
    "endpoint_pids",
    "format_cpu_list",
    "nice_of",
    "parse_cpu_setting",
    "pin_process",
    "pin_threads",
    "plan_cpus",
    "thread_ids",
]

logger = logging.getLogger(__name__)

CPU_ROLES = ("puller", "registry", "proxy", "daemons")
_SERVER_ROLES = ("registry", "proxy")


def format_cpu_list(cpus: Iterable[int] | None) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (``taskset -c`` style); ``""`` for None or empty."""
    values = sorted(set(cpus or ()))
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_list_item(item: str, setting: str) -> list[int]:
    lo, dash, hi = item.partition("-")
    try:
        if dash:
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError
            return list(range(a, b + 1))
        return [int(item)]
    except ValueError:
        raise BenchmarkError(
            f"--cpus {setting!r}: {item!r} is not a CPU number or range (use e.g. 0, 2-3)"
        ) from None


def parse_cpu_setting(setting: str) -> dict[str, tuple[int, ...]] | None:
    """Parse a ``cpus`` setting: None for ``off``, ``{}`` for ``auto``, else role -> CPUs.

    Parameters
    ----------
    setting : str
        ``auto``, ``off`` or ``ROLE=CPULIST[,ROLE=CPULIST...]`` (see the module docstring).

    Returns
    -------
    dict or None

    Raises
    ------
    BenchmarkError
        Unknown role, bad CPU number, or a role given twice.
    """
    text = (setting or "").strip().lower()
    if text in ("", "auto"):
        return {}
    if text in ("off", "none", "no"):
        return None
    out: dict[str, list[int]] = {}
    role: str | None = None
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            role, _, item = item.partition("=")
            role = role.strip()
            if role not in CPU_ROLES:
                raise BenchmarkError(
                    f"--cpus {setting!r}: unknown role {role!r}; roles are {', '.join(CPU_ROLES)}"
                    " (e.g. --cpus puller=1,registry=0)"
                )
            if role in out:
                raise BenchmarkError(f"--cpus {setting!r}: role {role!r} is given twice")
            out[role] = []
            item = item.strip()
        if role is None:
            raise BenchmarkError(
                f"--cpus {setting!r}: start with a role, e.g. puller=1,registry=0 (or auto, off)"
            )
        out[role] += _parse_list_item(item, setting)
    return {r: tuple(sorted(set(v))) for r, v in out.items()}


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """The CPUs of each role (None: not pinned).

    Attributes
    ----------
    puller, registry, proxy, daemons : tuple of int or None
        CPU numbers of each role.
    setting : str
        The setting the plan came from (``auto``, ``off`` or the role list).
    allowed : tuple of int
        CPUs this process was allowed to use when the plan was made.
    reason : str
        One line on why the plan is what it is.
    """

    puller: tuple[int, ...] | None = None
    registry: tuple[int, ...] | None = None
    proxy: tuple[int, ...] | None = None
    daemons: tuple[int, ...] | None = None
    setting: str = "off"
    allowed: tuple[int, ...] = ()
    reason: str = ""

    def cpus_of(self, role: str) -> tuple[int, ...] | None:
        """The CPUs of ``role`` (``daemons`` for any role not in :data:`CPU_ROLES`)."""
        return getattr(self, role if role in CPU_ROLES else "daemons")  # type: ignore[no-any-return]

    @property
    def pinned(self) -> bool:
        """Whether any role is pinned."""
        return any(self.cpus_of(r) for r in CPU_ROLES)

    @property
    def exclusive_puller(self) -> bool:
        """The puller has CPUs no server role shares (so foreign work on them is measurable)."""
        if not self.puller:
            return False
        others = set().union(*(set(self.cpus_of(r) or ()) for r in _SERVER_ROLES))
        return bool(others) and not (set(self.puller) & others)

    def describe(self) -> str:
        """``puller=1 registry=0 proxy=0 daemons=1`` or ``not pinned (...)``."""
        if not self.pinned:
            return f"not pinned ({self.reason})" if self.reason else "not pinned"
        return " ".join(f"{r}={format_cpu_list(self.cpus_of(r)) or '-'}" for r in CPU_ROLES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for ``environment.json``."""
        return {"setting": self.setting, "allowed": list(self.allowed), "reason": self.reason,
                **{r: (list(v) if (v := self.cpus_of(r)) else None) for r in CPU_ROLES}}


def _allowed_cpus() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def plan_cpus(setting: str = "auto", allowed: Iterable[int] | None = None) -> CpuPlan:
    """Decide the CPUs of each role from a ``cpus`` setting.

    Parameters
    ----------
    setting : str
        ``auto``, ``off`` or ``ROLE=CPULIST,...`` (see the module docstring).
    allowed : iterable of int, optional
        CPUs available; default: this process's affinity (``sched_getaffinity(0)``).

    Returns
    -------
    CpuPlan

    Raises
    ------
    BenchmarkError
        The setting does not parse, or names a CPU this process may not use.
    """
    cpus = tuple(sorted(set(allowed))) if allowed is not None else _allowed_cpus()
    given = parse_cpu_setting(setting)
    if given is None:
        return CpuPlan(setting="off", allowed=cpus, reason="--cpus off")
    bad = sorted({c for v in given.values() for c in v} - set(cpus))
    if bad:
        raise BenchmarkError(
            f"--cpus {setting!r}: CPU(s) {format_cpu_list(bad)} are not available to this process "
            f"(allowed: {format_cpu_list(cpus)}); pick among those or use --cpus off"
        )
    if not given:
        if len(cpus) < 2 or not hasattr(os, "sched_setaffinity"):
            return CpuPlan(setting="auto", allowed=cpus,
                           reason="one CPU: nothing to separate" if len(cpus) < 2
                           else "CPU affinity is not supported here")
        half = max(1, len(cpus) // 2)
        servers, pullers = cpus[:half], cpus[half:]
        return CpuPlan(puller=pullers, registry=servers, proxy=servers, daemons=pullers,
                       setting="auto", allowed=cpus,
                       reason="default: servers on the lower half of the CPUs, puller on the rest")
    puller = given.get("puller")
    registry = given.get("registry")

    def rest(used: Iterable[int]) -> tuple[int, ...] | None:
        taken = set(used)
        return tuple(c for c in cpus if c not in taken) or None

    if puller is None and registry is not None:
        puller = rest(set(registry) | set(given.get("proxy", ())))
    if registry is None and puller is not None:
        registry = rest(puller) if "proxy" not in given else given["proxy"]
    proxy = given.get("proxy", registry)
    daemons = given.get("daemons", puller)
    return CpuPlan(puller=puller, registry=registry, proxy=proxy, daemons=daemons,
                   setting=setting, allowed=cpus, reason="given with --cpus")


def thread_ids(pid: int | None = None) -> set[int]:
    """Thread ids of process ``pid`` (default: this process); empty if it is gone."""
    try:
        return {int(t.name) for t in os.scandir(f"/proc/{pid or os.getpid()}/task")}
    except OSError:
        return set()


def pin_threads(tids: Iterable[int], cpus: Iterable[int]) -> list[int]:
    """``sched_setaffinity`` each thread in ``tids`` to ``cpus``; return the ones pinned.

    Threads that exited meanwhile are skipped.

    Raises
    ------
    BenchmarkError
        The kernel refused (e.g. the CPUs are outside this process's cpuset).
    """
    target = set(cpus)
    done = []
    for tid in tids:
        try:
            os.sched_setaffinity(tid, target)
            done.append(tid)
        except ProcessLookupError:
            continue
        except OSError as exc:
            raise BenchmarkError(
                f"could not pin thread {tid} to CPUs {format_cpu_list(target)}: {exc}; "
                "use --cpus off or other CPUs"
            ) from exc
    return done


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for tid in thread_ids(pid):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out |= {int(c) for c in text.split()}
    return out


def descendants(pid: int) -> set[int]:
    """Processes started by ``pid``, recursively (``/proc/<pid>/task/<tid>/children``)."""
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def pin_process(pid: int, cpus: Iterable[int], *, with_children: bool = True) -> int:
    """Pin every thread of ``pid`` (and of its descendants) to ``cpus``; return threads pinned."""
    pids = {pid} | (descendants(pid) if with_children else set())
    return sum(len(pin_threads(thread_ids(p), cpus)) for p in pids)


def nice_of(pid: int | None = None) -> int | None:
    """Nice level of process ``pid`` (default: this process), from ``/proc/<pid>/stat``."""
    try:
        raw = Path(f"/proc/{pid or os.getpid()}/stat").read_bytes()
        return int(raw[raw.rindex(b")") + 2:].split()[16])
    except (OSError, ValueError, IndexError):
        return None


def endpoint_pids(details: Mapping[str, Any], *, registry_in_process: bool) -> dict[str, int]:
    """The processes of an experiment by role, from ``Endpoint.details``.

    ``details["pids"]`` (role -> pid, set by registry factories and arms: ``registry`` for
    Distribution, any other role for daemons), ``details["network"]["proxy_pid"]`` (the shaping
    proxy), and ``harness``: this process (the runner; with ``registry_in_process`` also the
    embedded registry's threads).
    """
    out: dict[str, int] = {}
    for role, pid in (details.get("pids") or {}).items():
        if isinstance(pid, int) and pid > 0:
            out[str(role)] = pid
    proxy = (details.get("network") or {}).get("proxy_pid")
    if isinstance(proxy, int) and proxy > 0:
        out.setdefault("proxy", proxy)
    if registry_in_process:
        out.setdefault("registry", os.getpid())
    out["harness"] = os.getpid()
    return out


def apply_plan(plan: CpuPlan, pids: Mapping[str, int],
               registry_threads: Iterable[int] = ()) -> dict[str, Any]:
    """Pin the server processes and daemons of ``pids`` (role -> pid) and the embedded
    registry's ``registry_threads`` of this process, as ``plan`` says.

    The puller pins itself (in its worker, before the pull). Returns what was done, per role:
    ``{"registry": {"pid": 1234, "cpus": [0], "threads": 9, "nice": 0}, ...}``.
    """
    done: dict[str, Any] = {}
    for role, pid in pids.items():
        if role in ("puller", "harness"):
            continue
        cpus = plan.cpus_of(role)
        record: dict[str, Any] = {"pid": pid, "cpus": list(cpus) if cpus else None,
                                  "nice": nice_of(pid)}
        if cpus and pid != os.getpid():
            record["threads"] = pin_process(pid, cpus)
        done[role] = record
    tids = list(registry_threads)
    if tids and plan.registry:
        pinned = pin_threads(tids, plan.registry)
        done["registry"] = {"pid": os.getpid(), "cpus": list(plan.registry),
                            "threads": len(pinned), "nice": nice_of(), "in_process": True}
    return done
