"""Real peers against our registries: skopeo copy out of and into them, ctr fetches.

Blobs that come out must be byte-identical to what was pushed. In CI (CI=true) the peers
must be installed; elsewhere a missing peer skips its test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pullbench import ImageLayout, build_image, push_image, sha256_digest
from pullbench.servers import EmbeddedRegistry

pytestmark = pytest.mark.peers


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} must be installed in CI")
        pytest.skip(f"{tool} not installed")
    return path


def _run(cmd: list[str], timeout: float = 180, **kw) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, (cmd, proc.stderr.decode(errors="replace")[-2000:])
    return proc


def _skopeo_out(host: str, ref: str, out: Path, *, all_platforms: bool = False) -> ImageLayout:
    cmd = [_need("skopeo"), "--insecure-policy", "copy", "--src-tls-verify=false"]
    if all_platforms:
        cmd.append("--all")
    _run([*cmd, f"docker://{host}/{ref}", f"oci:{out}:x"])
    return ImageLayout(out)


def _assert_same_blobs(got: ImageLayout, want: ImageLayout) -> None:
    want_digests = {d.digest for d in want.descriptors}
    got_digests = {d.digest for d in got.descriptors}
    assert got.manifest_digest == want.manifest_digest
    assert got_digests == want_digests
    for d in want.descriptors:
        assert got.blob_path(d.digest).read_bytes() == want.blob_path(d.digest).read_bytes()


@pytest.mark.parametrize("which", ["embedded", "distribution"])
def test_skopeo_copy_out_is_byte_identical(which, pushed_image, distribution_pushed_image,
                                           tmp_path):
    pushed = pushed_image if which == "embedded" else distribution_pushed_image
    got = _skopeo_out(pushed.registry.host, f"{pushed.repository}:{pushed.tag}", tmp_path / "o")
    _assert_same_blobs(got, pushed.layout)
    got.verify()


def test_skopeo_copy_multiarch_index(pushed_multiarch_image, tmp_path):
    p = pushed_multiarch_image
    got = _skopeo_out(p.registry.host, f"{p.repository}:{p.tag}", tmp_path / "o",
                      all_platforms=True)
    _assert_same_blobs(got, p.layout)
    assert set(got.platforms) == {"linux/amd64", "linux/arm64"}


def test_skopeo_copy_into_embedded_then_pull_back(pushed_image, tmp_path):
    skopeo = _need("skopeo")
    src = _skopeo_out(pushed_image.registry.host, "fixtures/small:latest", tmp_path / "src")
    with EmbeddedRegistry(tmp_path / "root") as reg:
        _run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false",
              f"oci:{src.path}:x", f"docker://{reg.host}/copied/img:v1"])
        back = _skopeo_out(reg.host, "copied/img:v1", tmp_path / "back")
        _assert_same_blobs(back, pushed_image.layout)
        # and a docker v2s2 conversion (skopeo rewrites the manifest) is accepted too
        _run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--format",
              "v2s2", f"oci:{src.path}:x", f"docker://{reg.host}/copied/docker:v1"])
        inspect = _run([skopeo, "inspect", "--raw", "--tls-verify=false",
                        f"docker://{reg.host}/copied/docker:v1"])
        doc = json.loads(inspect.stdout)
        assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_ctr_fetch_object_from_embedded(pushed_image):
    ctr = _need("ctr")
    ref = pushed_image.reference
    out = _run([ctr, "content", "fetch-object", "--plain-http", ref]).stdout
    assert sha256_digest(out) == pushed_image.digest
    layer = pushed_image.layout.layers[0]
    host_repo = ref.rsplit(":", 1)[0]
    out = _run([ctr, "content", "fetch-object", "--plain-http",
                f"{host_repo}@{layer.digest}"]).stdout
    assert sha256_digest(out) == layer.digest


@pytest.mark.slow
@pytest.mark.root
def test_ctr_content_fetch_with_private_containerd(pushed_multiarch_image, tmp_path):
    """containerd as a private daemon on its own socket fetches every platform's content."""
    if os.geteuid() != 0:
        pytest.skip("a private containerd daemon needs root")
    containerd, ctr = _need("containerd"), _need("ctr")
    sock = tmp_path / "containerd.sock"
    (tmp_path / "config.toml").write_text(
        'version = 2\n'
        f'root = "{tmp_path / "root"}"\nstate = "{tmp_path / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n')
    log = (tmp_path / "containerd.log").open("wb")
    daemon = subprocess.Popen([containerd, "--config", str(tmp_path / "config.toml")],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            assert daemon.poll() is None, (tmp_path / "containerd.log").read_text()[-2000:]
            time.sleep(0.1)
        base = [ctr, "--address", str(sock), "--namespace", "pullbench"]
        _run([*base, "content", "fetch", "--plain-http", "--all-platforms",
              pushed_multiarch_image.reference])
        listed = _run([*base, "content", "ls", "-q"]).stdout.decode().split()
        assert {d.digest for d in pushed_multiarch_image.layout.descriptors} <= set(listed)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


@pytest.mark.slow
@pytest.mark.root
def test_debian_minbase_round_trips_through_both_registries(embedded_registry,
                                                           distribution_registry, tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; debian-minbase needs root")
        pytest.skip("debian-minbase needs root")
    _need("debootstrap")
    layout = build_image("debian-minbase")  # cached per machine after the first build
    assert layout.total_size_bytes > 10 << 20
    for i, reg in enumerate((embedded_registry, distribution_registry)):
        digest = push_image(layout, f"{reg.host}/debian/minbase:bookworm")
        assert digest == layout.manifest_digest
        got = _skopeo_out(reg.host, "debian/minbase:bookworm", tmp_path / f"out{i}")
        _assert_same_blobs(got, layout)
