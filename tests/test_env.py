"""environment.json records what pyperf records about the CPUs, and the cgroup's limits."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pullbench import capture_environment
from pullbench.experiment._env import cgroup_limits

CPU_KEYS = {"cpu_model", "cpu_count", "cpu_affinity", "cpu_frequency_driver", "cpu_governors",
            "cpu_boost", "smt", "isolated_cpus", "nohz_full"}
CGROUP_KEYS = {"version", "path", "cpu_quota_cores", "cpuset_cpus", "memory_max_bytes",
               "pids_max"}
SYS_CPU = Path("/sys/devices/system/cpu")


def _sys(name: str) -> str | None:
    try:
        return (SYS_CPU / name).read_text().strip()
    except OSError:
        return None


def test_host_records_cpu_settings_and_cgroup_limits_on_this_machine():
    env = capture_environment()
    json.dumps(env)  # JSON-able
    host = env["host"]
    assert CPU_KEYS <= host.keys()
    assert isinstance(host["cpu_model"], str)
    assert host["cpu_model"].strip() not in ("", "unknown")
    # what the kernel says, where it says anything (None / {} where it exposes nothing)
    assert host["smt"] == _sys("smt/control")
    assert host["isolated_cpus"] == _sys("isolated")
    assert host["nohz_full"] == _sys("nohz_full")
    assert host["cpu_frequency_driver"] == _sys("cpu0/cpufreq/scaling_driver")
    governors = {_sys(f"{p.parent.parent.name}/cpufreq/scaling_governor")
                 for p in SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_governor")}
    assert set(host["cpu_governors"]) == governors
    assert host["cpu_boost"] in (True, False, None)
    cgroup = host["cgroup"]
    assert cgroup.keys() == CGROUP_KEYS
    assert cgroup == cgroup_limits()
    assert cgroup["version"] in ("v1", "v2", None)
    if Path("/proc/self/cgroup").exists():
        assert cgroup["version"] is not None
        assert cgroup["path"].startswith("/")
    for key in ("memory_max_bytes", "pids_max"):
        assert cgroup[key] is None or (isinstance(cgroup[key], int) and cgroup[key] > 0), key
    quota = cgroup["cpu_quota_cores"]
    assert quota is None or quota > 0
    if cgroup["cpuset_cpus"] is not None:  # the process's own CPUs lie inside the group's
        allowed = _cpu_list(cgroup["cpuset_cpus"])
        assert set(os.sched_getaffinity(0)) <= allowed


def _cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


_CHILD = ("import json; from pullbench.experiment._env import cgroup_limits; "
          "print(json.dumps(cgroup_limits()))")
_LIMITS = {"memory_max_bytes": 256 * 2**20, "cpu_quota_cores": 0.5, "pids_max": 64}


def _make_group(name: str) -> tuple[list[Path], list[Path]]:
    """A control group with the limits of _LIMITS: (its folders, the cgroup.procs to join)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2 only
        enabled = (root / "cgroup.subtree_control").read_text().split()
        for controller in ("cpu", "memory", "pids"):
            if controller not in enabled:
                (root / "cgroup.subtree_control").write_text(f"+{controller}")
        group = root / name
        group.mkdir()
        (group / "memory.max").write_text(str(_LIMITS["memory_max_bytes"]))
        (group / "cpu.max").write_text("50000 100000")
        (group / "pids.max").write_text(str(_LIMITS["pids_max"]))
        return [group], [group / "cgroup.procs"]
    groups = {c: root / c / name for c in ("memory", "cpu", "pids")}
    for group in groups.values():
        group.mkdir()
    (groups["memory"] / "memory.limit_in_bytes").write_text(str(_LIMITS["memory_max_bytes"]))
    (groups["cpu"] / "cpu.cfs_period_us").write_text("100000")
    (groups["cpu"] / "cpu.cfs_quota_us").write_text("50000")
    (groups["pids"] / "pids.max").write_text(str(_LIMITS["pids_max"]))
    return list(groups.values()), [g / "cgroup.procs" for g in groups.values()]


@pytest.mark.root
def test_cgroup_limits_of_a_real_group(tmp_path):
    """A child process in a group with a memory, CPU and pids limit reads those limits."""
    name = f"pullbench-test-{os.getpid()}"
    try:
        groups, procs = _make_group(name)
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root with a writable cgroup tree: {exc}")
        pytest.skip(f"cannot create a control group here: {exc}")
    try:
        def join() -> None:  # in the child, before exec: move into the group
            for path in procs:
                path.write_text(str(os.getpid()))

        out = subprocess.run([sys.executable, "-c", _CHILD], preexec_fn=join, check=True,
                             capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        seen = json.loads(out.stdout)
    finally:
        for group in groups:
            with contextlib.suppress(OSError):
                group.rmdir()  # empty again: the child has exited
    assert not any(g.exists() for g in groups)
    assert seen["path"].endswith(name)
    assert {k: seen[k] for k in _LIMITS} == _LIMITS
    assert seen["version"] in ("v1", "v2")
