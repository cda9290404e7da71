"""Private daemons for the arms: start once, leave nothing, die with their parent, fail clearly.

Real containerd and dockerd (Debian's packages), real faults: a dockerd killed by PID, a storage
driver the filesystem cannot hold, a parent process killed with SIGKILL, a tag the registry
does not have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def docker_tools(need_tool):
    need_tool("/usr/sbin/dockerd", "docker.io")
    need_tool("/usr/bin/docker", "docker.io")


@pytest.fixture(scope="module")
def containerd_tools(need_tool):
    need_tool("/usr/bin/containerd", "containerd")
    need_tool("/usr/bin/ctr", "containerd")


def _gone(pid: int, process_running, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_running(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("kind", ["containerd", "dockerd-overlay2", "dockerd-vfs"])
def test_daemon_leaves_nothing_behind(kind, docker_tools, containerd_tools, process_running):
    from pullbench.arms import ContainerdDaemon, DockerDaemon
    from pullbench.arms._daemons import mounts_under

    if kind == "containerd":
        daemon = ContainerdDaemon()
    else:
        daemon = DockerDaemon(storage_driver=kind.split("-")[1])
    with daemon:
        workdir = daemon.workdir
        assert workdir is not None
        assert workdir.is_dir()
        tree = daemon.tree()
        assert tree[0] == daemon.pid
        if kind.startswith("dockerd"):
            assert len(tree) >= 2  # dockerd and the containerd it starts
        sockets = [p for p in workdir.rglob("*") if p.is_socket()]
        assert sockets
        assert str(workdir).startswith("/tmp/") or str(workdir).startswith(os.environ.get(
            "TMPDIR", "/tmp"))
        if kind == "dockerd-overlay2":
            assert mounts_under(workdir)  # overlay2 bind-mounts its data root
        # every daemon of the tree keeps its temp files in the work folder, not in /tmp
        for pid in tree:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            tmpdir = next((e.decode()[7:] for e in environ if e.startswith(b"TMPDIR=")), None)
            assert tmpdir is not None, f"pid {pid} has no TMPDIR"
            assert Path(tmpdir).is_relative_to(workdir), (pid, tmpdir)
        if kind == "containerd":  # its stack dump (SIGUSR1) lands there too
            before = set(Path("/tmp").glob("containerd.*.stacks.log"))
            os.kill(daemon.pid, signal.SIGUSR1)  # our own containerd, by PID
            deadline = time.monotonic() + 10
            while not list(workdir.rglob("containerd.*.stacks.log")):
                assert time.monotonic() < deadline, "no stack dump in the work folder"
                time.sleep(0.1)
            assert set(Path("/tmp").glob("containerd.*.stacks.log")) == before
    for pid in tree:
        assert _gone(pid, process_running), f"pid {pid} still running"
    assert not workdir.exists()
    assert mounts_under(workdir) == []


def test_mounts_a_killed_dockerd_left_are_unmounted_on_close(docker_tools, process_running):
    """SIGKILL gives dockerd no chance to unmount its overlay2 data root: close() does it, by
    path, under the daemon's own folder only."""
    from pullbench.arms import DockerDaemon
    from pullbench.arms._daemons import mounts_under

    daemon = DockerDaemon(storage_driver="overlay2").start()
    workdir = daemon.workdir
    assert workdir is not None
    pid = daemon.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # our own dockerd, by PID
    assert _gone(pid, process_running)
    assert mounts_under(workdir)  # left behind
    daemon.close()
    assert mounts_under(workdir) == []
    assert not workdir.exists()


def test_a_killed_dockerd_restarts_on_an_empty_data_root(docker_tools, process_running):
    """What a SIGKILLed dockerd left (here: a stray layer folder, as a kill inside
    DELETE /images leaves one no image references) is gone after the restart: the next run's
    cold-state check can pass."""
    from pullbench.arms import DockerDaemon

    daemon = DockerDaemon(storage_driver="overlay2").start()
    try:
        stray = daemon.data_root / "image" / "overlay2" / "layerdb" / "sha256" / ("a" * 64)
        stray.mkdir(parents=True)
        pid = daemon.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # our own dockerd, by PID
        assert _gone(pid, process_running)
        daemon.restart()
        assert daemon.running
        assert daemon.restarts == 1
        assert not stray.exists()
        assert daemon.ready()
    finally:
        daemon.close()


def test_daemon_dies_with_its_parent_even_on_sigkill(docker_tools, process_running, tmp_path):
    """A process that started dockerd is SIGKILLed: dockerd and its containerd stop, no mount
    stays, and the next start of a dockerd removes the orphaned work folder."""
    from pullbench.arms import DockerDaemon
    from pullbench.arms._daemons import mounts_under

    script = textwrap.dedent("""
        import json, sys, time
        from pullbench.arms import DockerDaemon
        d = DockerDaemon(storage_driver="overlay2").start()
        print(json.dumps({"tree": d.tree(), "workdir": str(d.workdir)}), flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        info = json.loads(parent.stdout.readline())  # type: ignore[union-attr]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    workdir = Path(info["workdir"])
    for pid in info["tree"]:
        assert _gone(pid, process_running), f"daemon pid {pid} outlived its parent"
    assert mounts_under(workdir) == []  # dockerd unmounted its data root on SIGTERM
    assert (workdir / "owner").exists()  # nobody removed the folder yet...
    with DockerDaemon(storage_driver="vfs"):
        assert not workdir.exists()  # ...the next start swept it


def test_unsupported_storage_driver_fails_before_any_run_with_the_log(docker_tools):
    from pullbench.arms import DaemonError, DockerDaemon

    daemon = DockerDaemon(storage_driver="btrfs")  # the test machine's / is not btrfs
    with pytest.raises(DaemonError, match="btrfs") as info:
        daemon.start()
    first_line = str(info.value).splitlines()[0]
    assert "error initializing graphdriver" in first_line  # the daemon's own reason, up front
    assert "its log ends with" in first_line
    assert info.value.log_tail
    assert daemon.workdir is None
    assert not daemon.running


def test_missing_binary_names_the_debian_package(arm_targets):
    from pullbench import ServerError
    from pullbench.arms import make_arm

    cases = [("docker", {"binary": "/nonexistent/dockerd"}, "docker.io"),
             ("docker", {"client": "/nonexistent/docker"}, "docker.io"),
             ("ctr-pull", {"binary": "/nonexistent/containerd"}, "containerd"),
             ("skopeo", {"binary": "/nonexistent/skopeo"}, "skopeo")]
    for kind, params, package in cases:
        arm = make_arm(kind, kind, params)
        with arm, pytest.raises(ServerError, match=f"apt-get install {package}"):
            arm.start([arm_targets["plain"]])


def test_bad_parameters_are_refused_before_anything_starts():
    from pullbench.arms import ArmError, make_arm

    with pytest.raises(ArmError, match="unknown kind"):
        make_arm("podman", "p")
    with pytest.raises(ArmError, match=r"unknown parameter\(s\) \['buffer_bytes'\]"):
        make_arm("docker", "d", {"buffer_bytes": 1})
    with pytest.raises(ArmError, match="storage_driver"):
        make_arm("docker", "d", {"storage_driver": "overlay3"})
    with pytest.raises(ArmError, match="snapshotter"):
        make_arm("ctr-pull", "c", {"snapshotter": "btrfs"})
    with pytest.raises(ArmError, match="must be bool"):
        make_arm("skopeo", "s", {"trace": "yes"})


@pytest.fixture(scope="module")
def docker_arm(docker_tools, arm_targets):
    from pullbench.arms import make_arm

    arm = make_arm("docker", "docker", {"storage_driver": "vfs"})
    arm.start(list(arm_targets.values()))
    yield arm
    arm.close()


def test_cold_state_is_verified_before_every_run(docker_arm, arm_targets, tmp_path):
    target = arm_targets["plain"]
    first = docker_arm.run(target, tmp_path / "a")
    assert first["status"] == "ok", first["error"]
    state = docker_arm.state()
    assert state["images"]
    assert state["layers"]  # the pull left layers...
    docker_arm.prepare(target, tmp_path / "b")
    assert not any(docker_arm.state().values())  # ...prepare removed them, and checked
    second = docker_arm.run(target, tmp_path / "c")
    assert second["status"] == "ok", second["error"]
    assert second["cold_check_s"] > 0
    assert second["daemon_wchar"] >= target.size_bytes  # every layer downloaded again


def test_a_failing_pull_is_an_error_row_with_the_daemons_message(docker_arm, arm_targets,
                                                                 tmp_path):
    from pullbench.arms import PullTarget

    good = arm_targets["plain"]
    missing = PullTarget.from_reference(f"{good.registry}/fixtures/absent:latest")
    row = docker_arm.run(missing, tmp_path / "x")
    assert row["status"] == "error"
    assert "Error response from daemon" in row["error"]
    assert "absent" in row["error"]
    after = docker_arm.run(good, tmp_path / "y")  # the arm goes on
    assert after["status"] == "ok", after["error"]


def test_a_daemon_that_dies_is_restarted(docker_tools, arm_targets, tmp_path, process_running):
    from pullbench.arms import DaemonDied, make_arm
    from pullbench.arms._base import MAX_RESTARTS

    arm = make_arm("docker", "docker", {"storage_driver": "vfs"})
    with arm:
        arm.start([arm_targets["plain"]])
        assert arm.daemon is not None
        for n in range(1, MAX_RESTARTS + 1):
            pid = arm.daemon.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # our own dockerd, by PID
            assert _gone(pid, process_running)
            assert not arm.daemon.running  # seen as dead at once (a zombie is not running)
            row = arm.run(arm_targets["plain"], tmp_path / f"r{n}")
            assert row["status"] == "ok", row["error"]
            assert arm.daemon.restarts == n
        pid = arm.daemon.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _gone(pid, process_running)
        with pytest.raises(DaemonDied, match="stopping the experiment"):
            arm.run(arm_targets["plain"], tmp_path / "last")


def test_the_prs_literal_command_is_timed_whole(docker_tools, arm_targets, tmp_path):
    """literal_pr_form: the image is present before the run, and the timed command is the PR's
    ``docker rmi -f && docker system prune -f && docker pull`` (every layer downloaded again)."""
    from pullbench.arms import make_arm

    target = arm_targets["plain"]
    arm = make_arm("docker", "docker-pr", {"storage_driver": "vfs", "literal_pr_form": True})
    with arm:
        arm.start([target])
        argv = arm.pull_argv(target, tmp_path / "x")
        assert argv[:2] == ["/bin/sh", "-c"]
        assert " rmi -f " in argv[2]
        assert " system prune -f && " in argv[2]
        assert argv[2].endswith(f" pull {target.reference}")
        rows = [arm.run(target, tmp_path / f"r{i}") for i in range(2)]
        assert arm.state()["images"]  # the PR's form leaves the image there for the next run
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["literal_pr_form"] is True
        assert row["daemon_wchar"] >= target.size_bytes  # removed and pulled again, timed
