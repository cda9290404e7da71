"""Fixture images: synthetic layers, directory trees, and the named catalog.

Three sources of images, all written as OCI image layouts (see :mod:`pullbench.images._oci`):

* synthetic: N layers of given sizes, random (incompressible) or text-like, gzip or zstd,
  deterministic from a seed, optionally one manifest per platform behind an OCI index;
* a directory tree, tarred reproducibly (sorted names, mtime 0, uid/gid 0, no user/group
  names) into one layer: a Debian minbase root filesystem (``debootstrap``), a
  ``pip install --target`` tree of the CPU torch wheel;
* imports (:func:`pullbench.import_image`).

Named catalog entries are built once and cached by content (a key over the recipe) under
``$PULLBENCH_CACHE/images`` or ``~/.cache/pullbench/images``.

Random layers are gzip-compressed with deflate level 0 (stored blocks). That is what gzip at
any level emits for incompressible input, since deflate falls back to stored blocks when
compression does not pay, so the bytes on the wire and the inflate cost match a real
``gzip -6`` of random data while building 256 MiB takes seconds, not a minute.
Text-like layers use level 6 (Docker's and containerd's default).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO

from .._errors import ImageBuildError
from .._media import (
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from ._cache import default_cache_dir
from ._oci import ImageLayout, LayoutDescriptor, _gzip_file, _put_blob, write_layout

if TYPE_CHECKING:  # numpy is imported when an image is built, not with pullbench
    import numpy as np

__all__ = [
    "CatalogEntry",
    "SyntheticImageSpec",
    "build_image",
    "catalog",
    "default_cache_dir",
    "image_from_directory",
    "image_from_pip",
    "list_catalog",
    "recompress_image",
    "tar_directory",
]

logger = logging.getLogger(__name__)

#: Bump when the builder's output for the same recipe changes (invalidates the cache).
BUILDER_VERSION = 2
MiB = 1 << 20
_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9.]+)?$")
_RANDOM_FILE_BYTES = 32 * MiB
_TEXT_FILE_BYTES = 256 * 1024
_WORDS = (
    "import def return class self None True False for in if else elif while try except with as "
    "from lambda yield async await int str bytes list dict set tuple len range print open read "
    "write close path file data value result error config layer blob digest manifest index "
    "the of and to a is that it on be this are was by at or an not have but all can has more "
    "static const void char struct include define ifdef endif unsigned long size_t return NULL"
).split()


@dataclass(frozen=True, slots=True)
class SyntheticImageSpec:
    """Recipe for a synthetic image; the same recipe always gives the same bytes.

    Parameters
    ----------
    layer_sizes_bytes : tuple of int
        Payload bytes (file contents before compression) of each layer, base first.
    compressibility : {"random", "text"}
        ``random``: incompressible bytes (numpy PCG64), so a pull is a byte-copy test;
        ``text``: source-code-like words, compresses to roughly 1/5 with gzip -6.
    compression : {"gzip", "zstd"}
        Layer compression (OCI ``tar+gzip`` or ``tar+zstd``).
    seed : int
        Seeds every layer (with the platform and layer index).
    platforms : tuple of str
        ``os/arch[/variant]``; more than one gives an OCI index with one manifest each.
    file_bytes : int or None
        Bytes per file (None: 32 MiB random files, 256 KiB text files). Small values give
        layers of many small files, 256 to a directory (per-file unpack cost).

    Raises
    ------
    ImageBuildError
        Empty or negative sizes, unknown compressibility/compression, malformed platform.
    """

    layer_sizes_bytes: tuple[int, ...]
    compressibility: str = "random"
    compression: str = "gzip"
    seed: int = 0
    platforms: tuple[str, ...] = ("linux/amd64",)
    file_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.file_bytes is not None and (not isinstance(self.file_bytes, int)
                                            or self.file_bytes < 1):
            raise ImageBuildError(f"file_bytes must be a positive integer or None, "
                                  f"got {self.file_bytes!r}")
        if not self.layer_sizes_bytes or any(
                not isinstance(s, int) or s < 0 for s in self.layer_sizes_bytes):
            raise ImageBuildError(f"layer_sizes_bytes must be a non-empty tuple of sizes >= 0, "
                                  f"got {self.layer_sizes_bytes!r}")
        if self.compressibility not in ("random", "text"):
            raise ImageBuildError(f"compressibility must be 'random' or 'text', "
                                  f"got {self.compressibility!r}")
        if self.compression not in ("gzip", "zstd"):
            raise ImageBuildError(f"compression must be 'gzip' or 'zstd', "
                                  f"got {self.compression!r}")
        if not self.platforms or len(set(self.platforms)) != len(self.platforms) or any(
                not _PLATFORM_RE.match(p) for p in self.platforms):
            raise ImageBuildError(f"platforms must be distinct 'os/arch[/variant]' strings, "
                                  f"got {self.platforms!r}")

    @property
    def total_payload_bytes(self) -> int:
        return sum(self.layer_sizes_bytes) * len(self.platforms)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A named fixture image.

    Attributes
    ----------
    name : str
    description : str
    source : {"synthetic", "debootstrap", "pip-target", "recompress"}
    spec : SyntheticImageSpec or None
        The recipe of a synthetic entry.
    needs_root : bool
    approx_size_bytes : int
        Rough compressed size of the image.
    base : str or None
        For ``recompress``: the catalog image whose layers are re-encoded (same tars, same
        diff_ids, zstd level 3 instead of gzip).
    """

    name: str
    description: str
    source: str
    spec: SyntheticImageSpec | None = None
    needs_root: bool = False
    approx_size_bytes: int = 0
    base: str | None = None


def _synthetic(name: str, description: str, spec: SyntheticImageSpec) -> CatalogEntry:
    ratio = 1.0 if spec.compressibility == "random" else 0.25
    return CatalogEntry(name, description, "synthetic", spec,
                        approx_size_bytes=int(spec.total_payload_bytes * ratio))


_CATALOG: dict[str, CatalogEntry] = {
    e.name: e for e in [
        _synthetic("synthetic-small", "3 small random gzip layers (3.5 MiB): for tests",
                   SyntheticImageSpec((2 * MiB, 1 * MiB, 512 * 1024), seed=1)),
        _synthetic("synthetic-64m", "3 random gzip layers, 64 MiB",
                   SyntheticImageSpec((32 * MiB, 24 * MiB, 8 * MiB), seed=64)),
        _synthetic("synthetic-256m", "3 random gzip layers, 256 MiB (default for benchmarks): "
                   "incompressible, so a pull is a byte-copy test",
                   SyntheticImageSpec((128 * MiB, 96 * MiB, 32 * MiB), seed=256)),
        _synthetic("synthetic-512m", "4 random gzip layers, 512 MiB",
                   SyntheticImageSpec((192 * MiB, 160 * MiB, 128 * MiB, 32 * MiB), seed=512)),
        _synthetic("synthetic-256m-zstd", "3 random zstd layers, 256 MiB",
                   SyntheticImageSpec((128 * MiB, 96 * MiB, 32 * MiB), compression="zstd",
                                      seed=256)),
        _synthetic("synthetic-text-64m", "2 text-like gzip -6 layers, 64 MiB payload "
                   "(~14 MiB compressed): inflate-bound pulls",
                   SyntheticImageSpec((48 * MiB, 16 * MiB), compressibility="text", seed=65)),
        _synthetic("multiarch-small", "OCI index: linux/amd64 + linux/arm64, 2 small random "
                   "gzip layers each: platform selection",
                   SyntheticImageSpec((1 * MiB, 512 * 1024), seed=2,
                                      platforms=("linux/amd64", "linux/arm64"))),
        CatalogEntry("debian-minbase", "Debian bookworm root filesystem from "
                     "`debootstrap --variant=minbase` (one gzip layer; needs root and the "
                     "machine's apt mirror)", "debootstrap", needs_root=True,
                     approx_size_bytes=60 * MiB),
        _synthetic("synthetic-small-files", "1 text-like gzip layer of 24,576 files of 2 KiB "
                   "(48 MiB) in 96 directories: per-file unpack cost",
                   SyntheticImageSpec((48 * MiB,), compressibility="text", seed=66,
                                      file_bytes=2048)),
        CatalogEntry("debian-minbase-zstd", "debian-minbase with its layer re-encoded as zstd "
                     "(level 3): the same tar and diff_id", "recompress", needs_root=True,
                     approx_size_bytes=50 * MiB, base="debian-minbase"),
        CatalogEntry("torch-cpu-zstd", "torch-cpu with its layer re-encoded as zstd (level 3): "
                     "the same tar and diff_id", "recompress", approx_size_bytes=220 * MiB,
                     base="torch-cpu"),
        CatalogEntry("torch-cpu", "`pip install --target` of the CPU torch wheel (torch==2.13.0, "
                     "--no-deps) as one gzip layer: hundreds of MB of real shared libraries",
                     "pip-target", approx_size_bytes=250 * MiB),
    ]
}
#: Read-only mapping of catalog name → :class:`CatalogEntry`.
catalog: Mapping[str, CatalogEntry] = MappingProxyType(_CATALOG)
TORCH_REQUIREMENT = "torch==2.13.0"


def list_catalog() -> tuple[CatalogEntry, ...]:
    """Return the catalog entries in a stable order."""
    return tuple(_CATALOG.values())


# --- layer writing ---------------------------------------------------------------------------
class _LayerSink:
    """File-like sink: hashes the uncompressed tar (diff_id), compresses, hashes and writes."""

    def __init__(self, out: BinaryIO, compression: str, gzip_level: int) -> None:
        self.out = out
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.written = 0
        self.pos = 0
        if compression == "gzip":
            comp = zlib.compressobj(gzip_level, zlib.DEFLATED, 31)
            self._compress: Callable[[bytes], bytes] = comp.compress
            self._flush: Callable[[], bytes] = comp.flush
        else:
            import zstandard

            zc = zstandard.ZstdCompressor(level=3).compressobj()
            self._compress = zc.compress
            self._flush = zc.flush

    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self.pos += len(data)
        self._emit(self._compress(data))
        return len(data)

    def tell(self) -> int:
        return self.pos

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.blob.update(data)
            self.written += len(data)

    def finish(self) -> tuple[str, str, int]:
        self._emit(self._flush())
        return "sha256:" + self.blob.hexdigest(), "sha256:" + self.diff.hexdigest(), self.written


class _RandomReader:
    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.remaining = rng, size

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return self.rng.bytes(n)


class _TextReader:
    def __init__(self, rng: np.random.Generator, size: int) -> None:
        import numpy as np

        self.rng, self.remaining = rng, size
        words = np.array(_WORDS, dtype=object)
        self.lines = np.array([(" " * int(rng.integers(0, 12)) + " ".join(
            words[rng.integers(0, len(words), int(rng.integers(2, 14)))]) + "\n").encode()
            for _ in range(4096)], dtype=object)
        self.mean = sum(len(x) for x in self.lines) / len(self.lines)

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        parts: list[bytes] = []
        have = 0
        while have < n:
            k = int((n - have) / self.mean) + 16
            chunk = b"".join(self.lines[self.rng.integers(0, len(self.lines), k)])
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)[:n]


def _tarinfo(name: str, size: int, *, mode: int = 0o644,
             kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.type = size, mode, 0, kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _write_synthetic_layer(blobs: Path, rng: np.random.Generator, size: int,
                           spec: SyntheticImageSpec,
                           layer_index: int) -> tuple[LayoutDescriptor, str]:
    random = spec.compressibility == "random"
    level = 0 if random else 6
    per_file = spec.file_bytes or (_RANDOM_FILE_BYTES if random else _TEXT_FILE_BYTES)
    nested = spec.file_bytes is not None
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _LayerSink(out, spec.compression, level)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                              copybufsize=MiB) as tar:
                top = f"layer{layer_index}"
                tar.addfile(_tarinfo(top, 0, mode=0o755, kind=tarfile.DIRTYPE))
                offset, j = 0, 0
                while offset < size or j == 0:
                    n = min(per_file, size - offset)
                    ext = "bin" if random else "py"
                    if nested:  # one reader for the layer: each file takes its n bytes
                        if j == 0:
                            shared = (_RandomReader(rng, size) if random
                                      else _TextReader(rng, size))
                        reader = shared
                    else:
                        reader = _RandomReader(rng, n) if random else _TextReader(rng, n)
                    folder = top
                    if nested:  # 256 files to a directory, like a source tree
                        folder = f"{top}/d{j // 256:03d}"
                        if j % 256 == 0:
                            tar.addfile(_tarinfo(folder, 0, mode=0o755, kind=tarfile.DIRTYPE))
                    tar.addfile(_tarinfo(f"{folder}/f{j:05d}.{ext}", n), reader)
                    offset += n
                    j += 1
            digest, diff_id, written = sink.finish()
        Path(tmp).replace(blobs / digest[7:])
    except BaseException:
        if Path(tmp).exists():
            Path(tmp).unlink()
        raise
    media = OCI_LAYER_GZIP if spec.compression == "gzip" else OCI_LAYER_ZSTD
    return LayoutDescriptor(media, digest, written), diff_id


def _config_bytes(platform: str, diff_ids: Iterable[str], history: str) -> bytes:
    parts = platform.split("/")
    cfg: dict[str, Any] = {
        "architecture": parts[1], "os": parts[0],
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": history}],
    }
    if len(parts) > 2:
        cfg["variant"] = parts[2]
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def _manifest_for(layout_dir: Path, platform: str, layers: list[LayoutDescriptor],
                  diff_ids: list[str], history: str) -> LayoutDescriptor:
    config = _config_bytes(platform, diff_ids, history)
    config_desc = LayoutDescriptor(OCI_CONFIG, _put_blob(layout_dir, config), len(config))
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]}
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return LayoutDescriptor(OCI_MANIFEST, _put_blob(layout_dir, data), len(data), platform=platform)


def _top_for(layout_dir: Path, manifests: list[LayoutDescriptor]) -> LayoutDescriptor:
    if len(manifests) == 1:
        m = manifests[0]
        return LayoutDescriptor(m.media_type, m.digest, m.size_bytes)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [m.to_json() for m in manifests]}
    data = json.dumps(index, indent=2, sort_keys=True).encode()
    return LayoutDescriptor(OCI_INDEX, _put_blob(layout_dir, data), len(data))


def _build_synthetic(spec: SyntheticImageSpec, layout_dir: Path, tag: str) -> ImageLayout:
    from numpy.random import default_rng

    blobs = layout_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    manifests = []
    for p_index, platform in enumerate(spec.platforms):
        layers, diff_ids = [], []
        for l_index, size in enumerate(spec.layer_sizes_bytes):
            rng = default_rng([spec.seed, p_index, l_index])
            desc, diff_id = _write_synthetic_layer(blobs, rng, size, spec, l_index)
            layers.append(desc)
            diff_ids.append(diff_id)
        manifests.append(_manifest_for(layout_dir, platform, layers, diff_ids,
                                       f"pullbench synthetic {spec.compressibility} seed "
                                       f"{spec.seed}"))
    return write_layout(layout_dir, _top_for(layout_dir, manifests), tag=tag)


# --- directory trees -------------------------------------------------------------------------
def tar_directory(directory: Path, out: BinaryIO, *, prefix: str = "") -> None:
    """Write a reproducible tar of ``directory`` to ``out``.

    Entries are in sorted depth-first order (like GNU ``tar --sort=name``), with mtime 0,
    uid/gid 0 and empty user/group names (the
    ``SOURCE_DATE_EPOCH`` / reproducible-builds convention); hard links, symlinks and device
    nodes are kept; sockets are skipped. ``prefix`` (e.g. ``"usr/local/lib/python3.11/"``) is
    prepended to every name.

    Raises
    ------
    ImageBuildError
        When ``directory`` is not a directory.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ImageBuildError(f"{root} is not a directory")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      copybufsize=MiB) as tar:
        parts = [p for p in prefix.strip("/").split("/") if p]
        for i in range(len(parts)):
            tar.addfile(_tarinfo("/".join(parts[: i + 1]), 0, mode=0o755, kind=tarfile.DIRTYPE))

        def add_tree(d: Path) -> None:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                rel = Path(e.path).relative_to(root).as_posix()
                arcname = f"{'/'.join(parts)}/{rel}" if parts else rel
                ti = tar.gettarinfo(e.path, arcname)
                if ti is None:  # socket
                    continue
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
                if ti.isreg():
                    with Path(e.path).open("rb") as f:
                        tar.addfile(ti, f)
                else:
                    tar.addfile(ti)
                if e.is_dir(follow_symlinks=False):
                    add_tree(Path(e.path))

        add_tree(root)


def _compress_file(src: Path, dst: Path, compression: str) -> None:
    if compression == "zstd":
        import zstandard

        with src.open("rb") as fin, dst.open("wb") as fout:
            zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(fin, fout)
        return
    _gzip_file(src, dst)


def image_from_directory(directory: Path, layout_dir: Path, *, compression: str = "gzip",
                         platform: str = "linux/amd64", prefix: str = "",
                         tag: str = "latest") -> ImageLayout:
    """Build a one-layer image from a directory tree into a new OCI layout ``layout_dir``.

    The tree is tarred reproducibly (:func:`tar_directory`) and compressed with pigz -6
    when present (else zlib level 6) or zstd level 3.

    Raises
    ------
    ImageBuildError
        ``directory`` missing, unknown compression, or ``layout_dir`` already exists.
    """
    if compression not in ("gzip", "zstd"):
        raise ImageBuildError(f"compression must be 'gzip' or 'zstd', got {compression!r}")
    if layout_dir.exists():
        raise ImageBuildError(f"{layout_dir} already exists; choose a new directory")
    blobs = layout_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    raw = blobs / ".layer.tar"
    packed = blobs / ".layer.tar.z"
    try:
        diff = hashlib.sha256()
        with raw.open("wb") as f:
            class _Hashing:
                def write(self, b: bytes) -> int:
                    diff.update(b)
                    return f.write(b)

                def tell(self) -> int:
                    return f.tell()

            tar_directory(directory, _Hashing(), prefix=prefix)  # type: ignore[arg-type]
        _compress_file(raw, packed, compression)
        raw.unlink()
        h = hashlib.sha256()
        with packed.open("rb") as packed_in:
            while chunk := packed_in.read(MiB):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        size = packed.stat().st_size
        Path(packed).replace(blobs / digest[7:])
    except BaseException:
        shutil.rmtree(layout_dir, ignore_errors=True)
        raise
    media = OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER_ZSTD
    layer = LayoutDescriptor(media, digest, size)
    manifest = _manifest_for(layout_dir, platform, [layer], ["sha256:" + diff.hexdigest()],
                             f"pullbench directory {Path(directory).name}")
    return write_layout(layout_dir, _top_for(layout_dir, [manifest]), tag=tag)


# --- real images -----------------------------------------------------------------------------
def apt_mirror(suite: str = "bookworm") -> str:
    """Return the Debian mirror URI this machine's apt uses for ``suite``.

    Reads ``/etc/apt/sources.list.d/*.sources`` (deb822) and ``/etc/apt/sources.list``; never a
    built-in host.

    Raises
    ------
    ImageBuildError
        When no ``deb`` source for ``suite`` is configured.
    """
    candidates: list[tuple[int, str]] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            suites = fields.get("suites", "").split()
            for uri in fields.get("uris", "").split():
                candidates.append((0 if suite in suites else 1, uri))
    lists = [Path("/etc/apt/sources.list")]
    if sources_d.is_dir():
        lists += sorted(sources_d.glob("*.list"))
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                candidates.append((0 if words[2] == suite else 1, words[1]))
    good = [uri for rank, uri in sorted(candidates, key=lambda c: c[0])
            if rank == 0 and "security" not in uri]
    if not good:
        good = [uri for rank, uri in candidates if rank == 0]
    if not good:
        raise ImageBuildError(f"no apt source for Debian {suite} in /etc/apt/sources.list(.d); "
                              "add one, or pass the mirror explicitly")
    return good[0]


def _build_debian_minbase(layout_dir: Path, work: Path, mirror: str, tag: str) -> ImageLayout:
    if os.geteuid() != 0:
        raise ImageBuildError("debian-minbase needs root (debootstrap creates device nodes and "
                              "chroots): run as root, e.g. `sudo pullbench image build "
                              "debian-minbase`")
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debian-minbase needs debootstrap: apt-get install debootstrap")
    rootfs = work / "rootfs"
    logger.info("debootstrap --variant=minbase bookworm %s %s", rootfs, mirror)
    proc = subprocess.run([debootstrap, "--variant=minbase", "bookworm", str(rootfs), mirror],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise ImageBuildError(f"debootstrap failed (exit {proc.returncode}) with mirror "
                              f"{mirror}:\n{tail}")
    try:
        return image_from_directory(rootfs, layout_dir, tag=tag)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def image_from_pip(requirement: str, layout_dir: Path, *, pip_args: Iterable[str] = (),
                   prefix: str = "usr/local/lib/python3.11/site-packages",
                   tag: str = "latest") -> ImageLayout:
    """Build a one-layer image of ``pip install --target DIR --no-deps REQUIREMENT``.

    The tree pip writes (wheels unpacked: shared libraries, Python sources, metadata) becomes
    one reproducibly tarred gzip layer under ``prefix``, like a Python ML image's main layer.
    pip runs with the interpreter's own configuration (index, ``--find-links``) plus
    ``pip_args``.

    Raises
    ------
    ImageBuildError
        pip failed (the message carries its output and names the requirement).
    """
    with tempfile.TemporaryDirectory(prefix="pullbench-pip-") as tmp:
        target = Path(tmp) / "site-packages"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(target), *pip_args, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageBuildError(
                f"`pip {' '.join(cmd[3:])}` failed (exit {proc.returncode}); pip must be able "
                f"to find a wheel for {requirement} (its index or --find-links):\n"
                f"{(proc.stdout + proc.stderr)[-1500:]}")
        return image_from_directory(target, layout_dir, prefix=prefix, tag=tag)


def _spec_recipe(spec: SyntheticImageSpec) -> dict[str, Any]:
    out = asdict(spec)
    if out.get("file_bytes") is None:  # recipes from before the field keep their cache keys
        out.pop("file_bytes", None)
    return out


def recompress_image(layout: ImageLayout, layout_dir: Path, *, compression: str = "zstd",
                     tag: str = "latest") -> ImageLayout:
    """Re-encode every gzip layer of a single-manifest image (zstd level 3 by default).

    The tars, hence the diff_ids and the config, are unchanged; the manifest names the new
    blobs with the ``tar+zstd`` (or ``tar+gzip``) media type. What a registry serving both
    encodings of one image offers, so decompression can be compared on the same content.

    Raises
    ------
    ImageBuildError
        An index (several platforms), a layer that is not gzip, or ``layout_dir`` exists.
    """
    if compression not in ("gzip", "zstd"):
        raise ImageBuildError(f"compression must be 'gzip' or 'zstd', got {compression!r}")
    if layout.is_index:
        raise ImageBuildError(f"{layout.path} is a multi-platform index; recompress one "
                              "platform's image")
    if layout_dir.exists():
        raise ImageBuildError(f"{layout_dir} already exists; choose a new directory")
    blobs = layout_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifest = layout.read_json(layout.manifest_digest)
    config = LayoutDescriptor.from_json(manifest["config"])
    shutil.copyfile(layout.blob_path(config.digest), blobs / config.digest[7:])
    layers = []
    for obj in manifest.get("layers", []):
        d = LayoutDescriptor.from_json(obj)
        if d.media_type not in (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP):
            raise ImageBuildError(f"layer {d.digest} of {layout.path} is {d.media_type}, "
                                  "not gzip; only gzip layers are re-encoded")
        raw, packed = blobs / ".layer.tar", blobs / ".layer.packed"
        inflate = zlib.decompressobj(31)
        with layout.blob_path(d.digest).open("rb") as fin, raw.open("wb") as fout:
            while chunk := fin.read(MiB):
                fout.write(inflate.decompress(chunk))
            fout.write(inflate.flush())
        _compress_file(raw, packed, compression)
        raw.unlink()
        h = hashlib.sha256()
        with packed.open("rb") as fin:
            while chunk := fin.read(MiB):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        size = packed.stat().st_size
        packed.replace(blobs / digest[7:])
        layers.append(LayoutDescriptor(OCI_LAYER_ZSTD if compression == "zstd" else OCI_LAYER_GZIP,
                                       digest, size))
    new = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(),
           "layers": [x.to_json() for x in layers]}
    data = json.dumps(new, indent=2, sort_keys=True).encode()
    top = LayoutDescriptor(OCI_MANIFEST, _put_blob(layout_dir, data), len(data))
    return write_layout(layout_dir, top, tag=tag)


def _recipe(entry_or_spec: CatalogEntry | SyntheticImageSpec) -> tuple[str, dict[str, Any]]:
    if isinstance(entry_or_spec, SyntheticImageSpec):
        return "synthetic", {"source": "synthetic", "spec": _spec_recipe(entry_or_spec)}
    e = entry_or_spec
    if e.source == "synthetic":
        assert e.spec is not None
        return e.name, {"source": "synthetic", "spec": _spec_recipe(e.spec)}
    if e.source == "recompress":
        assert e.base is not None
        return e.name, {"source": "recompress", "compression": "zstd", "level": 3,
                        "base": _recipe(_CATALOG[e.base])[1]}
    if e.source == "debootstrap":
        return e.name, {"source": "debootstrap", "suite": "bookworm", "variant": "minbase",
                        "mirror": apt_mirror("bookworm")}
    return e.name, {"source": "pip-target", "requirement": TORCH_REQUIREMENT}


def build_image(name_or_spec: str | SyntheticImageSpec, *,
                cache_dir: Path | None = None) -> ImageLayout:
    """Build (or fetch from the cache) a catalog image or a synthetic image.

    Parameters
    ----------
    name_or_spec : str or SyntheticImageSpec
        A catalog name (see :func:`list_catalog`) or a synthetic recipe.
    cache_dir : Path or None
        Where built layouts are kept, keyed by a hash of the recipe (default
        :func:`default_cache_dir`). A finished build is renamed into place atomically, so an
        interrupted build leaves nothing half-written behind.

    Returns
    -------
    ImageLayout

    Raises
    ------
    ImageBuildError
        Unknown catalog name (the message lists the names), missing ``debootstrap``, no root
        for ``debian-minbase``, pip failure for ``torch-cpu``.
    """
    if isinstance(name_or_spec, str):
        entry = _CATALOG.get(name_or_spec)
        if entry is None:
            raise ImageBuildError(f"unknown catalog image {name_or_spec!r}; known: "
                                  f"{', '.join(_CATALOG)} (see `pullbench image list`)")
        label, recipe = _recipe(entry)
    else:
        entry = None
        label, recipe = _recipe(name_or_spec)
    recipe["builder"] = BUILDER_VERSION
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"{label}-{key}"
    if (final / "index.json").is_file():
        layout = ImageLayout(final, label)
        if layout.blob_path(layout.manifest_digest).is_file():
            return layout
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{label}-", dir=root))
    try:
        layout_dir = work / "layout"
        tag = label if entry is not None else "latest"
        if entry is None or entry.source == "synthetic":
            spec = name_or_spec if entry is None else entry.spec
            assert isinstance(spec, SyntheticImageSpec)
            _build_synthetic(spec, layout_dir, tag)
        elif entry.source == "recompress":
            assert entry.base is not None
            recompress_image(build_image(entry.base, cache_dir=cache_dir), layout_dir, tag=tag)
        elif entry.source == "debootstrap":
            _build_debian_minbase(layout_dir, work, recipe["mirror"], tag)
        else:
            image_from_pip(TORCH_REQUIREMENT, layout_dir, tag=tag)
        try:
            Path(layout_dir).replace(final)
        except OSError:
            if not (final / "index.json").is_file():  # lost a race? otherwise a real error
                raise
        logger.info("built %s into %s", label, final)
        return ImageLayout(final, label)
    finally:
        shutil.rmtree(work, ignore_errors=True)
