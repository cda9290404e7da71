"""Real pullers in the experiment runner: mixed arms, spec keys, CLI, faults, Ctrl-C.

Everything is real: the embedded registry on 127.0.0.1 (its misbehaviour seam for a failing
pull), dockerd/containerd/skopeo started by the runner, a dockerd killed by PID from a watcher
thread, a CLI process interrupted with SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_pullers(need_tool):
    for binary, package in (("/usr/sbin/dockerd", "docker.io"), ("/usr/bin/docker", "docker.io"),
                            ("/usr/bin/containerd", "containerd"), ("/usr/bin/ctr", "containerd"),
                            ("/usr/bin/skopeo", "skopeo"), ("strace", "strace")):
        need_tool(binary, package)


def _rows(folder: Path) -> list[dict]:
    path = folder / "rows.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(predicate, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_spec_keys_for_external_arms():
    from pullbench import BenchmarkError, ExperimentSpec

    spec = ExperimentSpec.from_mapping({
        "images": ["synthetic-small"],
        "arms": ["go-iocopy", "docker", "ctr-pull:snapshotter=native",
                 {"kind": "skopeo", "params": {"format": "oci"}},
                 {"kind": "command", "name": "curl", "params": {"command": "curl {url}"}},
                 {"kind": "docker", "name": "docker-vfs",
                  "params": {"storage_driver": "vfs", "binary": "/usr/sbin/dockerd"}}],
    })
    kinds = {a.name: a.kind for a in spec.arms}
    assert kinds == {"go-iocopy": "strategy", "docker": "docker",
                     "ctr-pull[snapshotter=native]": "ctr-pull", "skopeo[format=oci]": "skopeo",
                     "curl": "command", "docker-vfs": "docker"}
    again = ExperimentSpec.from_mapping(json.loads(json.dumps(spec.to_dict())))
    assert again == spec  # spec.json round trip (resume)
    assert spec.to_dict()["arms"][0] == {"name": "go-iocopy", "strategy": "go-iocopy",
                                         "params": {}}  # strategy arms: spec.json unchanged
    with pytest.raises(BenchmarkError, match="unknown kind 'podman'"):
        ExperimentSpec.from_mapping({"arms": [{"kind": "podman"}]})


def test_preflight_refuses_bad_external_arms_before_anything_runs():
    from pullbench import ExperimentSpec
    from pullbench.arms import ArmError
    from pullbench.experiment._runner import preflight

    with pytest.raises(ArmError, match=r"arm 'docker\[buffer_bytes=1\]' \(docker\): unknown"):
        preflight(ExperimentSpec.from_mapping({"arms": ["go-iocopy", "docker:buffer_bytes=1"]}))
    with pytest.raises(ArmError, match="needs a command"):
        preflight(ExperimentSpec.from_mapping({"arms": [{"kind": "command", "name": "c"}]}))


def test_mixed_experiment_rows_and_environment(real_pullers, tmp_path):
    from pullbench import ExperimentSpec, load_results, run_experiment

    spec = ExperimentSpec.from_mapping({
        "name": "mixed", "images": ["synthetic-small"], "blocks": 2, "warmup_blocks": 0,
        "arms": ["go-iocopy", "docker:storage_driver=vfs", "ctr-fetch", "skopeo"],
    })
    result = run_experiment(spec, tmp_path / "out", progress=False)
    assert result.ok_runs == 8, [r["error"] for r in _rows(tmp_path / "out")]
    rows = _rows(tmp_path / "out")
    by_kind = {r["arm_kind"]: r for r in rows}
    assert set(by_kind) == {"strategy", "docker", "ctr-fetch", "skopeo"}
    for row in rows:
        assert Path(row["arm_binary"]).is_absolute()
        assert row["arm_version"] not in ("", "unknown", None)
        assert row["duration_s"] > 0
    assert by_kind["docker"]["arm_binary"] == "/usr/bin/docker"
    assert by_kind["docker"]["daemon_binary"] == "/usr/sbin/dockerd"
    assert by_kind["docker"]["storage_driver"] == "vfs"
    env = json.loads((tmp_path / "out" / "environment.json").read_text())
    described = {a["kind"]: a for a in env["extra"]["external_arms"]}
    assert set(described) == {"docker", "ctr-fetch", "skopeo"}
    assert described["docker"]["daemon"]["version"].startswith("20.10")
    assert described["ctr-fetch"]["daemon"]["binary"] == "/usr/bin/containerd"
    for arm in described.values():
        if "daemon" in arm:  # stopped and removed after the experiment
            assert not Path(arm["daemon"]["workdir"]).exists()
    df = load_results(tmp_path / "out")
    assert {"arm_kind", "daemon_cpu_user_s", "cpu_ns_per_byte"} <= set(df.columns)
    assert (df.loc[df.arm_kind == "docker", "cpu_ns_per_byte"] > 0).all()


def test_cli_mixed_arms_with_tls_trace_and_commands(real_pullers, tmp_path, need_tool):
    from pullbench.cli import main

    need_tool("curl", "curl")
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, [
        "bench", "--arms", "go-iocopy,skopeo", "--image", "synthetic-small", "--tls",
        "--blocks", "2", "--warmup-blocks", "0", "--no-report", "--no-progress", "--trace",
        "--command", "curl=curl -sf --cacert {ca} -o {dest}/m {url}/v2/{repo}/manifests/{tag}",
        "--prepare", "curl=test -d {dest}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    all_rows = _rows(out)
    assert all(r["status"] == "ok" for r in all_rows), [r["error"] for r in all_rows]
    rows = {r["arm"]: r for r in all_rows}
    # default names show the tracing; a name given explicitly (--command curl=...) is kept
    assert set(rows) == {"go-iocopy", "skopeo[trace=True]", "curl"}
    assert rows["curl"]["traced"] is True
    skopeo = rows["skopeo[trace=True]"]
    assert skopeo["traced"] is True
    assert skopeo["tls_verified"] is True
    hist = {int(k): v for k, v in skopeo["write_size_hist"].items()}
    assert max(hist, key=lambda b: b * hist[b]) == 16384  # TLS records
    assert rows["curl"]["arm_binary"].endswith("/curl")
    assert "traced" not in rows["go-iocopy"]


def test_cli_refuses_a_prepare_without_its_command():
    from pullbench.cli import main

    result = CliRunner().invoke(main, ["bench", "--prepare", "x=true", "--blocks", "1"])
    assert result.exit_code == 2
    assert "no --command arm named x" in result.output


def test_daemon_that_fails_to_start_stops_before_any_run(real_pullers, tmp_path):
    from pullbench import ExperimentSpec, run_experiment
    from pullbench.arms import DaemonError

    spec = ExperimentSpec.from_mapping({
        "images": ["synthetic-small"], "blocks": 1, "warmup_blocks": 0,
        "arms": ["go-iocopy", "docker:storage_driver=btrfs"]})
    with pytest.raises(DaemonError, match="error initializing graphdriver"):
        run_experiment(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # no run, nothing half-written


@contextlib.contextmanager
def _own_registry(holder: dict):
    """A registry factory: the embedded registry, kept in ``holder`` for the test to steer."""
    from pullbench import Endpoint
    from pullbench.servers import EmbeddedRegistry

    @contextlib.contextmanager
    def factory(spec, work_dir):
        with EmbeddedRegistry(work_dir / "registry") as reg:
            holder["registry"] = reg
            yield Endpoint(host=reg.host, url=reg.url, plain_http=True, kind="embedded")

    yield factory


def test_a_failing_pull_is_an_error_row_and_the_experiment_goes_on(real_pullers, tmp_path):
    from pullbench import ExperimentSpec, run_experiment
    from pullbench.servers import Misbehavior

    out = tmp_path / "out"
    holder: dict = {}

    def misbehave_for_a_while() -> None:
        # after the push, before the runs: manifest GETs fail until a run has failed; then the
        # registry behaves again
        if not _wait_for(lambda: (out / "environment.json").exists()):
            return
        holder["registry"].misbehavior = Misbehavior(fail_status=500, fail_on="manifests")
        _wait_for(lambda: any(r["status"] == "error" for r in _rows(out)))
        holder["registry"].misbehavior = Misbehavior()

    spec = ExperimentSpec.from_mapping({
        "images": ["synthetic-small"], "blocks": 4, "warmup_blocks": 0,
        "arms": ["docker:storage_driver=vfs"]})
    watcher = threading.Thread(target=misbehave_for_a_while, daemon=True)
    watcher.start()
    with _own_registry(holder) as factory:
        result = run_experiment(spec, out, progress=False, registry_factory=factory)
    watcher.join()
    rows = _rows(out)
    assert len(rows) == 4  # the experiment went on
    assert rows[0]["status"] == "error"
    assert "docker pull failed" in rows[0]["error"]
    assert "500" in rows[0]["error"] or "Internal Server Error" in rows[0]["error"], rows[0]
    assert rows[-1]["status"] == "ok", rows[-1]["error"]
    assert result.ok_runs >= 2


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def test_a_daemon_that_dies_is_restarted_then_the_experiment_stops(real_pullers, tmp_path,
                                                                   process_running):
    from pullbench import BenchmarkError, ExperimentSpec, run_experiment
    from pullbench.arms._base import MAX_RESTARTS

    out = tmp_path / "out"
    killed: list[int] = []

    def kill_dockerd_repeatedly() -> None:
        if not _wait_for(lambda: (out / "environment.json").exists()):
            return
        env = json.loads((out / "environment.json").read_text())
        pidfile = Path(env["extra"]["external_arms"][0]["daemon"]["workdir"]) / "dockerd.pid"
        def ok_rows() -> int:
            return sum(r["status"] == "ok" for r in _rows(out))

        for _ in range(MAX_RESTARTS + 1):
            served = ok_rows()
            # the daemon (first or restarted) is up and has served a run since the last kill
            if not _wait_for(lambda n=served: ok_rows() > n):
                return
            pid = _pid_from(pidfile)
            if pid is None or pid in killed or not process_running(pid):
                return
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)  # this test's own dockerd, by PID

    spec = ExperimentSpec.from_mapping({
        "images": ["synthetic-small"], "blocks": 30, "warmup_blocks": 0,
        "arms": ["docker:storage_driver=vfs"]})
    killer = threading.Thread(target=kill_dockerd_repeatedly, daemon=True)
    killer.start()
    with pytest.raises(BenchmarkError, match="experiment stopped") as info:
        run_experiment(spec, out, progress=False)
    killer.join(timeout=60)
    assert len(killed) == MAX_RESTARTS + 1, str(info.value)[:3000]
    assert "--resume" in str(info.value)
    rows = _rows(out)
    assert len(rows) >= MAX_RESTARTS + 1  # every finished row kept
    assert len(rows) < 30
    assert (out / "rows.parquet").exists()
    assert sum(r["status"] == "ok" for r in rows) >= MAX_RESTARTS  # runs after each restart


def test_ctrl_c_stops_the_daemons_and_keeps_the_rows(real_pullers, tmp_path, process_running):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pullbench.cli import main; main()", "bench", "--arms",
         "docker:storage_driver=vfs,ctr-pull", "--image", "synthetic-small", "--blocks", "50",
         "--warmup-blocks", "0", "--no-report", "--no-progress", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: len(_rows(out)) >= 2, timeout_s=180)
        described = json.loads((out / "environment.json").read_text())["extra"]["external_arms"]
        daemons = [(_pid_from(Path(a["daemon"]["workdir"]) / "dockerd.pid")
                    if a["kind"] == "docker" else a["daemon"]["pid"], a["daemon"]["workdir"])
                   for a in described]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "continue with: pullbench bench --resume" in output
    rows = _rows(out)
    assert 2 <= len(rows) < 100
    assert (out / "rows.parquet").exists()
    for pid, workdir in daemons:
        assert pid is not None
        assert not process_running(pid), f"daemon {pid} survived Ctrl-C"
        assert not Path(workdir).exists()


def test_external_arm_rows_carry_interference_with_the_client_in_the_measured_set(tmp_path):
    """A real puller's client runs as the runner's child inside the timed run: its CPU belongs
    to the measured set (RUSAGE_CHILDREN), not to 'other processes', and its rows get the same
    interference columns as a strategy's, so disturbed blocks are flagged for every arm."""
    from pullbench import ExperimentSpec, run_experiment

    burn = (f"{sys.executable} -c \"import time; t = time.process_time()\n"
            "while time.process_time() - t < 0.4: pass\"")
    spec = ExperimentSpec.from_mapping({
        "name": "burn", "images": ["synthetic-small"], "blocks": 2, "warmup_blocks": 0,
        "arms": ["go-iocopy", {"kind": "command", "name": "burn", "params": {"command": burn}}],
    })
    result = run_experiment(spec, tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    assert result.ok_runs == 4, [r["error"] for r in rows]
    for row in rows:
        assert row["interference_cores"] is not None, row["arm"]
        assert row["other_cpu_s"] is not None
    for row in (r for r in rows if r["arm"] == "burn"):
        assert row["measured_cpu_s"] >= 0.35  # the client's 0.4 s of CPU, measured as ours
        assert row["worker_wait_share"] is None  # the runner's threads are not the puller
