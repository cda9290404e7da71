"""Environment capture: what a result depends on, written once per experiment.

``environment.json`` records the host (CPU model, cores, memory, kernel, load; the CPU frequency
driver and governors, turbo boost, SMT, isolated and tickless CPUs as pyperf records them; the
cgroup's CPU, cpuset, memory and pids limits), Python and the
versions of the packages that move bytes, pullbench's version and git commit, the destination
filesystem, the registry (kind, version, URL), the images (references, digests, sizes), the
network profile, the spec and its seed, and the results schema version.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._paths import SOURCE_ROOT
from ._results import RESULTS_SCHEMA_VERSION
from ._system import cpu_settings

__all__ = ["capture_environment", "cgroup_limits", "filesystem_type"]

logger = logging.getLogger(__name__)

_PACKAGES = (
    "requests", "urllib3", "numpy", "scipy", "statsmodels", "pandas", "pyarrow", "zstandard",
    "matplotlib", "seaborn", "papermill",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, options) of every line of ``/proc/self/mounts``."""
    out = []
    for line in _read("/proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1].replace("\\040", " "), parts[2], parts[3]))
    return out


def _cgroup_value(directory: Path | None, name: str) -> str | None:
    if directory is None:
        return None
    text = _read(str(directory / name)).strip()
    return text or None


def cgroup_limits() -> dict[str, Any]:
    """The limits of this process's control group (cgroup v2, or v1 controllers).

    Returns
    -------
    dict
        ``version`` (``"v2"``, ``"v1"`` or None without cgroups), ``path`` (this process's
        cgroup), ``cpu_quota_cores`` (``cpu.max`` / ``cpu.cfs_quota_us`` over the period; None
        when unlimited), ``cpuset_cpus`` (the CPUs the group may use), ``memory_max_bytes``
        (``memory.max`` / ``memory.limit_in_bytes``; None when unlimited) and ``pids_max``
        (None when unlimited). Values the kernel does not expose are None.
    """
    v2_mount = next((m for m, fstype, _ in _mounts() if fstype == "cgroup2"), None)
    v1_mounts = {opt: m for m, fstype, options in _mounts() if fstype == "cgroup"
                 for opt in options.split(",")}
    paths: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path

    def group_dir(controller: str) -> Path | None:
        """The folder of this process's group for a v1 controller ("" = the v2 hierarchy)."""
        mount = v2_mount if controller == "" else v1_mounts.get(controller)
        if mount is None or controller not in paths:
            return None
        inside = Path(mount) / paths[controller].lstrip("/")
        return inside if inside.is_dir() else Path(mount)  # a namespace shows its root only

    def unlimited(value: str | None, big: int = 2**62) -> int | None:
        if value is None or value == "max" or not value.lstrip("-").isdigit():
            return None
        number = int(value)
        return None if number < 0 or number >= big else number

    v2 = group_dir("") if v2_mount and (Path(v2_mount) / "cgroup.controllers").exists() else None
    v2_has = set((_cgroup_value(v2, "cgroup.controllers") or "").split()) if v2 else set()

    def limit(controller: str, v2_file: str, *v1_files: str) -> str | None:
        """A controller's setting: from the v2 group when v2 runs it, else the v1 files."""
        if controller in v2_has:
            return _cgroup_value(v2, v2_file)
        directory = group_dir(controller) if controller in v1_mounts else None
        return next((v for f in v1_files if (v := _cgroup_value(directory, f))), None)

    quota: float | None = None
    if "cpu" in v2_has:
        quota_text, _, period_text = (_cgroup_value(v2, "cpu.max") or "").partition(" ")
        q, p = unlimited(quota_text), unlimited(period_text)
    else:
        q = unlimited(limit("cpu", "", "cpu.cfs_quota_us"))
        p = unlimited(limit("cpu", "", "cpu.cfs_period_us"))
    quota = q / p if q and p else None
    memory = unlimited(limit("memory", "memory.max", "memory.limit_in_bytes"))
    cpuset = limit("cpuset", "cpuset.cpus.effective", "cpuset.effective_cpus", "cpuset.cpus")
    pids = unlimited(limit("pids", "pids.max", "pids.max"))
    v1_used = bool(v1_mounts.keys() & {"cpu", "memory", "cpuset", "pids"})
    version = "v1" if v1_used else ("v2" if v2 is not None else None)
    return {
        "version": version,
        "path": paths.get("" if version == "v2" else "memory", paths.get("")),
        "cpu_quota_cores": quota,
        "cpuset_cpus": cpuset,
        "memory_max_bytes": memory,
        "pids_max": pids,
    }


def filesystem_type(path: str | Path) -> dict[str, str]:
    """Filesystem of ``path``: ``{"mountpoint", "fstype", "device"}`` from ``/proc/self/mounts``.

    The longest mount point that is a prefix of the resolved path wins. Unknown values are
    ``"unknown"`` (not on Linux); for a path that does not exist yet, its nearest existing parent
    is used.
    """
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    best = {"mountpoint": "unknown", "fstype": "unknown", "device": "unknown"}
    best_len = -1
    for line in _read("/proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mountpoint, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        try:
            inside = p == Path(mountpoint) or p.is_relative_to(mountpoint)
        except ValueError:
            inside = False
        if inside and len(mountpoint) > best_len:
            best = {"mountpoint": mountpoint, "fstype": fstype, "device": device}
            best_len = len(mountpoint)
    return best


def _git_commit() -> dict[str, Any]:
    root = SOURCE_ROOT
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def capture_environment(
    *,
    spec: Mapping[str, Any] | None = None,
    registry: Mapping[str, Any] | None = None,
    images: Sequence[Mapping[str, Any]] = (),
    dest_dir: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    preflight: Mapping[str, Any] | None = None,
    cpu_isolation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe the machine, software and experiment set-up as a JSON-able dict.

    Parameters
    ----------
    spec : Mapping, optional
        ``ExperimentSpec.to_dict()``.
    registry : Mapping, optional
        Registry endpoint description (kind, version, url, network_profile, tls).
    images : sequence of Mapping
        One mapping per image: name, reference, digest, size_bytes.
    dest_dir : path, optional
        Where content stores are written; its filesystem type is recorded.
    extra : Mapping, optional
        Anything else to record (e.g. ``notes``).
    preflight : Mapping, optional
        The machine check before the experiment (``SystemCheck.to_dict()``; with
        ``--wait-quiet`` the wait's record, whose ``last`` is the check).
    cpu_isolation : Mapping, optional
        The CPU plan of the roles (puller, registry, proxy, daemons), what was pinned, and the
        nice levels.

    Returns
    -------
    dict
        Keys: schema_version, captured_at, host, python, packages, pullbench, destination,
        registry, images, network_profile, spec, seed, preflight, cpu_isolation, extra.
    """
    from .._version import __version__

    uname = platform.uname()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    env: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "captured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "hostname": socket.gethostname(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else None),
            "mem_total_bytes": _mem_total_bytes(),
            "kernel": uname.release,
            "os": uname.system,
            "machine": uname.machine,
            "loadavg_1_5_15": list(load) if load else None,
            "is_root": hasattr(os, "geteuid") and os.geteuid() == 0,
            # as pyperf records them: frequency driver, governors, turbo boost, SMT, isolated
            # and tickless CPUs (None where the kernel exposes nothing), and the cgroup limits
            **{f"cpu_{k}" if not k.startswith(("smt", "isolated", "nohz")) else k: v
               for k, v in cpu_settings().items()},
            "cgroup": cgroup_limits(),
        },
        "python": {
            "version": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": _versions(),
        "pullbench": {"version": __version__, **_git_commit()},
        "destination": (
            {"path": str(Path(dest_dir).resolve()), **filesystem_type(dest_dir)}
            if dest_dir is not None else None
        ),
        "registry": dict(registry) if registry else None,
        "images": [dict(i) for i in images],
        "network_profile": (registry or {}).get("network_profile",
                                                (spec or {}).get("network_profile")),
        "spec": dict(spec) if spec else None,
        "seed": (spec or {}).get("seed"),
        "preflight": dict(preflight) if preflight else None,
        "cpu_isolation": dict(cpu_isolation) if cpu_isolation else None,
        "extra": dict(extra) if extra else {},
    }
    return env
