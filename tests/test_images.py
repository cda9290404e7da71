"""Fixture images: synthetic builder, directory trees, import, catalog, CLI."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

import pullbench.images._catalog as images_mod
from pullbench import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    ImageBuildError,
    ImageLayout,
    RegistryError,
    SyntheticImageSpec,
    build_image,
    catalog,
    image_from_directory,
    image_from_pip,
    import_image,
    list_catalog,
    push_image,
    sha256_digest,
    tar_directory,
)
from pullbench.cli import main
from pullbench.servers import EmbeddedRegistry, Misbehavior

KiB = 1024


def _layer_tar(layout: ImageLayout, digest: str, media_type: str) -> bytes:
    data = layout.read_blob(digest)
    if media_type == OCI_LAYER_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return gzip.decompress(data)


def test_synthetic_is_deterministic_and_seeded(tmp_path):
    spec = SyntheticImageSpec((300 * KiB, 100 * KiB), seed=7)
    a = build_image(spec, cache_dir=tmp_path / "a")
    b = build_image(spec, cache_dir=tmp_path / "b")
    assert a.path != b.path
    assert a.manifest_digest == b.manifest_digest
    c = build_image(SyntheticImageSpec((300 * KiB, 100 * KiB), seed=8), cache_dir=tmp_path / "a")
    assert {d.digest for d in c.layers}.isdisjoint({d.digest for d in a.layers})
    a.verify()


def test_synthetic_layers_content_and_config(tmp_path):
    sizes = (1 << 20, 200 * KiB)
    layout = build_image(SyntheticImageSpec(sizes, seed=3), cache_dir=tmp_path)
    manifest = layout.read_json(layout.manifest_digest)
    config = layout.read_json(manifest["config"]["digest"])
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert len(layout.layers) == 2
    for layer, size, diff_id in zip(layout.layers, sizes, config["rootfs"]["diff_ids"],
                                    strict=True):
        assert layer.media_type == OCI_LAYER_GZIP
        raw = _layer_tar(layout, layer.digest, layer.media_type)
        assert sha256_digest(raw) == diff_id
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = tar.getmembers()
            assert sum(m.size for m in members if m.isfile()) == size
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        # random payload does not compress: the blob is about as large as the payload
        assert layer.size_bytes >= size
        assert layout.blob_path(layer.digest).stat().st_size == layer.size_bytes
    assert layout.total_size_bytes == sum(d.size_bytes for d in layout.descriptors)


def test_text_and_zstd(tmp_path):
    text = build_image(SyntheticImageSpec((1 << 20,), compressibility="text", seed=1),
                       cache_dir=tmp_path)
    (layer,) = text.layers
    assert layer.size_bytes < 0.4 * (1 << 20)
    raw = _layer_tar(text, layer.digest, layer.media_type)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        first = next(m for m in tar.getmembers() if m.isfile())
        sample = tar.extractfile(first).read(2000)  # type: ignore[union-attr]
    assert sample.decode("ascii").count("\n") > 10
    z = build_image(SyntheticImageSpec((256 * KiB,), compression="zstd", seed=1),
                    cache_dir=tmp_path)
    (zl,) = z.layers
    assert zl.media_type == OCI_LAYER_ZSTD
    cfg = z.read_json(z.read_json(z.manifest_digest)["config"]["digest"])
    assert sha256_digest(_layer_tar(z, zl.digest, zl.media_type)) == cfg["rootfs"]["diff_ids"][0]


def test_multiarch_index(multiarch_image):
    assert multiarch_image.is_index
    assert multiarch_image.media_type == OCI_INDEX
    assert multiarch_image.platforms == ("linux/amd64", "linux/arm64")
    for m in multiarch_image.manifests():
        cfg = multiarch_image.read_json(multiarch_image.read_json(m.digest)["config"]["digest"])
        assert f"{cfg['os']}/{cfg['architecture']}" == m.platform
    multiarch_image.verify()


def test_cache_hit_returns_same_layout(tmp_path):
    first = build_image("synthetic-small", cache_dir=tmp_path)
    stamp = first.blob_path(first.manifest_digest).stat().st_mtime_ns
    second = build_image("synthetic-small", cache_dir=tmp_path)
    assert second.path == first.path
    assert second.blob_path(second.manifest_digest).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no leftovers


def test_default_cache_dir_follows_env_then_home(tmp_path, monkeypatch):
    """$PULLBENCH_CACHE/images when set, else ~/.cache/pullbench/images (HOME faked here)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PULLBENCH_CACHE", str(tmp_path / "env-cache"))
    assert images_mod.default_cache_dir() == tmp_path / "env-cache" / "images"
    monkeypatch.delenv("PULLBENCH_CACHE")
    assert images_mod.default_cache_dir() == tmp_path / "home" / ".cache" / "pullbench" / "images"
    layout = build_image(SyntheticImageSpec((4 * KiB,), seed=11))  # no cache_dir: the default
    assert layout.path.parent == tmp_path / "home" / ".cache" / "pullbench" / "images"


def test_fixture_images_live_in_the_session_cache(small_image):
    """conftest sets PULLBENCH_CACHE for the session (never ~/.cache unless the user chose it)."""
    cache = Path(os.environ["PULLBENCH_CACHE"])
    assert small_image.path.parent == images_mod.default_cache_dir() == cache / "images"


def test_catalog_names():
    names = [e.name for e in list_catalog()]
    for required in ("synthetic-256m", "synthetic-64m", "synthetic-512m", "synthetic-small",
                     "multiarch-small", "debian-minbase", "torch-cpu"):
        assert required in names
    assert sum(catalog["synthetic-256m"].spec.layer_sizes_bytes) == 256 << 20  # type: ignore[union-attr]
    assert catalog["synthetic-256m"].spec.compressibility == "random"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [
    {"layer_sizes_bytes": ()},
    {"layer_sizes_bytes": (-1,)},
    {"layer_sizes_bytes": (1,), "compressibility": "zeros"},
    {"layer_sizes_bytes": (1,), "compression": "bzip2"},
    {"layer_sizes_bytes": (1,), "platforms": ("amd64",)},
    {"layer_sizes_bytes": (1,), "platforms": ("linux/amd64", "linux/amd64")},
])
def test_bad_specs(bad):
    with pytest.raises(ImageBuildError):
        SyntheticImageSpec(**bad)


def test_unknown_catalog_name_lists_known_ones(tmp_path):
    with pytest.raises(ImageBuildError, match="synthetic-256m") as info:
        build_image("no-such-image", cache_dir=tmp_path)
    assert "pullbench image list" in str(info.value)


def test_debian_minbase_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError, match="needs root"):
        build_image("debian-minbase", cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_debian_minbase_needs_debootstrap(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ImageBuildError, match="apt-get install debootstrap"):
        build_image("debian-minbase", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_apt_mirror_comes_from_the_machine():
    if not Path("/etc/apt").is_dir():
        pytest.skip("not a Debian machine")
    mirror = images_mod.apt_mirror("bookworm")
    assert mirror.startswith(("http://", "https://", "file:"))
    sources = "".join(p.read_text() for p in Path("/etc/apt").rglob("*.sources")) + "".join(
        p.read_text() for p in Path("/etc/apt").rglob("*.list"))
    assert mirror in sources


def _tree(root: Path, mtime: int) -> Path:
    (root / "b" / "c").mkdir(parents=True)
    (root / "a.txt").write_text("hello")
    (root / "b" / "c" / "d.bin").write_bytes(os.urandom(0) + b"\x00\x01" * 1000)
    (root / "link").symlink_to("a.txt")
    os.link(root / "a.txt", root / "b" / "hard.txt")
    for p in [*root.rglob("*"), root]:
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


def test_tar_directory_is_reproducible(tmp_path):
    one, two = io.BytesIO(), io.BytesIO()
    tar_directory(_tree(tmp_path / "one", 1_000_000), one)
    tar_directory(_tree(tmp_path / "two", 2_000_000), two, prefix="")
    assert one.getvalue() == two.getvalue()
    with tarfile.open(fileobj=io.BytesIO(one.getvalue())) as tar:
        names = tar.getnames()
        assert names == ["a.txt", "b", "b/c", "b/c/d.bin", "b/hard.txt", "link"]
        assert tar.getmember("link").issym()
        assert tar.getmember("b/hard.txt").islnk()
        assert all(m.mtime == 0 and m.uname == "" for m in tar.getmembers())
    with pytest.raises(ImageBuildError):
        tar_directory(tmp_path / "missing", io.BytesIO())


def test_image_from_directory(tmp_path):
    tree = _tree(tmp_path / "tree", 5)
    layout = image_from_directory(tree, tmp_path / "layout", prefix="opt/app")
    layout.verify()
    (layer,) = layout.layers
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layout.read_blob(layer.digest)))) as t:
        assert "opt/app/b/c/d.bin" in t.getnames()
    again = image_from_directory(tree, tmp_path / "layout2", prefix="opt/app")
    assert again.manifest_digest == layout.manifest_digest
    with pytest.raises(ImageBuildError, match="already exists"):
        image_from_directory(tree, tmp_path / "layout")


def test_import_oci_layout_dir_and_tar(tmp_path, small_image):
    got = import_image(small_image.path, name="copy", cache_dir=tmp_path / "cache")
    assert got.manifest_digest == small_image.manifest_digest
    assert got.path != small_image.path
    tarball = tmp_path / "layout.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(small_image.path, arcname=".")
    got = import_image(tarball, cache_dir=tmp_path / "cache")
    assert got.manifest_digest == small_image.manifest_digest


def test_import_docker_archive_from_skopeo(tmp_path, small_image, embedded_registry):
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo must be installed in CI")
        pytest.skip("skopeo not installed")
    archive = tmp_path / "saved.tar"
    subprocess.run([skopeo, "--insecure-policy", "copy", f"oci:{small_image.path}",
                    f"docker-archive:{archive}:demo/app:v1"], check=True, capture_output=True,
                   timeout=120)
    layout = import_image(archive, name="saved", cache_dir=tmp_path / "cache")
    assert layout.media_type == DOCKER_MANIFEST
    layout.verify()
    manifest = layout.read_json(layout.manifest_digest)
    config = layout.read_json(manifest["config"]["digest"])
    diff_ids = [sha256_digest(gzip.decompress(layout.read_blob(d.digest))) for d in layout.layers]
    assert diff_ids == config["rootfs"]["diff_ids"]
    digest = push_image(layout, f"{embedded_registry.host}/imported/saved:v1")
    assert digest == layout.manifest_digest


def test_import_bad_input(tmp_path):
    with pytest.raises(ImageBuildError, match="no such file"):
        import_image(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageBuildError, match="not an OCI image layout"):
        import_image(tmp_path / "empty", cache_dir=tmp_path / "cache")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball at all" * 100)
    with pytest.raises(ImageBuildError, match="neither"):
        import_image(junk, cache_dir=tmp_path / "cache")
    empty_tar = tmp_path / "other.tar"
    with tarfile.open(empty_tar, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ImageBuildError, match="docker save"):
        import_image(empty_tar, cache_dir=tmp_path / "cache")
    assert [p for p in (tmp_path / "cache" / "imported").iterdir()] == []


def test_push_errors_are_clear(tmp_path, small_image):
    with pytest.raises(ImageBuildError, match="REGISTRY/REPO"):
        push_image(small_image, "just-a-name")
    with EmbeddedRegistry(tmp_path, misbehavior=Misbehavior(fail_status=500)) as reg:
        with pytest.raises(RegistryError, match="HTTP 500"):
            push_image(small_image, f"{reg.host}/x:v1")
        port = reg.port
    with pytest.raises(RegistryError, match="cannot reach"):
        push_image(small_image, f"127.0.0.1:{port}/x:v1")


# --- CLI -------------------------------------------------------------------------------------
def test_cli_image_commands(tmp_path, embedded_registry, monkeypatch):
    monkeypatch.setenv("PULLBENCH_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    r = runner.invoke(main, ["image", "list"])
    assert r.exit_code == 0
    assert "synthetic-256m" in r.output
    r = runner.invoke(main, ["image", "list", "--json"])
    assert {e["name"] for e in json.loads(r.output)} >= {"synthetic-small", "torch-cpu"}
    r = runner.invoke(main, ["image", "build", "synthetic-small"])
    assert r.exit_code == 0, r.output
    digest = r.output.split()[1]
    r = runner.invoke(main, ["image", "push", "synthetic-small",
                             f"{embedded_registry.host}/cli/small:v1", "--plain-http"])
    assert r.exit_code == 0, r.output
    assert r.output.split()[1] == digest
    layout = build_image("synthetic-small")
    r = runner.invoke(main, ["image", "import", str(layout.path), "--name", "mine"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("mine " + digest)
    r = runner.invoke(main, ["image", "push", str(layout.path),
                             f"{embedded_registry.host}/cli/dir:v1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["image", "build", "nope"])
    assert r.exit_code == 1
    assert "unknown catalog image" in r.output
    r = runner.invoke(main, ["image", "push", "nope", "127.0.0.1:1/x:y"])
    assert r.exit_code == 1
    assert "neither a catalog image" in r.output


@pytest.mark.parametrize("kind", ["embedded", "distribution-tls"])
def test_cli_registry_serve(kind, tmp_path):
    """`pullbench registry serve` runs until SIGINT (Ctrl-C), after loading an image."""
    args = ["--root", str(tmp_path / "root"), "--port", "0", "--push", "synthetic-small"]
    verify: bool | str = True
    if kind == "distribution-tls":
        if shutil.which("docker-registry") is None and not os.environ.get("CI"):
            pytest.skip("docker-registry not installed")
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        verify = str(tmp_path / "ca.pem")
        args += ["--kind", "distribution", "--tls-cert", str(tmp_path / "cert.pem"),
                 "--tls-key", str(tmp_path / "key.pem"), "--ca-bundle", verify]
    env = {**os.environ, "PULLBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pullbench.cli import main; main()", "registry", "serve",
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        pushed = proc.stdout.readline()
        serving = proc.stdout.readline()
        assert pushed.startswith("pushed 127.0.0.1:"), pushed + proc.stderr.read()  # type: ignore[union-attr]
        url = serving.split()[3]
        assert url.startswith("https://" if kind != "embedded" else "http://")
        s = requests.Session()
        s.trust_env = False
        r = s.get(f"{url}/v2/synthetic-small/manifests/latest", verify=verify,
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == pushed.split()[2]
        s.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert any((tmp_path / "root").iterdir())  # storage kept


def test_cli_registry_serve_bad_options(tmp_path):
    r = CliRunner().invoke(main, ["registry", "serve", "--root", str(tmp_path),
                                  "--tls-cert", __file__])
    assert r.exit_code == 2
    assert "--tls-key" in r.output


def test_catalog_recipes_are_sane():
    names = [e.name for e in list_catalog()]
    assert len(names) == len(set(names))
    for e in list_catalog():
        assert (e.spec is not None) == (e.source == "synthetic")
        assert e.approx_size_bytes > 0
    assert catalog["debian-minbase"].needs_root


def test_import_layout_tar_ignores_links_and_hostile_names(tmp_path, small_image):
    """Docker >= 25 `docker save` output: an OCI layout plus legacy symlinks and manifest.json."""
    tarball = tmp_path / "docker25.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(small_image.path, arcname=".")
        link = tarfile.TarInfo("abc123/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../blobs/sha256/" + "0" * 64
        tar.addfile(link)
        evil = tarfile.TarInfo("../../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        manifest = json.dumps([{"Config": "x", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    got = import_image(tarball, cache_dir=tmp_path / "cache")
    assert got.manifest_digest == small_image.manifest_digest
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.is_symlink() for p in got.path.rglob("*"))


def _toy_wheel(directory: Path) -> Path:
    """A real (tiny) wheel: pbtoy 1.0 with a module and a fake shared library."""
    import base64
    import zipfile

    files = {
        "pbtoy/__init__.py": b"VALUE = 42\n",
        "pbtoy/_native.so": bytes(range(256)) * 64,
        "pbtoy-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pbtoy\nVersion: 1.0\n",
        "pbtoy-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("pbtoy-1.0.dist-info/RECORD,,")
    files["pbtoy-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / "pbtoy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return wheel


def test_image_from_pip_target(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _toy_wheel(wheels)
    args = ("--no-index", "--find-links", str(wheels))
    layout = image_from_pip("pbtoy==1.0", tmp_path / "layout", pip_args=args)
    layout.verify()
    (layer,) = layout.layers
    raw = gzip.decompress(layout.read_blob(layer.digest))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        so = tar.extractfile("usr/local/lib/python3.11/site-packages/pbtoy/_native.so")
        assert so is not None
        assert so.read() == bytes(range(256)) * 64
    assert "usr/local/lib/python3.11/site-packages/pbtoy-1.0.dist-info/METADATA" in names
    with pytest.raises(ImageBuildError, match=r"pbtoy==9\.9"):
        image_from_pip("pbtoy==9.9", tmp_path / "layout2", pip_args=args)
    assert not (tmp_path / "layout2").exists()
