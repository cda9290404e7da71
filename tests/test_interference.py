"""Interference probes, CPU isolation and the machine preflight, with real load.

The load is real: :class:`pullbench.experiment._burner.CpuBurner` processes, pinned, bounded in
time and dying with the test. The machine is shared, so assertions compare the probes with what
the burners themselves consumed (read independently from their own ``/proc/<pid>/stat``), never
with an absolute idle level.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullbench._errors import BenchmarkError
from pullbench.cli import main
from pullbench.experiment._burner import CpuBurner
from pullbench.experiment._endpoints import default_registry_factory
from pullbench.experiment._interference import (
    INTERFERENCE_COLUMNS,
    InterferenceProbe,
    MachineCpuClock,
    _mountinfo_cgroups,
    process_cpu_s,
)
from pullbench.experiment._isolation import parse_cpu_setting, plan_cpus, thread_ids
from pullbench.experiment._results import load_results
from pullbench.experiment._runner import run_experiment
from pullbench.experiment._spec import ExperimentSpec
from pullbench.experiment._system import system_check, wait_quiet

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two_cpus = pytest.mark.skipif(not TWO_CPUS and os.environ.get("CI") != "true",
                                    reason="needs two CPUs")


def _other_cpus() -> tuple[int, int]:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


@needs_two_cpus
def test_burner_on_another_cpu_is_other_cpu_and_off_the_pullers_cpu():
    mine, other = _other_cpus()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {mine})
    try:
        with CpuBurner([other], seconds=6) as burner:
            time.sleep(0.2)
            outside = InterferenceProbe(puller_cpus=[mine], exclusive_puller_cpus=True).start()
            inside = InterferenceProbe({"daemon": burner.pids[0]}, interval_s=0).start()
            burner.pause()  # no burning between the two probes' readings
            before = process_cpu_s(burner.pids[0])
            burner.resume()
            time.sleep(1.5)
            burner.pause()
            got_out, got_in = outside.stop(), inside.stop()
            burned = process_cpu_s(burner.pids[0]) - before
    finally:
        os.sched_setaffinity(0, saved)
    assert set(INTERFERENCE_COLUMNS) <= set(got_out)
    assert burned > 0.2, "the burner got no CPU at all"
    # the burner's CPU shows up as other CPU, about core-seconds per second of what it burned ...
    assert got_out["other_cpu_s"] >= 0.8 * burned - 0.05
    # ... but not on the puller's CPU: it ran on the other one
    assert got_out["other_cpu_s"] - got_out["other_cpu_puller_cpus_s"] >= 0.8 * burned - 0.05
    # a burner inside the measured set is not "other"
    assert got_in["measured_cpu_s"] >= 0.8 * burned - 0.05
    assert got_out["other_cpu_s"] - got_in["other_cpu_s"] == pytest.approx(burned, abs=0.1)
    # the sampler ran and saw at least the burner and itself runnable
    assert got_out["procs_running_samples"] >= 10
    assert got_out["procs_running_max"] >= 2
    # this process slept: (almost) no CPU of its own, little run-queue wait
    assert got_out["measured_cpu_s"] < 0.1
    assert got_out["worker_run_delay_s"] < 0.5


@needs_two_cpus
def test_burner_on_the_pullers_cpu_is_other_cpu_there():
    mine, _ = _other_cpus()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {mine})
    try:
        with CpuBurner([mine], seconds=6) as burner:
            time.sleep(0.2)
            before = process_cpu_s(burner.pids[0])
            probe = InterferenceProbe(puller_cpus=[mine], exclusive_puller_cpus=True).start()
            time.sleep(1.5)
            got = probe.stop()
            burned = process_cpu_s(burner.pids[0]) - before
    finally:
        os.sched_setaffinity(0, saved)
    assert burned > 0.2
    assert got["other_cpu_puller_cpus_s"] >= 0.8 * burned - 0.05


def _scheduler_tick_s() -> float:
    """1 / CONFIG_HZ of the running kernel (10 ms when its config cannot be read)."""
    import gzip
    import platform

    for path in ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as fh:
                for line in fh:
                    if line.startswith("CONFIG_HZ="):
                        return 1.0 / int(line.split("=")[1])
        except (OSError, ValueError):
            continue
    return 0.01


# the machine's side lags by at most one scheduler tick (a task never switched out is charged at
# each tick), the measured side is exact: a window undercounts foreign CPU by this much at most
_TICK_LAG_S = _scheduler_tick_s() + 0.002


@needs_two_cpus
def test_short_windows_see_a_burner_to_within_a_scheduler_tick():
    """On 50 ms windows the nanosecond counters never lose more of a burner's CPU than their
    lag allows; other programs on a shared machine can only add to ``other_cpu_s``. (The
    tick-sampled ``/proc/stat`` estimate misses by more: this process's 1 ms bursts are charged
    whole ticks or nothing.)"""
    if MachineCpuClock().source is None:
        pytest.skip("no cpuacct or cgroup v2 runtime accounting on this machine")
    mine, other = _other_cpus()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {mine})
    shortfall = []
    try:
        with CpuBurner([other], seconds=10) as burner:
            time.sleep(0.2)
            for _ in range(20):
                before = process_cpu_s(burner.pids[0])
                probe = InterferenceProbe(interval_s=0).start()
                end = time.perf_counter() + 0.05
                while time.perf_counter() < end:  # the "pull": bursts of this process's CPU
                    burst = time.perf_counter() + 0.001
                    while time.perf_counter() < burst:
                        pass
                    time.sleep(0.001)
                got = probe.stop()
                burned = process_cpu_s(burner.pids[0]) - before
                assert got["cpu_time_source"] in ("cpuacct", "cgroup2")
                shortfall.append(burned - got["other_cpu_s"])
    finally:
        os.sched_setaffinity(0, saved)
    assert max(shortfall) <= _TICK_LAG_S, shortfall


def _cgroup2_mount() -> Path | None:
    return next((Path(point) for fstype, root, point, _ in _mountinfo_cgroups()
                 if fstype == "cgroup2" and root == "/"), None)


def test_cgroup2_source_sums_the_top_level_groups(tmp_path):
    """A real child group of the cgroup v2 root, a burner inside it: the ``cgroup2`` source
    counts its CPU (the mount table and membership are narrowed to make that source the one
    chosen; the counters read are the kernel's)."""
    mount = _cgroup2_mount()
    if mount is None or not os.access(mount, os.W_OK) or (mount / "cgroup.freeze").exists():
        pytest.skip("needs a writable cgroup v2 root")
    group = mount / f"pullbench-test-{os.getpid()}"
    group.mkdir()
    try:
        mountinfo = tmp_path / "mountinfo"
        mountinfo.write_text("".join(line + "\n" for line in Path("/proc/self/mountinfo")
                                     .read_text().splitlines() if " - cgroup2 " in line))
        membership = tmp_path / "cgroup"
        membership.write_text(f"0::/{group.name}\n")
        clock = MachineCpuClock(str(mountinfo), str(membership))
        assert clock.source == "cgroup2"
        with CpuBurner([None], seconds=5) as burner:
            (group / "cgroup.procs").write_text(str(burner.pids[0]))
            time.sleep(0.1)
            before, start = process_cpu_s(burner.pids[0]), clock.read()
            time.sleep(0.5)
            end, burned = clock.read(), process_cpu_s(burner.pids[0]) - before
            assert start is not None
            assert end is not None
            (mount / "cgroup.procs").write_text(str(burner.pids[0]))  # back, so the group can go
        assert burned > 0.1
        assert group.name in end.parts_ns
        assert end.busy_s_since(start) >= burned - _TICK_LAG_S
        # its parts are groups, not CPUs
        assert end.cpus_busy_s_since(start, [0]) is None
    finally:
        group.rmdir()


def test_no_machine_clock_inside_a_foreign_cgroup_mount(tmp_path):
    """A cgroup mount whose root is not the hierarchy's (a container's view) is not used."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("30 25 0:26 /docker/abc /sys/fs/cgroup/cpuacct rw - cgroup cgroup "
                         "rw,cpuacct\n")
    assert MachineCpuClock(str(mountinfo), str(tmp_path / "none")).source is None


def test_runnable_burners_raise_the_sampled_run_queue():
    probe = InterferenceProbe().start()
    with CpuBurner([None] * 4, seconds=4):
        time.sleep(1.0)
        got = probe.stop()
    # four burners are always runnable (waiting or running), plus the sampler reading the count
    assert got["procs_running_mean"] >= 4.0
    assert got["other_cpu_s"] > 0.1


def test_probe_reports_its_own_cost():
    probe = InterferenceProbe(interval_s=0.005).start()
    time.sleep(0.5)
    got = probe.stop()
    # the sampler woke ~100 times: some CPU, all of it inside this process's measured CPU
    assert got["procs_running_samples"] >= 20
    assert 0 < got["probe_sampler_cpu_s"] <= got["measured_cpu_s"] + 0.01
    # start and stop take time too (counter reads, thread start and join), outside the pull
    assert 0 < got["probe_overhead_s"] < 0.5
    # without a sampler nothing of the probe runs during the pull
    assert InterferenceProbe(interval_s=0).start().stop()["probe_sampler_cpu_s"] is None


def test_probe_columns_in_experiment_rows_and_environment(tmp_path):
    spec = ExperimentSpec(name="t-intf", images=("synthetic-small",),
                          arms=("go-iocopy", "containerd-1m"), blocks=2, warmup_blocks=0,
                          seed=3)
    run_experiment(spec, tmp_path / "res", progress=False)
    df = load_results(tmp_path / "res")
    for col in ("other_cpu_s", "other_cpu_cores", "measured_cpu_s", "interference_cores",
                "procs_running_mean", "worker_nivcsw", "worker_run_delay_s"):
        assert df[col].notna().all(), col
    # the measured set covers the worker: its CPU is at least the pull's own process CPU
    assert (df["measured_cpu_s"] >= 0.8 * (df["worker_cpu_user_s"] + df["worker_cpu_sys_s"])
            - 0.05).all()
    assert (df["procs_running_samples"] >= 1).all()
    env = json.loads((tmp_path / "res" / "environment.json").read_text())
    assert env["preflight"]["other_cpu_cores"] is not None
    assert isinstance(env["preflight"]["problems"], list)
    iso = env["cpu_isolation"]
    if TWO_CPUS:
        lo, hi = _other_cpus()
        assert iso["cpus"]["puller"] == [hi]
        assert iso["cpus"]["registry"] == [lo]
        # measured in the worker: it really ran on the puller's CPU
        assert set(df["puller_cpus"]) == {str(hi)}
        assert iso["applied"]["registry"]["in_process"] is True
        assert iso["applied"]["registry"]["threads"] >= 1
    assert set(df["puller_nice"]) == {os.getpriority(os.PRIO_PROCESS, 0)}
    # the caller's own threads were not pinned
    assert os.sched_getaffinity(0) == set(iso["cpus"]["allowed"])


@needs_two_cpus
@pytest.mark.peers
def test_distribution_is_pinned_and_measured(tmp_path):
    lo, hi = _other_cpus()
    seen: dict[str, object] = {}

    import contextlib

    @contextlib.contextmanager
    def watching(spec, work_dir):
        with default_registry_factory(spec, work_dir) as endpoint:
            yield endpoint
            pid = endpoint.details["pids"]["registry"]
            seen["affinity"] = {tid: os.sched_getaffinity(tid) for tid in thread_ids(pid)}

    spec = ExperimentSpec(name="t-dist-pin", images=("synthetic-64m",), registry="distribution",
                          arms=("go-iocopy",), blocks=2, warmup_blocks=0,
                          cpus=f"puller={lo},registry={hi}")
    run_experiment(spec, tmp_path / "res", progress=False, registry_factory=watching)
    assert seen["affinity"]
    assert set(map(frozenset, seen["affinity"].values())) == {frozenset({hi})}
    df = load_results(tmp_path / "res")
    assert set(df["puller_cpus"]) == {str(lo)}
    # Distribution's CPU is in the measured set, not "other": serving 64 MiB costs it CPU
    served = df["measured_cpu_s"] - df["worker_cpu_user_s"] - df["worker_cpu_sys_s"]
    assert served.sum() >= 0.03
    assert (df["servers_nivcsw"].notna()).all()


def test_cpu_settings_parse_and_plan():
    assert parse_cpu_setting("auto") == {}
    assert parse_cpu_setting("off") is None
    assert parse_cpu_setting("puller=0,1,registry=2-3") == {"puller": (0, 1),
                                                             "registry": (2, 3)}
    plan = plan_cpus("auto", allowed=[0, 1])
    assert (plan.puller, plan.registry, plan.proxy, plan.daemons) == ((1,), (0,), (0,), (1,))
    assert plan.exclusive_puller
    plan = plan_cpus("auto", allowed=[0, 1, 2, 3])
    assert (plan.puller, plan.registry) == ((2, 3), (0, 1))
    assert not plan_cpus("auto", allowed=[0]).pinned
    plan = plan_cpus("puller=0", allowed=[0, 1, 2])
    assert (plan.puller, plan.registry, plan.proxy) == ((0,), (1, 2), (1, 2))
    plan = plan_cpus("registry=2", allowed=[0, 1, 2])
    assert plan.puller == (0, 1)
    with pytest.raises(BenchmarkError, match="not available"):
        plan_cpus("puller=7", allowed=[0, 1])
    with pytest.raises(BenchmarkError, match="unknown role"):
        parse_cpu_setting("pullr=1")
    with pytest.raises(BenchmarkError, match="not a CPU"):
        parse_cpu_setting("puller=x")
    with pytest.raises(BenchmarkError, match="unknown role"):
        ExperimentSpec(cpus="worker=1")


def test_system_check_names_the_busy_process_and_what_to_fix():
    with CpuBurner([None, None], seconds=5) as burner:
        time.sleep(0.2)
        before = [process_cpu_s(p) for p in burner.pids]
        check = system_check(1.0, top=200)
        burned = [process_cpu_s(p) - b for p, b in zip(burner.pids, before, strict=True)]
    assert not check.quiet
    assert check.other_cpu_cores is not None
    assert check.other_cpu_cores > 0.25
    listed = {p.pid: p.cpu_cores for p in check.top_processes}
    for pid, cpu in zip(burner.pids, burned, strict=True):
        assert listed[pid] == pytest.approx(cpu / check.window_s, abs=0.15)
    cores = [p.cpu_cores for p in check.top_processes]
    assert cores == sorted(cores, reverse=True)
    assert any("other processes used" in p for p in check.problems)
    record = json.loads(json.dumps(check.to_dict()))
    assert record["quiet"] is False
    assert record["top_processes"]
    assert "to fix:" in check.format()


def test_wait_quiet_is_bounded():
    with CpuBurner([None, None], seconds=6):
        time.sleep(0.1)
        started = time.monotonic()
        waited = wait_quiet(1.5, quiet_for_s=5.0, window_s=0.5)
        took = time.monotonic() - started
    assert not waited.quiet
    assert waited.checks >= 2
    assert took < 4.0


def test_cli_system_check_and_require_quiet(tmp_path):
    runner = CliRunner()
    with CpuBurner([None, None], seconds=12):
        time.sleep(0.2)
        result = runner.invoke(main, ["system", "check", "--json", "--window", "0.5"])
        assert result.exit_code == 3, result.output
        assert json.loads(result.stdout)["quiet"] is False
        out = tmp_path / "res"
        result = runner.invoke(main, ["bench", "--image", "synthetic-small", "--arms",
                                      "go-iocopy,containerd-1m", "--blocks", "2",
                                      "--wait-quiet=1", "--require-quiet", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "--require-quiet" in result.output
    assert "not quiet" in result.output
    assert "still not quiet" in result.output
    assert not (out / "rows.jsonl").exists()
