"""dockerd built from source: stock and pr48602, pulled from the embedded registry under strace.

The builds are cached under the test cache (.pytest_cache/d/pullbench-cache/dockerd), so only the
first run compiles (a minute or two cold; a variant a few seconds more). The daemon is the
``dockerd`` arm: the ``docker`` arm's private daemon (own socket, data root and exec root in a
temp folder; dies with the test process) running the built binary, traced with strace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pullbench import ProgramBuildError
from pullbench.arms._dockerd_build import (
    COPY_LOOP,
    DEB_SRC_FILE,
    build_dockerd,
    deb_src_entries,
    dockerd_build_requirements,
    dockerd_variants,
)
from pullbench.arms._gotoolchain import cache_root

KiB = 1024

# The first test of this module builds dockerd cold (about 70 s on a quiet 2-core machine, over
# 6 minutes at load 6): more than the suite's 600 s default may be needed on a busy machine.
pytestmark = pytest.mark.timeout(1800)


def _need(condition: bool, what: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} not available")


@pytest.fixture(scope="module")
def builds() -> dict[str, object]:
    _need(shutil.which("go") is not None, "Go (golang-go)")
    _need(os.geteuid() == 0, "root (a private dockerd)")
    return {v: build_dockerd(v) for v in ("stock", "pr48602")}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.peers
def test_builds_are_cached_and_name_their_variant(builds, tmp_path):
    stock, pr = builds["stock"], builds["pr48602"]
    assert stock.binary != pr.binary
    for b in (stock, pr):
        assert b.binary.is_file()
        assert os.access(b.binary, os.X_OK)
        assert b.binary.is_relative_to(cache_root() / "dockerd" / "bin")
        assert b.go_version.startswith("go1.")
    again = build_dockerd("pr48602")
    assert again.cached
    assert again.binary == pr.binary
    assert again.build_s == 0.0
    out = subprocess.run([str(pr.binary), "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert "+pullbench.pr48602" in out
    nm = subprocess.run(["go", "tool", "nm", str(pr.binary)], capture_output=True, text=True,
                        check=True).stdout
    assert "distribution.pullbenchCopyPR48602" in nm
    assert "pullbenchCopy" not in subprocess.run(
        ["go", "tool", "nm", str(stock.binary)], capture_output=True, text=True,
        check=True).stdout


@pytest.fixture(scope="module", params=["stock", "pr48602"])
def traced_variant(request, builds, arm_targets, need_tool):
    """The ``dockerd`` arm (the ``docker`` arm with the built binary), traced."""
    from pullbench.arms import make_arm

    need_tool("strace", "strace")
    need_tool("/usr/bin/docker", "docker.io")
    arm = make_arm("dockerd", f"dockerd:{request.param}",
                   {"variant": request.param, "trace": True, "storage_driver": "vfs"})
    arm.start(list(arm_targets.values()))
    yield arm
    arm.close()


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.peers
@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_built_dockerd_write_sizes(traced_variant, builds, arm_targets, transport, tmp_path):
    """Over plain HTTP stock writes 32 KiB (io.Copy through File.ReadFrom); over TLS each write
    is one TLS record (16 KiB); pr48602 writes 512 KiB either way."""
    variant = traced_variant.params["variant"]
    assert traced_variant.params["binary"] == str(builds[variant].binary)
    row = traced_variant.run(arm_targets[transport], tmp_path / "dest", timeout_s=300)
    assert row["status"] == "ok", row["error"]
    assert row["daemon_binary"] == str(builds[variant].binary)
    hist = {int(k): v for k, v in row["write_size_hist"].items()}
    expect = {("stock", "plain"): 32 * KiB, ("stock", "tls"): 16 * KiB,
              ("pr48602", "plain"): 512 * KiB, ("pr48602", "tls"): 512 * KiB}[variant, transport]
    assert max(hist) == expect, hist
    # the bulk of the bytes goes in writes of that bucket
    bytes_in = {bucket: bucket * count for bucket, count in hist.items()}
    assert bytes_in[expect] >= 0.7 * sum(bytes_in.values()), hist
    assert traced_variant.describe()["build"]["version_string"].endswith(f"+pullbench.{variant}")


# --- bad input ----------------------------------------------------------------------------


def test_unknown_variant_and_parameters_are_named():
    with pytest.raises(ProgramBuildError, match=r"unknown dockerd variant 'pr4860'; known: "
                                                r"bufio, pools-bufio32k, pr48602, stock"):
        build_dockerd("pr4860")
    with pytest.raises(ProgramBuildError, match=r"'bufio' has no parameter 'chunk'; valid: "
                                                r"read_size, write_size"):
        build_dockerd("bufio", {"chunk": 4096})
    with pytest.raises(ProgramBuildError, match=r"'pr48602' has no parameter 'read_size'; "
                                                r"valid: \(none\)"):
        build_dockerd("pr48602", {"read_size": 4096})
    with pytest.raises(ProgramBuildError, match=r"read_size='lots' must be a number of bytes"):
        build_dockerd("bufio", {"read_size": "lots"})
    with pytest.raises(ProgramBuildError, match=r"write_size=0 must be a number of bytes"):
        build_dockerd("bufio", {"write_size": 0})


def test_variant_files_name_what_they_mirror():
    variants = dockerd_variants()
    assert set(variants) == {"stock", "pr48602", "pools-bufio32k", "bufio"}
    assert variants["stock"].function is None
    assert "moby/moby#48602" in variants["pr48602"].summary
    assert "moby/moby#48602" in variants["pools-bufio32k"].summary
    assert variants["bufio"].params == {"read_size": 32768, "write_size": 524288}
    text = variants["bufio"].source_with({"read_size": 4096, "write_size": 65536})
    assert "const bufioReadSize = 4096 // pullbench:param read_size" in text
    assert "const bufioWriteSize = 65536 // pullbench:param write_size" in text


def _fake_tree(root: Path, pull_v2: str, dockerd_main: str) -> Path:
    (root / "engine" / "distribution").mkdir(parents=True)
    (root / "engine" / "distribution" / "pull_v2.go").write_text(pull_v2)
    (root / "engine" / "cmd" / "dockerd").mkdir(parents=True)
    (root / "engine" / "cmd" / "dockerd" / "docker.go").write_text(dockerd_main)
    return root


def test_source_without_the_copy_loop_is_refused(tmp_path):
    tree = _fake_tree(tmp_path / "moby", "package distribution\n\n// io.CopyN(w, r, n)\n",
                      "package main\n\nfunc main() {}\n")
    with pytest.raises(ProgramBuildError, match=r"does not contain the copy loop") as info:
        build_dockerd("pr48602", source=tree, cache_dir=tmp_path / "cache")
    assert COPY_LOOP in str(info.value)
    assert "moby 20.10" in str(info.value)
    with pytest.raises(ProgramBuildError, match=r"is not a moby source tree"):
        build_dockerd("stock", source=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ProgramBuildError, match=r"no such directory"):
        build_dockerd("stock", source=tmp_path / "nope", cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def scratch_cache(tmp_path_factory) -> Path:
    """One cache (and GOCACHE) for the builds of fake trees in this module."""
    return tmp_path_factory.mktemp("scratch-cache")


def test_failed_build_leaves_no_binary(tmp_path, scratch_cache):
    _need(shutil.which("go") is not None, "Go (golang-go)")
    loop = ("package distribution\n\nimport \"io\"\n\nfunc f(tmpFile io.Writer, reader io.Reader, "
            "ld struct{ verifier io.Writer }) (err error) {\n\t_, err = " + COPY_LOOP + "\n"
            "\treturn err\n}\n")
    tree = _fake_tree(tmp_path / "moby", loop, "package main\n\nfunc main() { not go }\n")
    cache = scratch_cache
    with pytest.raises(ProgramBuildError, match=r"building dockerd stock failed") as info:
        build_dockerd("stock", source=tree, cache_dir=cache)
    assert "docker.go" in str(info.value)  # the compiler's message, with the file it names
    bins = cache / "dockerd" / "bin"
    assert [p.name for p in bins.rglob("*") if p.is_file() and "dockerd" in p.name] == []
    assert list(bins.rglob("build.log"))  # the log is kept for the user


def test_binary_without_the_edit_is_rejected_and_removed(tmp_path, scratch_cache):
    """A tree that compiles but is no dockerd with the legacy pull path: the finished binary fails
    the check (go tool nm) and is deleted, not cached."""
    _need(shutil.which("go") is not None, "Go (golang-go)")
    loop = ("package distribution\n\nimport \"io\"\n\n// F has the loop but is no layer "
            "descriptor.\nfunc F(tmpFile io.Writer, reader io.Reader, ld struct{ verifier "
            "io.Writer }) (err error) {\n\t_, err = " + COPY_LOOP + "\n\treturn err\n}\n")
    main = ('package main\n\nimport "github.com/docker/docker/distribution"\n\n'
            "var _ = distribution.F\n\nfunc main() {}\n")
    tree = _fake_tree(tmp_path / "moby", loop, main)
    cache = scratch_cache
    with pytest.raises(ProgramBuildError, match=r"not a dockerd with the legacy pull path"):
        build_dockerd("stock", source=tree, cache_dir=cache)
    bins = cache / "dockerd" / "bin"
    assert [p.name for p in bins.rglob("*") if p.is_file() and "dockerd" in p.name] == []


def test_missing_go_is_a_clear_error(tmp_path):
    with pytest.raises(ProgramBuildError, match=r"apt-get install -y golang-go"):
        build_dockerd("stock", go=tmp_path / "bin" / "go", cache_dir=tmp_path)


def test_install_needs_root(tmp_path):
    _need(os.geteuid() == 0 and shutil.which("setpriv") is not None, "root and setpriv")
    code = ("from pullbench import ProgramBuildError\n"
            "from pullbench.arms._dockerd_build import build_dockerd\n"
            "try:\n    build_dockerd('stock', install=True, cache_dir='/nonexistent')\n"
            "except ProgramBuildError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HOME": str(tmp_path)}
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert "--install runs apt-get and needs root" in proc.stdout, proc.stdout + proc.stderr


def test_deb_src_entries_are_derived_from_the_machines_sources(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "distro.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://archive.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n"
        "Signed-By: /usr/share/keyrings/example.gpg\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://old.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n")
    (d / "third-party.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n")
    (d / "oneline.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian bookworm-backports main # comment\n")
    (d / "ignored.list.disabled").write_text("deb http://nope.example/debian bookworm main\n")
    osr = tmp_path / "os-release"
    osr.write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    text = deb_src_entries(sources_dir=d, sources_list=tmp_path / "none", os_release=osr)
    stanzas = [s for s in text.split("\n\n") if "Types:" in s]
    assert all("Types: deb-src" in s for s in stanzas)
    assert ("URIs: http://archive.example/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main contrib\nSigned-By: /usr/share/keyrings/example.gpg") in text
    assert "URIs: http://security.example/debian-security\nSuites: bookworm-security" in text
    assert "vendor.example" not in text  # not the distribution's own suites
    assert "old.example" not in text  # disabled
    assert "nope.example" not in text  # not a .list file
    # the one-line entry that already has its deb-src twin is not repeated; the other one is
    assert "URIs: http://mirror.example/debian\nSuites: bookworm-backports" in text
    assert text.count("mirror.example") == 1
    assert deb_src_entries(sources_dir=tmp_path / "empty", sources_list=tmp_path / "none",
                           os_release=osr) == ""


def test_requirements_are_exact_lines_for_this_machine():
    lines = dockerd_build_requirements()
    for line in lines:
        assert line.startswith(("apt-get", "cat > ")), line
    if any(line.startswith("cat > ") for line in lines):
        assert str(DEB_SRC_FILE) in "\n".join(lines)


def test_arm_shorthand_in_specs():
    """``dockerd:<variant>`` and ``go:<idiom>`` in an arm list are the dockerd and go kinds."""
    from pullbench import ExperimentSpec
    from pullbench.arms import make_arm

    spec = ExperimentSpec(name="s", arms=("dockerd:pr48602", "go:iocopy", "dockerd:variant=stock"))
    assert [(a.kind, a.params_dict) for a in spec.arms] == [
        ("dockerd", {"variant": "pr48602"}), ("go", {"idiom": "iocopy"}),
        ("dockerd", {"variant": "stock"})]
    with pytest.raises(Exception, match=r"unknown variant 'pr1'; choose one of: bufio"):
        make_arm("dockerd", "x", {"variant": "pr1"})
    with pytest.raises(Exception, match=r"idiom 'pr48602' takes no size, not read_size=4096"):
        make_arm("go", "x", {"idiom": "pr48602", "read_size": 4096})
