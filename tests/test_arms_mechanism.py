"""The mechanism behind the small writes, seen by pullbench's own probes in the real pullers.

dockerd and skopeo copy a layer with Go's ``io.Copy``: one ``write`` per ``Read``, 32 KiB over
plain HTTP, at most one TLS record (16 KiB) over TLS. containerd coalesces into 1 MiB writes.
Each arm is traced (``trace=true``) while pulling synthetic-small from the embedded registry,
over plain HTTP and over TLS with pullbench's own CA; the assertions read the row's
``write_size_hist`` (power-of-two buckets, the strategies' column).
"""

from __future__ import annotations

import pytest

KiB = 1024
MiB = 1024 * 1024

#: kind -> {transport: the write size (bucket) that must carry the layer bytes}
EXPECTED = {
    "docker": {"plain": 32 * KiB, "tls": 16 * KiB},
    "skopeo": {"plain": 32 * KiB, "tls": 16 * KiB},
    "ctr-fetch": {"plain": MiB, "tls": MiB},
    "ctr-pull": {"plain": MiB, "tls": MiB},
}
TOOLS = {
    "docker": [("/usr/sbin/dockerd", "docker.io"), ("/usr/bin/docker", "docker.io")],
    "skopeo": [("/usr/bin/skopeo", "skopeo")],
    "ctr-fetch": [("/usr/bin/containerd", "containerd"), ("/usr/bin/ctr", "containerd")],
    "ctr-pull": [("/usr/bin/containerd", "containerd"), ("/usr/bin/ctr", "containerd")],
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def traced_arm(request, arm_targets, need_tool):
    from pullbench.arms import make_arm

    need_tool("strace", "strace")
    for binary, package in TOOLS[request.param]:
        need_tool(binary, package)
    arm = make_arm(request.param, request.param, {"trace": True})
    arm.start(list(arm_targets.values()))
    yield arm
    arm.close()


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_write_sizes_show_the_mechanism(traced_arm, arm_targets, transport, tmp_path):
    target = arm_targets[transport]
    row = traced_arm.run(target, tmp_path / "dest", timeout_s=300)
    assert row["status"] == "ok", row["error"]
    assert row["traced"] is True
    hist = {int(k): v for k, v in row["write_size_hist"].items()}
    expected = EXPECTED[traced_arm.kind][transport]
    # the layer bytes go out in writes of exactly the expected bucket...
    bytes_in = {bucket: bucket * count for bucket, count in hist.items()}
    assert max(bytes_in, key=lambda b: bytes_in[b]) == expected, hist
    assert bytes_in[expected] >= 0.85 * sum(bytes_in.values()), hist
    # ...and never in larger ones
    assert max(hist) == expected, hist
    assert row["write_count"] == sum(hist.values())
    assert row["median_write_bytes"] <= expected


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_probes_measure_client_and_daemon(traced_arm, arm_targets, transport, tmp_path):
    target = arm_targets[transport]
    row = traced_arm.run(target, tmp_path / "dest", timeout_s=300)
    assert row["status"] == "ok", row["error"]
    assert row["arm_kind"] == traced_arm.kind
    assert row["arm_binary"].startswith("/")
    assert row["arm_version"] not in ("", "unknown")
    assert row["duration_s"] > 0
    assert row["client_cpu_user_s"] + row["client_cpu_sys_s"] > 0
    assert row["cpu_user_s"] >= row["client_cpu_user_s"]
    assert row["stored_bytes"] >= target.size_bytes * 0.99
    if traced_arm.kind == "skopeo":
        assert row["daemon_pids"] == []
        return
    # a daemon did the storing: it wrote at least the layer bytes, used CPU and memory
    assert row["daemon_wchar"] >= target.size_bytes * 0.99
    assert row["daemon_cpu_user_s"] + row["daemon_cpu_sys_s"] > 0
    assert row["daemon_peak_rss_bytes"] > 10 * MiB
    assert row["daemon_hwm_sum_rss_bytes"] > 10 * MiB
    assert len(row["daemon_pids"]) >= (2 if traced_arm.kind == "docker" else 1)
    assert row["daemon_version"] not in ("", "unknown")
    # TLS to pullbench's CA: verified by ctr and skopeo; dockerd trusts 127.0.0.0/8 blindly
    if transport == "tls":
        assert row["tls_verified"] is (traced_arm.kind != "docker")
