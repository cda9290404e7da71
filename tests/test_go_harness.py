"""The Go copy harness pins pullbench's Python imitations to Go itself.

For go-iocopy, pr48602, pools-bufio32k and containerd-1m the Python preset and the Go idiom it
imitates give the same write-size histogram on the same blobs, over plain HTTP and TLS (the
embedded registry; Go's own net/http and crypto/tls on the client side). The harness's counting
wrapper is checked against strace of the bare *os.File, and the Go "quirks" (io.CopyBuffer and
bufio.Writer handing the copy to File.ReadFrom) are shown as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pullbench import ProgramBuildError, pull, push_image
from pullbench.arms._goharness import (
    GO_IDIOMS,
    PRESET_IDIOMS,
    go_copy,
    go_harness_binary,
    go_pull,
)
from pullbench.arms._gotoolchain import find_go
from pullbench.puller._probes import power_of_two_histogram
from pullbench.servers import EmbeddedRegistry

KiB = 1024
MiB = 1024 * KiB
REF = "go/harness:v1"


@pytest.fixture(scope="module")
def harness() -> Path:
    try:
        find_go()
    except ProgramBuildError:
        if os.environ.get("CI"):
            pytest.fail("Go (golang-go) is required in CI but not installed")
        pytest.skip("Go toolchain not installed (apt-get install golang-go)")
    return go_harness_binary()


@pytest.fixture(scope="module")
def registries(harness, small_image, tls_material, tmp_path_factory):
    """The same image in a plain and a TLS embedded registry: {"plain": (ref, kw), "tls": ...}."""
    with EmbeddedRegistry(tmp_path_factory.mktemp("go-plain")) as plain, EmbeddedRegistry(
        tmp_path_factory.mktemp("go-tls"), ssl_context=tls_material.server_context()
    ) as tls:
        push_image(small_image, f"{plain.host}/{REF}", plain_http=True)
        push_image(small_image, f"{tls.host}/{REF}", plain_http=False,
                   ca_bundle=tls_material.ca_bundle)
        yield {
            "plain": (f"{plain.host}/{REF}", {"plain_http": True}),
            "tls": (f"{tls.host}/{REF}", {"ca_bundle": tls_material.ca_bundle}),
        }


def _same_histogram(py: dict[int, int], go: dict[int, int], size: int, where: str) -> None:
    """Same buckets and counts, allowing the edges of a blob to differ: the first read (the rest
    of the buffer that held the response headers: http.client 8 KiB, net/http 4 KiB) and the last
    write. Every bucket's count may differ by at most 2 writes, and the bucket carrying the bulk
    of the bytes must be the same one."""
    buckets = set(py) | set(go)
    for bucket in sorted(buckets):
        diff = abs(py.get(bucket, 0) - go.get(bucket, 0))
        assert diff <= 2, f"{where}: bucket {bucket}: python {py} vs go {go}"
    if size >= 64 * KiB:
        def bulk(h: dict[int, int]) -> int:
            return max(h, key=lambda b: b * h[b])

        assert bulk(py) == bulk(go), f"{where}: python {py} vs go {go}"
    assert abs(sum(py.values()) - sum(go.values())) <= 2, f"{where}: python {py} vs go {go}"


@pytest.mark.parametrize("transport", ["plain", "tls"])
@pytest.mark.parametrize("preset", sorted(PRESET_IDIOMS))
def test_python_preset_and_go_idiom_write_the_same_sizes(registries, preset, transport,
                                                         tmp_path):
    ref, kw = registries[transport]
    py = pull(ref, preset, tmp_path / "py", concurrency=1, **kw)
    go = go_pull(ref, PRESET_IDIOMS[preset], tmp_path / "go", **kw)
    assert [b.digest for b in go.blobs] == [layer.digest for layer in py.layers]
    for layer, blob in zip(py.layers, go.blobs, strict=True):
        assert blob.size_bytes == layer.size_bytes
        assert blob.path.read_bytes() == (tmp_path / "py" / "blobs" / "sha256"
                                          / layer.digest[7:]).read_bytes()
        assert layer.write_size_hist is not None
        _same_histogram(dict(layer.write_size_hist), blob.write_size_hist, layer.size_bytes,
                        f"{preset}/{transport} {layer.digest[:19]} ({layer.size_bytes} B)")
    assert go.blobs[0].proto == "HTTP/1.1"
    biggest = max(go.blobs, key=lambda b: b.size_bytes)
    top = max(biggest.write_size_hist)
    expect = {
        "go-iocopy": 16 * KiB if transport == "tls" else 32 * KiB,  # one write per read
        "pr48602": 512 * KiB,
        "pools-bufio32k": 32 * KiB,  # over TLS: two 16 KiB records per write
        "containerd-1m": MiB,
    }[preset]
    assert top == expect, biggest.write_size_hist


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_go_quirks_readfrom_bypasses_the_buffers(registries, transport, tmp_path):
    """io.CopyBuffer(file, ...) and io.Copy(bufio.Writer, ...) hand the copy to File.ReadFrom
    (a 32 KiB loop): the 512 KiB buffers are bypassed. Hidden behind struct{ io.Writer } they
    are used."""
    ref, kw = registries[transport]
    record = 16 * KiB if transport == "tls" else 32 * KiB
    got = {}
    for idiom, params in [("iocopy", {}), ("copybuffer", {"read_size": 512 * KiB}),
                          ("bufio", {"write_size": 512 * KiB}),
                          ("copybuffer-hidden", {"read_size": 512 * KiB}),
                          ("bufio-hidden", {"read_size": 512 * KiB, "write_size": 512 * KiB})]:
        result = go_pull(ref, idiom, tmp_path / idiom, **kw, params=params)
        got[idiom] = max(result.write_size_hist)
    assert got["iocopy"] == record
    assert got["copybuffer"] == record
    assert got["bufio"] == record
    # hidden ReadFrom: each write carries one read, which on loopback can exceed 32 KiB over
    # plain HTTP; over TLS one read is still one record
    if transport == "tls":
        assert got["copybuffer-hidden"] == record
    else:
        assert record <= got["copybuffer-hidden"] <= 512 * KiB
    assert got["bufio-hidden"] == 512 * KiB


def _strace_write_sizes(log: Path, folder: Path) -> Counter[int]:
    sizes: Counter[int] = Counter()
    pat = re.compile(r"write\(\d+<([^>]*)>, .*\) = (\d+)$")
    for line in log.read_text().splitlines():
        m = pat.search(line)
        if m and Path(m.group(1)).parent == folder and ".GetImageBlob" in m.group(1):
            sizes[int(m.group(2))] += 1
    return sizes


@pytest.mark.peers
@pytest.mark.parametrize("idiom", ["iocopy", "pools-bufio32k", "pr48602"])
def test_counting_wrapper_matches_strace_of_the_bare_file(registries, harness, idiom, tmp_path):
    """The harness counts writes in a wrapper whose ReadFrom is File.ReadFrom's fallback; strace
    of the bare *os.File (-count=none) sees the same write sizes (TLS: deterministic records)."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI")
        pytest.skip("strace not installed")
    ref, kw = registries["tls"]
    counted = go_pull(ref, idiom, tmp_path / "counted", **kw)
    blobs = [(f"https://{ref.split('/')[0]}/v2/go/harness/blobs/{b.digest}", b.digest)
             for b in counted.blobs]
    bare = tmp_path / "bare"
    bare.mkdir()
    log = tmp_path / "strace.log"
    argv = [strace, "-f", "-qq", "-y", "-s", "0", "-e", "trace=write", "-e", "signal=none",
            "-o", str(log), str(harness), "-idiom", idiom, "-dir", str(bare), "-count", "none",
            "-ca", str(kw["ca_bundle"])]
    for url, digest in blobs:
        argv += ["-blob", f"{digest}={url}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    traced = _strace_write_sizes(log, bare)
    wrapped: Counter[int] = Counter()
    for blob in counted.blobs:
        wrapped.update(blob.write_sizes)
    assert sum(traced.values()) > 0
    _same_histogram(power_of_two_histogram(traced), power_of_two_histogram(wrapped),
                    counted.total_bytes, f"{idiom} strace vs wrapper")


def test_bad_input_is_named(harness, registries, tmp_path):
    ref, _ = registries["plain"]
    with pytest.raises(ProgramBuildError, match=r"unknown Go idiom 'copy'; known: iocopy"):
        go_pull(ref, "copy", tmp_path)
    with pytest.raises(ProgramBuildError, match=r"takes no parameter 'write_size'; valid: "
                                                r"read_size"):
        go_pull(ref, "containerd-1m", tmp_path, params={"write_size": 4096})
    with pytest.raises(ProgramBuildError, match="must be a positive integer"):
        go_pull(ref, "copybuffer", tmp_path, params={"read_size": 0})
    assert set(PRESET_IDIOMS.values()) <= set(GO_IDIOMS)


def test_wrong_digest_fails_and_leaves_no_file(harness, registries, tmp_path):
    ref, kw = registries["plain"]
    good = go_pull(ref, "iocopy", tmp_path / "good", **kw)
    blob = good.blobs[1]
    url = f"http://{ref.split('/')[0]}/v2/go/harness/blobs/{blob.digest}"
    wrong = "sha256:" + "0" * 64
    with pytest.raises(Exception, match="digest mismatch"):
        go_copy([(url, wrong)], "iocopy", tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []


def test_relative_cache_folder_builds(harness, monkeypatch, tmp_path):
    """A relative ``PULLBENCH_CACHE`` (as in the shipped results' commands): Go refuses a relative
    GOPATH or GOCACHE, so the build must use the folder made absolute."""
    from pullbench.arms._gotoolchain import cache_root

    warm = harness.parents[1] / "gocache"  # the harness fixture's GOCACHE: a fast rebuild
    (tmp_path / "rel-cache" / "go-harness").mkdir(parents=True)
    (tmp_path / "rel-cache" / "go-harness" / "gocache").symlink_to(warm)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULLBENCH_CACHE", "rel-cache")
    built = go_harness_binary()
    assert built.is_absolute()
    assert built.is_relative_to(tmp_path / "rel-cache")
    assert os.access(built, os.X_OK)
    assert cache_root("other") == tmp_path / "other"  # an explicit cache_dir too


def test_missing_go_is_a_clear_error(tmp_path):
    with pytest.raises(ProgramBuildError, match=r"apt-get install -y golang-go"):
        find_go(tmp_path / "no-such-go")


@pytest.mark.peers
@pytest.mark.parametrize(("idiom", "transport", "expect"), [
    ("iocopy", "tls", 16 * KiB), ("pr48602", "tls", 512 * KiB), ("containerd-1m", "plain", MiB),
])
def test_go_arm_traced(harness, arm_targets, need_tool, idiom, transport, expect, tmp_path):
    """The ``go`` arm (``go:<idiom>``): the bare *os.File under strace, as the other arms."""
    from pullbench.arms import shorthand_arm

    need_tool("strace", "strace")
    arm = shorthand_arm(f"go:{idiom}")
    arm.trace = True
    arm.start(list(arm_targets.values()))
    try:
        row = arm.run(arm_targets[transport], tmp_path / "dest", timeout_s=300)
    finally:
        arm.close()
    assert row["status"] == "ok", row["error"]
    hist = {int(k): v for k, v in row["write_size_hist"].items()}
    assert max(hist) == expect, hist
    # every blob but the manifest (size_bytes counts it too)
    assert 0 < arm_targets[transport].size_bytes - row["stored_bytes"] < 4096
