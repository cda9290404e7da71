"""Kernel mode (root): namespace + veth + tc tbf, the netem fallback, and clean-up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from pullbench import ServerError, pull, push_image, sha256_digest
from pullbench.servers import DistributionRegistry
from pullbench.servers._netns import (
    KernelLink,
    kernel_mode_available,
    shaped_distribution_registry,
    shaped_embedded_registry,
)


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


@pytest.fixture
def need_kernel_mode():
    ok, why = kernel_mode_available()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"kernel mode must run in CI (root): {why}")
        pytest.skip(why)


@pytest.mark.root
def test_kernel_link_shapes_with_tbf_and_cleans_up(need_kernel_mode, small_image, tmp_path):
    with shaped_embedded_registry("custom:rtt_ms=4,bandwidth_mbit_s=200", tmp_path / "reg",
                                  mode="kernel") as shaped:
        link = shaped.link
        assert link is not None
        assert link.info is not None
        info = link.info
        assert info.namespace_address.startswith("10.231.")
        assert shaped.registry.host.startswith(info.namespace_address + ":")
        # this kernel has no netem: the documented hybrid adds the delay in user space
        assert shaped.mode in {"kernel", "kernel+proxy-delay"}
        assert (shaped.proxy is not None) == (not info.netem)
        push_image(small_image, f"{shaped.registry.host}/ns/app:v1")
        result = pull(f"{shaped.host}/ns/app:v1", "containerd-1m", tmp_path / "out",
                      plain_http=True)
        stats = link.qdisc_stats()
        assert "tbf" in stats
        assert "rate 200Mbit" in stats
        sent = int(re.search(r"Sent (\d+) bytes", stats).group(1))  # type: ignore[union-attr]
        assert sent >= result.total_bytes  # the blob bodies went through the namespace's tbf
        namespace, host_if = info.namespace, info.host_interface
        assert namespace in _namespaces()
    assert namespace not in _namespaces()
    assert host_if not in _links()


@pytest.mark.root
def test_kernel_link_close_is_idempotent(need_kernel_mode):
    link = KernelLink("wan-200m").start()
    assert link.info is not None
    name = link.info.namespace
    link.close()
    link.close()
    assert name not in _namespaces()


def test_proxy_mode_fallback_works_without_kernel_mode(small_image, tmp_path):
    with shaped_embedded_registry("custom:rtt_ms=2,bandwidth_mbit_s=300", tmp_path / "reg",
                                  mode="proxy") as shaped:
        assert shaped.mode == "proxy"
        assert shaped.link is None
        push_image(small_image, f"{shaped.registry.host}/p/app:v1")
        result = pull(f"{shaped.host}/p/app:v1", "go-iocopy", tmp_path / "out", plain_http=True)
    assert result.total_bytes > 0


def _tbf_sent_bytes(stats: str) -> int:
    match = re.search(r"qdisc tbf .*?Sent (\d+) bytes", stats, re.S)
    assert match is not None, stats
    return int(match.group(1))


def _check_pulled_blobs(dest: Path, layout, result) -> None:  # type: ignore[no-untyped-def]
    pulled = {layer.digest for layer in result.layers}
    for desc in layout.layers:
        assert desc.digest in pulled
        path = dest / "blobs" / "sha256" / desc.digest.removeprefix("sha256:")
        data = path.read_bytes()
        assert len(data) == desc.size_bytes
        assert sha256_digest(data) == desc.digest


@pytest.mark.root
@pytest.mark.peers
def test_distribution_in_kernel_mode_shapes_with_tbf_and_cleans_up(
        need_kernel_mode, distribution_binary, small_image, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # see the registry's work folder
    with shaped_distribution_registry("custom:rtt_ms=4,bandwidth_mbit_s=200", mode="kernel",
                                      binary=distribution_binary) as shaped:
        link, reg = shaped.link, shaped.registry
        assert link is not None
        assert link.info is not None
        info = link.info
        assert isinstance(reg, DistributionRegistry)
        assert reg.host.startswith(info.namespace_address + ":")
        assert reg.url == f"http://{reg.host}"
        config = yaml.safe_load(reg.config_path.read_text())
        assert config["http"]["addr"] == reg.host
        assert shaped.mode in {"kernel", "kernel+proxy-delay"}
        assert (shaped.proxy is not None) == (not info.netem)
        # the registry process itself runs in the link's namespace, not in ours
        assert reg.pid is not None
        assert Path(f"/proc/{reg.pid}/ns/net").readlink() != Path("/proc/self/ns/net").readlink()
        pid, workdir = reg.pid, reg.config_path.parent
        push_image(small_image, f"{reg.host}/ns/app:v1")
        result = pull(f"{shaped.host}/ns/app:v1", "containerd-1m", tmp_path / "out",
                      plain_http=True)
        _check_pulled_blobs(tmp_path / "out", small_image, result)
        stats = link.qdisc_stats()
        assert "rate 200Mbit" in stats
        assert _tbf_sent_bytes(stats) >= result.total_bytes  # blob bodies went through tbf
        namespace, host_if = info.namespace, info.host_interface
        assert namespace in _namespaces()
    assert namespace not in _namespaces()
    assert host_if not in _links()
    assert not Path(f"/proc/{pid}").exists() or "docker-registry" not in \
        Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    assert not workdir.exists()
    assert not any(tmp_path.glob("pullbench-distribution-*"))


@pytest.mark.root
@pytest.mark.peers
def test_distribution_kernel_mode_failed_start_leaves_nothing(
        need_kernel_mode, distribution_binary, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = {n for n in _namespaces().split() if n.startswith(f"pullbench-{os.getpid()}-")}
    bad = {"log": {"level": "not-a-level"}}  # the registry exits at once on a bad config
    with pytest.raises(ServerError, match=r"did not start on 10\.231\.\d+\.2 in network "
                                          r"namespace pullbench-"):
        with shaped_distribution_registry("wan-200m", mode="kernel", extra_config=bad,
                                          binary=distribution_binary):
            pytest.fail("the registry must not start")  # pragma: no cover
    after = {n for n in _namespaces().split() if n.startswith(f"pullbench-{os.getpid()}-")}
    assert after == before
    assert not any(tmp_path.glob("pullbench-distribution-*"))


@pytest.mark.peers
def test_distribution_netns_and_host_are_checked(distribution_binary):
    with pytest.raises(ServerError, match="network namespace 'pullbench-no-such-ns'"):
        DistributionRegistry(binary=distribution_binary, netns="pullbench-no-such-ns")
    with pytest.raises(ServerError, match="host must be an IP address"):
        DistributionRegistry(binary=distribution_binary, host="localhost")
    with pytest.raises(ServerError, match="chooses host, netns itself"):
        with shaped_distribution_registry("wan-200m", host="127.0.0.1", netns="x"):
            pass  # pragma: no cover
    with pytest.raises(ServerError, match="mode must be"):
        with shaped_distribution_registry("wan-200m", mode="tc"):
            pass  # pragma: no cover


@pytest.mark.peers
def test_distribution_falls_back_to_proxy_without_kernel_mode(
        distribution_binary, small_image, tmp_path, monkeypatch):
    # a PATH without ip/tc (only the registry and setpriv): kernel mode is unavailable
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (distribution_binary, shutil.which("setpriv")):
        if tool:
            (bin_dir / Path(tool).name).symlink_to(tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    ok, why = kernel_mode_available()
    assert not ok
    with pytest.raises(ServerError, match="kernel mode needs"):
        with shaped_distribution_registry("wan-200m", mode="kernel"):
            pass  # pragma: no cover
    with shaped_distribution_registry("custom:rtt_ms=2,bandwidth_mbit_s=300",
                                      tmp_path / "reg", mode="auto") as shaped:
        assert shaped.mode == "proxy"
        assert shaped.link is None
        assert shaped.proxy is not None
        assert shaped.fallback_reason == why
        assert shaped.registry.host.startswith("127.0.0.1:")
        push_image(small_image, f"{shaped.registry.host}/p/app:v1")
        result = pull(f"{shaped.host}/p/app:v1", "go-iocopy", tmp_path / "out", plain_http=True)
    _check_pulled_blobs(tmp_path / "out", small_image, result)
    assert (tmp_path / "reg").is_dir()  # a given root is kept
