"""Unpack: OCI layer semantics on a real directory, hostile layers refused with nothing
escaping the root, and our root filesystem identical to containerd's for the same image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from pullbench._errors import (
    CorruptLayerError,
    DecompressionBomb,
    DecompressionError,
    DiffIdMismatch,
    StrategyError,
    UnsafeLayerError,
)
from pullbench.puller._decompress import DecompressionLimits
from pullbench.puller._unpack import RootfsUnpacker, image_layers, unpack_image

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"
MTIME = 1_600_000_000
MiB = 1 << 20


# --- building layers -------------------------------------------------------------------------
def E(name: str, kind: str = "f", data: bytes = b"", *, mode: int | None = None,
      link: str = "", mtime: int = MTIME, uid: int = 0, gid: int = 0, dev: tuple[int, int] = (0, 0),
      pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "s": tarfile.SYMTYPE,
               "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE,
               "p": tarfile.FIFOTYPE}[kind]
    ti.mode = mode if mode is not None else (0o755 if kind == "d" else 0o644)
    ti.size = len(data) if kind == "f" else 0
    ti.linkname, ti.mtime, ti.uid, ti.gid = link, mtime, uid, gid
    ti.devmajor, ti.devminor = dev
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def make_tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return out.getvalue()


def apply(unpacker: RootfsUnpacker, tar: bytes, media_type: str = GZ, **kw):
    blob = {GZ: lambda b: gzip.compress(b, 1), ZST: zstandard.ZstdCompressor().compress,
            TAR: lambda b: b}[media_type](tar)
    return unpacker.apply(io.BytesIO(blob), media_type, digest="sha256:" + "ab" * 32, **kw)


def write_layout(path: Path, layers: list[tuple[str, bytes]]) -> Path:
    """An OCI image layout of ``(media_type, uncompressed tar)`` layers (base first)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd, len(data)

    descs, diff_ids = [], []
    for media_type, tar in layers:
        blob = {GZ: lambda b: gzip.compress(b, 6), ZST: zstandard.ZstdCompressor().compress,
                TAR: lambda b: b}[media_type](tar)
        digest, size = put(blob)
        descs.append({"mediaType": media_type, "digest": digest, "size": size})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}
    cdigest, csize = put(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cdigest, "size": csize}, "layers": descs}
    mdigest, msize = put(json.dumps(manifest).encode())
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
         "size": msize, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return path


# --- looking at trees ------------------------------------------------------------------------
def tree(root: Path) -> dict[str, tuple]:
    """path → (type, mode, uid, gid, size, content sha256 / link target / rdev, mtime, inode
    group) for everything under ``root`` (not ``root`` itself)."""
    out: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
                group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
            elif stat.S_ISLNK(st.st_mode):
                what, group = Path(p).readlink().as_posix(), None
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what, group = (os.major(st.st_rdev), os.minor(st.st_rdev)), None
            else:
                what, group = None, None
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, what,
                        mtime, group)
    return dict(sorted(out.items()))


@pytest.fixture
def sandbox(tmp_path: Path):
    """``tmp_path/outside`` with a victim file; the root is ``tmp_path/root``. Yields a checker
    that asserts nothing outside the root changed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious")

    def snapshot() -> dict[str, tuple]:
        return {k: v for k, v in tree(tmp_path).items()
                if not (k == "root" or k.startswith("root/"))}

    before = snapshot()

    def check() -> None:
        assert snapshot() == before, "something outside the root changed"
        assert victim.read_bytes() == b"precious"
        assert victim.stat().st_nlink == 1

    check.root = tmp_path / "root"  # type: ignore[attr-defined]
    check.outside = outside  # type: ignore[attr-defined]
    return check


# --- semantics -------------------------------------------------------------------------------
def test_files_dirs_modes_mtimes_and_implicit_parents(tmp_path):
    root = tmp_path / "root"
    u = RootfsUnpacker(root, privileged=False)
    r = apply(u, make_tar(
        E("tmp", "d", mode=0o1777, mtime=MTIME + 1),
        E("usr/bin/su", "f", b"su", mode=0o4755, mtime=MTIME + 2),  # parents implied
        E("ro", "d", mode=0o555, mtime=MTIME + 3),
        E("ro/inside", "f", b"x" * 5000, mode=0o600),
        E("./etc/", "d"),
        E("etc/empty", "f"),
    ))
    t = tree(root)
    assert t["tmp"][1] == 0o1777
    assert t["usr/bin/su"][1] == 0o4755
    assert t["ro"][1] == 0o555
    assert t["ro/inside"][1] == 0o600
    assert (root / "ro" / "inside").read_bytes() == b"x" * 5000
    assert (root / "usr/bin/su").stat().st_mtime == MTIME + 2
    assert (root / "tmp").stat().st_mtime == MTIME + 1  # directory times set after contents
    assert (root / "ro").stat().st_mtime == MTIME + 3
    assert (root / "etc/empty").stat().st_size == 0
    assert (r.files, r.file_bytes) == (3, 5002)
    assert r.dirs_created == 5  # tmp, usr, usr/bin (implied), ro, etc
    assert r.uncompressed_bytes > 0
    assert r.compressed_bytes > 0
    assert r.duration_s >= r.decompress_s
    assert r.decompressor == "zlib"


def test_symlinks_are_kept_verbatim_and_replaced_not_followed(sandbox):
    u = RootfsUnpacker(sandbox.root, privileged=False)
    apply(u, make_tar(E("abs", "s", link=str(sandbox.outside / "victim")),
                      E("rel", "s", link="../../anything"),
                      E("bin", "s", link="usr/bin"),
                      E("usr/bin/ls", "f", b"ls")))
    assert Path(sandbox.root / "abs").readlink().as_posix() == str(sandbox.outside / "victim")
    assert Path(sandbox.root / "rel").readlink().as_posix() == "../../anything"
    # a member over a symlink replaces the link; a member under an in-root symlink follows it
    apply(u, make_tar(E("abs", "f", b"replaced"), E("bin/cat", "f", b"cat")))
    assert (sandbox.root / "abs").read_bytes() == b"replaced"
    assert not (sandbox.root / "abs").is_symlink()
    assert (sandbox.root / "usr/bin/cat").read_bytes() == b"cat"
    sandbox()


def test_hard_links_share_an_inode_within_and_across_layers(tmp_path):
    root = tmp_path / "root"
    u = RootfsUnpacker(root, privileged=False)
    r = apply(u, make_tar(E("a", "f", b"A"), E("b", "h", link="a"), E("d/c", "h", link="./a")))
    assert r.hardlinks == 2
    assert (root / "a").stat().st_ino == (root / "b").stat().st_ino == (root / "d/c").stat().st_ino
    apply(u, make_tar(E("e", "h", link="b")))
    assert (root / "e").stat().st_nlink == 4


def test_whiteouts_and_opaque_directories_hide_lower_layers_only(tmp_path):
    root = tmp_path / "root"
    u = RootfsUnpacker(root, privileged=False)
    apply(u, make_tar(E("etc", "d"), E("etc/keep", "f", b"1"), E("etc/gone", "f", b"2"),
                      E("var/lib/x", "f", b"3"), E("opq", "d"), E("opq/old", "f", b"4"),
                      E("opq/sub/old2", "f", b"5")))
    r = apply(u, make_tar(
        E("etc/.wh.gone", "f"),
        E("var/.wh.lib", "f"),                      # a whole directory
        E("opq/new", "f", b"6"),                    # created before the opaque marker...
        E("opq/.wh..wh..opq", "f"),                 # ...and kept by it
        E("etc/.wh..wh.plnk", "f"),                 # aufs metadata: ignored
        E("etc/fresh", "f", b"7"), E("etc/.wh.fresh", "f"),  # same layer: not hidden
    ), media_type=ZST)
    assert sorted(tree(root)) == ["etc", "etc/fresh", "etc/keep", "opq", "opq/new", "var"]
    assert (r.whiteouts, r.opaque_dirs) == (2, 1)
    assert r.removed == 4  # etc/gone, var/lib, opq/old, opq/sub
    assert r.decompressor == "zstandard"


def test_a_member_replaces_what_lower_layers_had(tmp_path):
    root = tmp_path / "root"
    u = RootfsUnpacker(root, privileged=False)
    apply(u, make_tar(E("f2d", "f", b"x"), E("d2f/inner", "f", b"y"), E("d2s/inner", "f"),
                      E("dd", "d", mode=0o700), E("dd/kept", "f", b"k")))
    apply(u, make_tar(E("f2d", "d"), E("f2d/now", "f", b"z"), E("d2f", "f", b"file"),
                      E("d2s", "s", link="f2d"), E("dd", "d", mode=0o750)), media_type=TAR)
    t = tree(root)
    assert stat.S_ISDIR(t["f2d"][0])
    assert t["f2d/now"]
    assert (root / "d2f").read_bytes() == b"file"
    assert Path(root / "d2s").readlink().as_posix() == "f2d"
    assert t["dd"][1] == 0o750
    assert (root / "dd/kept").read_bytes() == b"k"


def test_long_and_unicode_names(tmp_path):
    root = tmp_path / "root"
    deep = "/".join(["d" * 60] * 5) + "/" + "f" * 200
    apply(RootfsUnpacker(root, privileged=False),
          make_tar(E(deep, "f", b"deep"), E("ünïcødé/名前", "f", b"u"), E("sp ace", "f")))
    assert (root / deep).read_bytes() == b"deep"
    assert (root / "ünïcødé" / "名前").read_bytes() == b"u"


def test_unprivileged_skips_device_nodes_and_fifos_and_keeps_our_ownership(sandbox):
    u = RootfsUnpacker(sandbox.root, privileged=False)
    r = apply(u, make_tar(E("dev/sda", "c", dev=(8, 0)), E("dev/loop0", "b", dev=(7, 0)),
                          E("run/fifo", "p"), E("owned", "f", b"o", uid=1234, gid=4321)))
    assert (r.special_created, r.special_skipped) == (0, 3)
    assert not (sandbox.root / "dev/sda").exists()
    assert not (sandbox.root / "run/fifo").exists()
    st = (sandbox.root / "owned").stat()
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    sandbox()


@pytest.mark.root
def test_privileged_applies_ownership_xattrs_devices_and_fifos(tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root")
        pytest.skip("needs root")
    root = tmp_path / "root"
    r = apply(RootfsUnpacker(root), make_tar(
        E("dev/null", "c", dev=(1, 3), mode=0o666), E("run/fifo", "p", mode=0o600),
        E("owned", "f", b"o", uid=1234, gid=4321, mode=0o2755),
        E("link", "s", link="owned", uid=99, gid=98),
        E("cap", "f", b"c", pax={"SCHILY.xattr.user.pullbench": "yes"})))
    st = (root / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    st = (root / "owned").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o2755)
    assert ((root / "link").lstat().st_uid, (root / "link").lstat().st_gid) == (99, 98)
    assert os.getxattr(root / "cap", "user.pullbench") == b"yes"
    assert (r.special_created, r.xattrs) == (2, 1)


def test_the_root_must_be_new_or_empty(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StrategyError, match="not an empty directory"):
        RootfsUnpacker(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    RootfsUnpacker(tmp_path / "empty")


def test_unpack_image_checks_diff_ids_across_gzip_zstd_and_tar_layers(tmp_path):
    layout = write_layout(tmp_path / "layout", [
        (GZ, make_tar(E("a", "f", b"1"), E("b", "f", b"2"))),
        (ZST, make_tar(E(".wh.a", "f"), E("c", "f", b"3"))),
        (TAR, make_tar(E("d", "h", link="c"))),
    ])
    result = unpack_image(layout, tmp_path / "root", privileged=False)
    assert sorted(tree(tmp_path / "root")) == ["b", "c", "d"]
    assert [x.decompressor for x in result.layers] == ["zlib", "zstandard", "none"]
    assert [x.diff_id for x in result.layers] == [d for *_, d in image_layers(layout)]
    assert result.files == 3


# --- hostile layers: each ends in its error, nothing outside changes, the root is gone -------
def _refused(sandbox, error, match, tar, *, media_type=GZ, **kw):
    u = RootfsUnpacker(sandbox.root, privileged=False, **kw)
    apply(u, make_tar(E("base", "f", b"lower layer")))  # a partial root exists
    with pytest.raises(error, match=match) as info:
        apply(u, tar, media_type=media_type)
    sandbox()
    assert not sandbox.root.exists(), "the partial root must be removed"
    assert info.value.layer == "sha256:" + "ab" * 32
    return info.value


def test_dotdot_member_name(sandbox):
    err = _refused(sandbox, UnsafeLayerError, r"member '\.\./outside/evil' has a '\.\.'",
                   make_tar(E("../outside/evil", "f", b"x")))
    assert err.member == "../outside/evil"


def test_dotdot_inside_a_member_name(sandbox):
    _refused(sandbox, UnsafeLayerError, r"'\.\.' component",
             make_tar(E("a/b/../../../outside/evil", "f", b"x")))


def test_absolute_member_name(sandbox):
    name = str(sandbox.outside / "evil")
    err = _refused(sandbox, UnsafeLayerError, "has an absolute name", make_tar(E(name, "f")))
    assert err.member == name


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlink_then_a_file_through_the_symlink(sandbox, target):
    link = str(sandbox.outside) if target == "absolute" else "../outside"
    err = _refused(sandbox, UnsafeLayerError, r"member 'esc/victim' goes through a symlink "
                   r"that leads outside the root",
                   make_tar(E("esc", "s", link=link), E("esc/victim", "f", b"overwritten")))
    assert err.member == "esc/victim"


def test_symlink_then_a_directory_through_the_symlink(sandbox):
    _refused(sandbox, UnsafeLayerError, "goes through a symlink",
             make_tar(E("esc", "s", link="../outside"), E("esc/newdir/f", "f", b"x")))


@pytest.mark.parametrize("link", ["../outside/victim", "OUTSIDE/victim"])
def test_hard_link_to_a_path_outside(sandbox, link):
    link = link.replace("OUTSIDE", str(sandbox.outside))
    _refused(sandbox, UnsafeLayerError, r"member 'h' is a hard link to",
             make_tar(E("h", "h", link=link)))


def test_hard_link_through_a_symlink_to_outside(sandbox):
    _refused(sandbox, UnsafeLayerError, r"member 'h' (is a hard link that leaves the root|goes "
             r"through a symlink)",
             make_tar(E("esc", "s", link=str(sandbox.outside)), E("h", "h", link="esc/victim")))


def test_hard_link_to_a_symlink_that_points_outside(sandbox):
    # tarfile's data_filter resolves the link target with realpath: refused (containerd would
    # hard-link the symlink itself; stricter here, and documented)
    _refused(sandbox, UnsafeLayerError, r"member 'h' is a hard link that leaves the root",
             make_tar(E("esc", "s", link=str(sandbox.outside / "victim")),
                      E("h", "h", link="esc")))


@pytest.mark.parametrize("name", ["sub/.wh...", ".wh..", ".wh."])
def test_whiteout_naming_dotdot(sandbox, name):
    _refused(sandbox, UnsafeLayerError, "is a whiteout naming",
             make_tar(E("sub", "d"), E(name, "f")))


def test_whiteout_through_a_symlink(sandbox):
    _refused(sandbox, UnsafeLayerError, "goes through a symlink",
             make_tar(E("esc", "s", link="../outside"), E("esc/.wh.victim", "f")))


def test_opaque_marker_through_a_symlink(sandbox):
    _refused(sandbox, UnsafeLayerError, "goes through a symlink",
             make_tar(E("esc", "s", link="../outside"), E("esc/.wh..wh..opq", "f")))


def test_device_nodes_as_non_root_are_skipped_not_created(sandbox):
    # documented: unprivileged, device nodes and FIFOs are skipped and counted (not an error)
    u = RootfsUnpacker(sandbox.root, privileged=False)
    r = apply(u, make_tar(E("mem", "c", dev=(1, 1), mode=0o666), E("sda", "b", dev=(8, 0))))
    assert r.special_skipped == 2
    assert sorted(tree(sandbox.root)) == []
    sandbox()


def test_corrupt_tar_header_after_the_first_member(sandbox):
    tar = bytearray(make_tar(E("one", "f", b"1" * 600), E("two", "f", b"2"), E("three", "f")))
    with tarfile.open(fileobj=io.BytesIO(bytes(tar))) as t:
        second = t.getmember("two").offset
    assert tar[second: second + 100].rstrip(b"\0") == b"two"
    tar[second + 148: second + 156] = b"0000000\0"  # break the header checksum
    err = _refused(sandbox, CorruptLayerError, r"member 'one': invalid tar header at offset",
                   bytes(tar))
    assert err.member == "one"


def test_garbage_that_is_not_a_tar(sandbox):
    _refused(sandbox, CorruptLayerError, "invalid tar header|not a tar stream",
             os.urandom(4096))


def test_tar_cut_short_inside_a_member(sandbox):
    tar = make_tar(E("big", "f", os.urandom(100_000)))
    err = _refused(sandbox, CorruptLayerError, r"member 'big': its data is cut short",
                   tar[:50_000], media_type=TAR)
    assert err.member == "big"


def test_truncated_gzip_layer(sandbox):
    blob = gzip.compress(make_tar(E("big", "f", os.urandom(200_000))))
    u = RootfsUnpacker(sandbox.root, privileged=False)
    with pytest.raises(DecompressionError, match="truncated gzip stream"):
        u.apply(io.BytesIO(blob[: len(blob) // 2]), GZ, digest="sha256:cut")
    sandbox()
    assert not sandbox.root.exists()


def test_decompression_bomb_is_stopped_and_the_root_removed(sandbox):
    bomb = make_tar(E("zeros", "f", bytes(16 * MiB)))
    limits = DecompressionLimits(max_ratio=20, ratio_after_bytes=MiB)
    err = _refused(sandbox, DecompressionBomb, "more than 20×", bomb, limits=limits)
    assert err.cap == "ratio"


def test_absolute_size_cap_and_the_free_space_default(sandbox):
    u = RootfsUnpacker(sandbox.root, privileged=False)
    r = apply(u, make_tar(E("f", "f", b"x")))
    st = os.statvfs(sandbox.root)
    assert 0 < r.max_uncompressed_bytes <= st.f_blocks * st.f_frsize  # reported: free space
    shutil.rmtree(sandbox.root)
    limits = DecompressionLimits(max_ratio=None, max_uncompressed_bytes=100_000)
    _refused(sandbox, DecompressionBomb, "cap of 100000 bytes",
             make_tar(E("big", "f", os.urandom(200_000))), limits=limits)


def test_keep_partial_keeps_the_root_on_failure(sandbox):
    u = RootfsUnpacker(sandbox.root, privileged=False, keep_partial=True)
    apply(u, make_tar(E("base", "f", b"b")))
    with pytest.raises(UnsafeLayerError):
        apply(u, make_tar(E("../x", "f")))
    assert (sandbox.root / "base").read_bytes() == b"b"
    with pytest.raises(StrategyError, match="an earlier layer failed"):
        apply(u, make_tar(E("more", "f")))
    sandbox()


def test_diff_id_mismatch_removes_the_root(sandbox, tmp_path_factory):
    layout = write_layout(tmp_path_factory.mktemp("layout") / "layout",
                          [(GZ, make_tar(E("a", "f", b"1")))])
    index = json.loads((layout / "index.json").read_text())
    mpath = layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]
    cdigest = json.loads(mpath.read_text())["config"]["digest"]
    cpath = layout / "blobs/sha256" / cdigest[7:]
    config = json.loads(cpath.read_text())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    cpath.write_text(json.dumps(config))  # the layout is inconsistent now, on purpose
    with pytest.raises(DiffIdMismatch, match=r"rootfs\.diff_ids says sha256:000"):
        unpack_image(layout, sandbox.root, privileged=False)
    assert not sandbox.root.exists()
    sandbox()


def test_parent_that_is_a_file(sandbox):
    _refused(sandbox, CorruptLayerError, r"member 'base/child'.*not a directory",
             make_tar(E("base/child", "f", b"x")))


# --- against a real peer: containerd ---------------------------------------------------------
def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} must be installed in CI")
        pytest.skip(f"{tool} not installed")
    return path


def _run(cmd: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    return proc.stdout


class _Containerd:
    """A private containerd (own socket, root, state) that dies with this process."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = base / "containerd.sock"
        base.mkdir(parents=True)
        (base / "config.toml").write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n')
        self.log = (base / "containerd.log").open("wb")
        cmd = [_need("containerd"), "--config", str(base / "config.toml")]
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "TERM", "--", *cmd]
        (base / "tmp").mkdir()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TMPDIR": str(base / "tmp")})
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            assert self.proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.05)
        self.ctr = [_need("ctr"), "--address", str(self.sock), "--namespace", "pullbench"]

    def pulled_rootfs(self, ref: str, diff_ids: list[str]) -> Path:
        """``ctr images pull`` (native snapshotter), then the snapshot of the top layer via
        ``ctr snapshots view`` + ``ctr snapshots mounts``: a bind of a plain directory, read
        in place (nothing is mounted)."""
        _run([*self.ctr, "images", "pull", "--plain-http", "--snapshotter", "native", ref])
        chain = diff_ids[0]
        for d in diff_ids[1:]:
            chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
        snap = [*self.ctr, "snapshots", "--snapshotter", "native"]
        # The pull ends by deleting its lease, which schedules containerd's garbage collector;
        # an unreferenced view made before that collection runs is collected with it. Root
        # the view with the gc.root label, and make it again if the collector won the race.
        for _ in range(10):
            subprocess.run([*snap, "rm", "pullbench-view"], capture_output=True, check=False)
            _run([*snap, "view", "pullbench-view", chain])
            labelled = subprocess.run(
                [*snap, "label", "pullbench-view", "containerd.io/gc.root=pullbench-test"],
                capture_output=True, text=True, check=False)
            if labelled.returncode == 0:
                break
            time.sleep(0.2)
        mounts = _run([*snap, "mounts", "/pullbench-target", "pullbench-view"])
        words = mounts.split()
        assert words[:3] == ["mount", "-t", "bind"], mounts
        return Path(words[3])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def containerd(tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; a private containerd needs root")
        pytest.skip("a private containerd needs root")
    daemon = _Containerd(tmp_path / "containerd")
    yield daemon
    daemon.close()


def _assert_same_tree(ours: Path, theirs: Path) -> None:
    a, b = tree(ours), tree(theirs)
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b))[:20], sorted(set(b) - set(a))[:20])
    differ = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
    assert not differ, differ[:10]


def _crafted_layers() -> list[tuple[str, bytes]]:
    return [
        (GZ, make_tar(
            E("bin", "s", link="usr/bin"), E("usr", "d"), E("usr/bin", "d"),
            E("usr/bin/su", "f", b"su" * 1000, mode=0o4755, uid=0, gid=0),
            E("usr/bin/sudo", "h", link="usr/bin/su"),
            E("tmp", "d", mode=0o1777), E("etc", "d"),
            E("etc/passwd", "f", b"root:x:0:0\n"), E("etc/shadow", "f", b"x", mode=0o640,
                                                     gid=42),
            E("etc/alternatives/editor", "s", link="/usr/bin/vi"),
            E("var/run", "s", link="/run"),
            E("dev/null", "c", dev=(1, 3), mode=0o666), E("run/initctl", "p", mode=0o600),
            E("opt/app/data", "f", os.urandom(300_000)), E("opt/app/old", "f", b"old"),
            E("srv/ro", "d", mode=0o555), E("srv/ro/f", "f", b"ro"),
            E("home/user/file", "f", b"u", uid=1000, gid=1000, mode=0o600),
            E("/".join(["long" * 30] * 3), "f", b"long"), E("ünï/名前", "f", b"u"),
        )),
        (ZST, make_tar(
            E("etc/.wh.shadow", "f"), E("opt/app", "d"), E("opt/app/.wh..wh..opq", "f"),
            E("opt/app/new", "f", b"new"), E("etc/passwd", "f", b"root:x:0:0\nuser:x:1000\n"),
            E("usr/bin/sudo2", "h", link="usr/bin/su"), E("srv/ro", "d", mode=0o755),
        )),
        (TAR, make_tar(E("home/.wh.user", "f"), E("tmp/scratch", "f", b"s", mode=0o666))),
    ]


@pytest.mark.peers
@pytest.mark.root
@pytest.mark.slow
def test_crafted_image_unpacks_like_containerd(containerd, embedded_registry, tmp_path):
    from pullbench import ImageLayout, push_image

    layout = write_layout(tmp_path / "layout", _crafted_layers())
    ref = f"{embedded_registry.host}/unpack/crafted:latest"
    push_image(ImageLayout(layout), ref)
    diff_ids = [d for *_, d in image_layers(layout)]
    theirs = containerd.pulled_rootfs(ref, diff_ids)
    for decompressor in ("zlib", "isal", "unpigz"):
        ours = tmp_path / f"ours-{decompressor}"
        unpack_image(layout, ours, decompressor=decompressor)
        _assert_same_tree(ours, theirs)
    t = tree(ours)
    assert "etc/shadow" not in t
    assert "home/user" not in t
    assert "opt/app/old" not in t
    assert stat.S_ISCHR(t["dev/null"][0])


@pytest.mark.peers
@pytest.mark.root
@pytest.mark.slow
def test_debian_minbase_unpacks_like_containerd(containerd, embedded_registry, tmp_path):
    from pullbench import build_image, push_image

    _need("debootstrap")
    image = build_image("debian-minbase")  # cached per machine after the first build
    ref = f"{embedded_registry.host}/unpack/debian:bookworm"
    push_image(image, ref)
    diff_ids = [d for *_, d in image_layers(image.path)]
    theirs = containerd.pulled_rootfs(ref, diff_ids)
    ours = tmp_path / "ours"
    result = unpack_image(image.path, ours, decompressor="isal")
    assert result.files > 3000
    _assert_same_tree(ours, theirs)


# --- against a real peer: dockerd (docker pull + docker create + docker export) -------------
# The rootfs tar that `docker export` writes for a container that was created, never started,
# is the image's layers merged by dockerd's storage driver plus dockerd's *init layer*
# (moby/moby:daemon/initlayer/setup_unix.go, dockerd 20.10.24), which every container gets on
# top of its image. That layer is the only thing docker adds; it:
#   - unlinks each of these paths when it is a file or a symlink in the image and makes its
#     own: empty files (mode 0755, root) at /.dockerenv, /etc/hosts, /etc/hostname,
#     /etc/resolv.conf, /dev/console (the mount points a started container bind-mounts), and
#     the symlink /etc/mtab -> /proc/mounts. Whatever the image had there is replaced, so these
#     six paths are not compared; docker's entries are checked to be exactly the init layer's.
#   - makes the directories /dev/pts, /dev/shm, /proc, /sys, and any missing parent (/dev,
#     /etc), mode 0755, root -- only when the image does not have them (an existing directory is
#     kept as the image has it and is compared like everything else).
# docker export drops nothing else: it tars the mounted rootfs whole (moby/moby:daemon/
# export.go, containerExport). It truncates mtimes to whole seconds (moby/moby:pkg/archive/
# archive.go, FileInfoHeaderNoLookups): mtimes are compared at that resolution.
# One real difference between the two peers, asserted rather than excluded: a directory that
# a layer implies (a member's parent) but no layer lists is made mode 0600 by dockerd
# (moby/moby:pkg/archive/diff.go, UnpackLayer: system.MkdirAll(parentPath, 0600)) and 0755 by
# containerd (containerd/containerd:archive/tar.go, mkparent) and by pullbench.
# dockerd 20.10 cannot decompress zstd layers (moby/moby#41759 came later), so the crafted
# image for docker carries gzip where containerd's carries zstd.
_INIT_LAYER_FILES = {".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf",
                     "dev/console"}
_INIT_LAYER_SYMLINKS = {"etc/mtab": "/proc/mounts"}
_INIT_LAYER_DIRS = {"dev/pts", "dev/shm", "proc", "sys"}


def _init_layer_parents() -> set[str]:
    out = set()
    for path in (*_INIT_LAYER_FILES, *_INIT_LAYER_SYMLINKS, *_INIT_LAYER_DIRS):
        parts = path.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _tar_tree(tar_path: Path) -> dict[str, tuple]:
    """The :func:`tree` tuple of every member of a rootfs tar, hard links resolved to their
    target's content and grouped like inodes."""
    kinds = {tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG,
             tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
             tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
             tarfile.FIFOTYPE: stat.S_IFIFO}
    out: dict[str, tuple] = {}
    linked: set[str] = set()
    with tarfile.open(tar_path) as tar:
        for m in tar:
            name = m.name.rstrip("/").removeprefix("./")
            if name in ("", "."):
                continue
            assert name not in out, f"{name} twice in docker's export"
            if m.islnk():
                target = m.linkname.rstrip("/").removeprefix("./")
                t = out[target]
                linked.add(target)
                out[name] = (*t[:7], target)
                continue
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                what: object = hashlib.sha256(f.read()).hexdigest()
            elif m.issym():
                what = m.linkname
            elif m.ischr() or m.isblk():
                what = (m.devmajor, m.devminor)
            else:
                what = None
            out[name] = (kinds[m.type], m.mode & 0o7777, m.uid, m.gid,
                         m.size if m.isreg() else None, what,
                         None if m.isdir() else int(m.mtime) * 10**9, None)
    for target in linked:
        out[target] = (*out[target][:7], target)
    return out


def _hard_link_groups(t: dict[str, tuple]) -> dict[str, tuple]:
    """Name each hard-link group by its smallest path (walk orders differ)."""
    groups: dict[str, list[str]] = {}
    for path, v in t.items():
        if v[7] is not None:
            groups.setdefault(v[7], []).append(path)
    name = {p: min(ps) for ps in groups.values() for p in ps}
    return {p: (*v[:7], name[p]) if v[7] is not None else v for p, v in t.items()}


def _implied_dirs(layout: Path) -> set[str]:
    """Directories some layer of ``layout`` implies (a member's parent) and none lists."""
    listed: set[str] = set()
    implied: set[str] = set()
    for _media_type, digest, _size, _diff_id in image_layers(layout):
        algorithm, _, encoded = digest.partition(":")
        with tarfile.open(layout / "blobs" / algorithm / encoded) as tar:  # any compression
            for name in tar.getnames():
                parts = name.rstrip("/").removeprefix("./").split("/")
                listed.add("/".join(parts))
                implied.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return implied - listed


def _assert_same_as_docker_export(ours: Path, exported: Path, layout: Path) -> None:
    a = {k: (*v[:6], None if v[6] is None else v[6] // 10**9 * 10**9, v[7])
         for k, v in tree(ours).items()}
    for path in _implied_dirs(layout) & set(a):  # dockerd's mode for them (see above)
        assert a[path][:2] == (stat.S_IFDIR, 0o755), (path, a[path])
        a[path] = (a[path][0], 0o600, *a[path][2:])
    b = _tar_tree(exported)
    a, b = _hard_link_groups(a), _hard_link_groups(b)
    # the init layer's own entries (see above): present in docker's export, as docker makes them
    for path in _INIT_LAYER_FILES:
        assert b[path][:6] == (stat.S_IFREG, 0o755, 0, 0, 0, hashlib.sha256().hexdigest()), \
            (path, b[path])
        a.pop(path, None)
        b.pop(path)
    for path, target in _INIT_LAYER_SYMLINKS.items():
        assert (b[path][0], b[path][5]) == (stat.S_IFLNK, target), (path, b[path])
        a.pop(path, None)
        b.pop(path)
    for path in _INIT_LAYER_DIRS | _init_layer_parents():
        if path not in a:
            assert b[path][:4] == (stat.S_IFDIR, 0o755, 0, 0), (path, b[path])
            b.pop(path)
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b))[:20], sorted(set(b) - set(a))[:20])
    differ = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
    assert not differ, differ[:10]


class _Dockerd:
    """pullbench's private dockerd (:class:`pullbench.arms.DockerDaemon`: own socket, data
    root and exec root in a temp folder, dies with this process) and Debian's docker CLI."""

    def __init__(self, client: str, base: Path) -> None:
        from pullbench.arms import DockerDaemon

        # vfs: each layer a plain directory (copied from its parent, hard links kept), so a
        # hard link to a lower layer's file applies as it does in containerd's native
        # snapshotter
        self.daemon = DockerDaemon(storage_driver="vfs").start()
        (base / "client-config").mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = str(base / "client-config")
        self.docker = [client, "-H", f"unix://{self.daemon.socket_path}"]
        self.base = base

    def _docker(self, *args: str) -> str:
        proc = subprocess.run([*self.docker, *args], capture_output=True, text=True,
                              timeout=300, check=False, env=self.env)
        assert proc.returncode == 0, (args, proc.stderr[-2000:], self.daemon.log_tail())
        return proc.stdout

    def exported_rootfs(self, ref: str) -> Path:
        """``docker pull REF``, ``docker create REF`` (never started), ``docker export``."""
        self._docker("pull", "-q", ref)
        # the images carry no command; create does not run it
        cid = self._docker("create", ref, "/pullbench-never-run").strip()
        out = self.base / f"export-{cid[:12]}.tar"
        self._docker("export", "-o", str(out), cid)
        self._docker("rm", cid)
        return out

    def close(self) -> None:
        self.daemon.close()


@pytest.fixture(scope="module")
def dockerd(need_tool, tmp_path_factory):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; a private dockerd needs root")
        pytest.skip("a private dockerd needs root")
    need_tool("/usr/sbin/dockerd", "docker.io")
    client = need_tool("/usr/bin/docker", "docker.io")
    daemon = _Dockerd(client, tmp_path_factory.mktemp("dockerd"))
    yield daemon
    daemon.close()


@pytest.mark.peers
@pytest.mark.root
@pytest.mark.slow
def test_crafted_image_unpacks_like_docker_export(dockerd, embedded_registry, tmp_path):
    from pullbench import ImageLayout, push_image

    layers = [(GZ if media_type == ZST else media_type, tar)
              for media_type, tar in _crafted_layers()]
    layout = write_layout(tmp_path / "layout", layers)
    ref = f"{embedded_registry.host}/unpack/crafted-docker:latest"
    push_image(ImageLayout(layout), ref)
    exported = dockerd.exported_rootfs(ref)
    ours = tmp_path / "ours"
    unpack_image(layout, ours, decompressor="zlib")
    _assert_same_as_docker_export(ours, exported, layout)
    t = tree(ours)
    assert not {"etc/shadow", "opt/app/old", "home/user"} & set(t)
    assert t["usr/bin/sudo2"][7] == t["usr/bin/su"][7] is not None  # across layers


@pytest.mark.peers
@pytest.mark.root
@pytest.mark.slow
def test_debian_minbase_unpacks_like_docker_export(dockerd, embedded_registry, tmp_path):
    from pullbench import build_image, push_image

    _need("debootstrap")
    image = build_image("debian-minbase")  # cached per machine after the first build
    ref = f"{embedded_registry.host}/unpack/debian-docker:bookworm"
    push_image(image, ref)
    exported = dockerd.exported_rootfs(ref)
    ours = tmp_path / "ours"
    result = unpack_image(image.path, ours, decompressor="isal")
    assert result.files > 3000
    _assert_same_as_docker_export(ours, exported, image.path)
