"""The ``command`` arm: hyperfine's setup/prepare/cleanup, placeholders, errors as rows.

Real commands (curl, sh) against the embedded registry on 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def curl(need_tool):
    return need_tool("curl", "curl")


def _started(params, targets):
    from pullbench.arms import make_arm

    arm = make_arm("command", "cmd", params)
    arm.start(targets)
    return arm


def test_placeholders_reach_the_command(curl, arm_targets, tmp_path):
    target = arm_targets["plain"]
    log = tmp_path / "seen.jsonl"
    # every placeholder, as the command saw it (shell-quoted values arrive unchanged)
    # (literal braces doubled, as in str.format)
    record = ("printf '{{\"ref\":\"%s\",\"registry\":\"%s\",\"repo\":\"%s\",\"tag\":\"%s\","
              "\"digest\":\"%s\",\"dest\":\"%s\",\"url\":\"%s\"}}\\n' {ref} {registry} {repo} "
              "{tag} {digest} {dest} {url} >> " + str(log))
    arm = _started({"command": f"{record} && curl -sf -o {{dest}}/manifest "
                               "-H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                               "{url}/v2/{repo}/manifests/{digest}",
                    "setup": f"echo setup >> {tmp_path / 'setup.log'}",
                    "prepare": "test -d {dest} && touch {dest}/prepared",
                    "cleanup": f"ls {{dest}} > {tmp_path / 'cleanup.log'}"}, [target])
    with arm:
        dest = tmp_path / "run-0"
        row = arm.run(target, dest)
    assert row["status"] == "ok", row["error"]
    seen = json.loads(log.read_text())
    assert seen == {"ref": target.reference, "registry": target.registry,
                    "repo": target.repository, "tag": target.tag, "digest": target.digest,
                    "dest": str(dest), "url": target.url}
    assert (tmp_path / "setup.log").read_text() == "setup\n"  # once per image, not per run
    assert (tmp_path / "cleanup.log").read_text().split() == ["manifest", "prepared"]
    assert row["arm_kind"] == "command"
    assert row["duration_s"] > 0
    assert row["client_cpu_user_s"] + row["client_cpu_sys_s"] >= 0


def test_a_failing_command_is_an_error_row_with_its_stderr(arm_targets, tmp_path):
    target = arm_targets["plain"]
    with _started({"command": "echo 'manifest unknown: no such thing' >&2; exit 3"},
                  [target]) as arm:
        row = arm.run(target, tmp_path / "d")
        again = arm.run(target, tmp_path / "e")
    assert row["status"] == "error"
    assert "exit 3" in row["error"]
    assert "manifest unknown: no such thing" in row["error"]
    assert again["status"] == "error"  # each run is its own row; nothing raised


def test_a_failing_prepare_is_an_error_row(arm_targets, tmp_path):
    target = arm_targets["plain"]
    with _started({"command": "true", "prepare": "echo not ready >&2; false"},
                  [target]) as arm:
        row = arm.run(target, tmp_path / "d")
    assert row["status"] == "error"
    assert row["error"].startswith("prepare:")
    assert "not ready" in row["error"]


def test_bad_commands_are_refused_before_any_run():
    from pullbench.arms import ArmError, make_arm

    with pytest.raises(ArmError, match=r"unknown placeholder\(s\) \['\{image\}'\]"):
        make_arm("command", "c", {"command": "pull {image}"})
    with pytest.raises(ArmError, match="needs a command"):
        make_arm("command", "c", {})
    with pytest.raises(ArmError, match="literal brace"):
        make_arm("command", "c", {"command": "echo {ref"})
    assert make_arm("command", "c", {"command": "echo {{literal}} {ref}"})


def test_traced_command_counts_writes_under_dest(curl, arm_targets, tmp_path, need_tool):
    need_tool("strace", "strace")
    target = arm_targets["plain"]
    layer = target.digest
    with _started({"command": "curl -sf -o {dest}/manifest {url}/v2/{repo}/manifests/{tag}",
                   "trace": True}, [target]) as arm:
        row = arm.run(target, tmp_path / "d")
    assert layer
    assert row["status"] == "ok", row["error"]
    assert row["traced"] is True
    assert row["write_count"] >= 1
    written = sum(int(k) * v for k, v in row["write_size_hist"].items())
    assert written > 0
    assert row["read_count"] >= 1  # curl's reads from the registry socket


def test_client_peak_rss_is_the_clients_not_the_runners(arm_targets, tmp_path):
    """A client that holds 96 MiB reads as about 96 MiB; a tiny one reads tiny, however large
    the runner is (ru_maxrss would report the runner's own size for both)."""
    import sys

    target = arm_targets["plain"]
    ballast = bytearray(256 * 2**20)  # make this process large: its size must not leak in
    ballast[:: 4096] = b"x" * (len(ballast) // 4096)
    hold = (f"{sys.executable} -c 'import time; b = bytearray(96 * 2**20); "
            "b[::4096] = b\"x\" * (len(b) // 4096); time.sleep(0.3)'")
    with _started({"command": hold}, [target]) as big, \
            _started({"command": "sleep 0.2"}, [target]) as small:
        big_row = big.run(target, tmp_path / "big")
        small_row = small.run(target, tmp_path / "small")
    assert big_row["status"] == "ok", big_row["error"]
    assert 96 * 2**20 <= big_row["client_peak_rss_bytes"] < 200 * 2**20
    assert small_row["client_peak_rss_bytes"] < 16 * 2**20
    del ballast
