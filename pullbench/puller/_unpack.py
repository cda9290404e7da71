"""Unpack: layer tar streams → a root filesystem directory, with OCI layer semantics.

What a runtime's applier does after the download: containerd's ``apply`` (naive diff, as on
its ``native`` snapshotter; containerd/containerd:pkg/archive/tar.go) and moby's
``UnpackLayer`` (moby/moby:pkg/archive/diff.go). Layers are applied in manifest order, base
first, on top of one directory:

* regular files, directories, symlinks (their targets kept verbatim: an absolute target is
  meant inside the container), hard links, modes (setuid, setgid and sticky bits too), mtimes;
* ownership (numeric uid/gid, ``lchown``), ``SCHILY.xattr.*`` extended attributes, and
  character/block devices and FIFOs only when *privileged* (root; the default when running as
  root). Unprivileged, files belong to the running user, xattrs are not set, and device nodes
  and FIFOs are skipped and counted (``special_skipped``);
* whiteouts (image-spec ``layer.md``): ``.wh.NAME`` deletes NAME from the lower layers,
  ``.wh..wh..opq`` empties its directory of everything the lower layers put there; both only
  act on lower layers (what this layer itself created stays, as the spec says), and other
  ``.wh..wh.*`` names (aufs metadata) are ignored;
* a member replaces what is there (a directory over a directory keeps the contents and takes
  the new metadata; anything else is removed first), as containerd does;
* directory metadata is applied after the layer's contents (deepest first), so a read-only
  directory can still receive its files.

Hostile layers: nothing is ever created, linked or deleted outside the root, and each case
ends in a clear error naming the layer and the member (:class:`~pullbench.UnsafeLayerError`,
:class:`~pullbench.CorruptLayerError`, :class:`~pullbench.DecompressionError`,
:class:`~pullbench.DecompressionBomb`, :class:`~pullbench.DiffIdMismatch`); the partial root
is then removed unless ``keep_partial=True``.

Where Python's ``tarfile`` extraction filters fit, and where OCI needs more
-----------------------------------------------------------------------------
* Hard links: ``tarfile.data_filter`` is applied to every hard link; it rejects absolute
  link names and any link whose target (resolved with ``realpath``) lies outside the root.
* Names: the filters strip a leading ``/`` and accept ``a/../b``; pullbench refuses absolute
  names and every ``..`` component outright, since no well-formed layer has them.
* Parents through symlinks: like ``data_filter``, pullbench resolves a member's parent with
  ``realpath`` and refuses one that lands outside the root (``a -> /etc`` then ``a/passwd``).
  An in-root symlink (``bin -> usr/bin`` then ``bin/ls``) is followed, as containerd's
  ``fs.RootPath`` does. containerd and moby (inside a chroot) would also follow an *absolute*
  symlink, re-rooted; pullbench refuses it — stricter, never escaping.
* Modes and ownership: both filters clear setuid/setgid/sticky and group/other write bits
  ('data' also ownership); OCI root filesystems need them (``/tmp`` is 1777, ``su`` is 4755),
  so modes are applied as stored.
* Symlinks: 'data' refuses absolute or out-of-root symlink targets; images are full of them
  (``/etc/alternatives``, ``/var/run -> /run``), so targets are kept verbatim and simply never
  followed while extracting (files are opened with ``O_NOFOLLOW``; a member over a symlink
  replaces the symlink).
* Special files: 'data' refuses devices; OCI images carry ``/dev`` nodes, created when
  privileged and skipped otherwise.
* Whiteouts and opaque directories: no tarfile notion at all.
* Corrupt headers: ``tarfile`` treats a bad header after the first member as the end of the
  archive (``TarFile.next``), which would silently truncate the root; pullbench raises
  :class:`~pullbench.CorruptLayerError` naming the previous member and the offset.
"""

from __future__ import annotations

import json
import logging
import os
import platform as _platform
import shutil
import stat
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._errors import (
    CorruptLayerError,
    DecompressionError,
    LayerError,
    StrategyError,
    UnsafeLayerError,
)
from ._decompress import DecompressionLimits, Decompressor, LayerReader, open_layer

__all__ = [
    "LayerUnpackResult",
    "RootfsUnpacker",
    "UnpackResult",
    "image_layers",
    "unpack_image",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20
_WH_PREFIX = ".wh."
_WH_META_PREFIX = ".wh..wh."
_WH_OPAQUE = ".wh..wh..opq"
_COPY_BYTES = MiB
#: tarfile's stream reader re-slices its whole read-ahead buffer on every header and data read
#: (``_Stream.__read``): with 1 MiB it spent ~1 MiB of copying per small file (measured: 5,000
#: 2 KiB files 5x slower than with 64 KiB, which costs large files nothing measurable).
_TAR_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LayerUnpackResult:
    """Probes of one applied layer (the decompress and unpack stages).

    Attributes
    ----------
    digest : str or None
        The layer's compressed digest (as in the manifest).
    media_type : str
    decompressor : str
        The strategy that ran (``zlib``, ``isal``, ``zlib-ng``, ``unpigz``; ``zstandard`` for
        zstd; ``none`` for plain tar).
    diff_id : str
        sha256 of the uncompressed tar (checked against the config when it was given).
    compressed_bytes, uncompressed_bytes : int
    duration_s : float
        Wall time of the whole layer (decompress + hash + unpack).
    cpu_s : float
        CPU of the applying thread plus an external decompressor's.
    decompress_s, decompress_cpu_s : float
        Wall time and CPU spent in the decompressor.
    diff_hash_s : float
        Wall time hashing the uncompressed bytes.
    unpack_s, unpack_cpu_s : float
        The rest: tar parsing and file-system work (``duration_s - decompress_s -
        diff_hash_s``; CPU: the thread's CPU less in-process decompression and hashing, each
        measured with ``thread_time``).
    files, file_bytes : int
        Regular files written and their bytes.
    dirs_created, symlinks, hardlinks : int
    whiteouts, opaque_dirs : int
        Whiteouts applied, opaque directories emptied.
    removed : int
        Paths of lower layers deleted (by whiteouts, opaque dirs, or being replaced).
    special_created, special_skipped : int
        Device nodes and FIFOs created (privileged) or skipped (unprivileged).
    xattrs : int
        Extended attributes set.
    fsyncs : int
        ``fsync`` calls (only with ``fsync=True``; containerd and moby do not fsync each file).
    max_ratio : float or None
        The ratio cap that was in force.
    max_uncompressed_bytes : int or None
        The absolute cap that was in force.
    """

    digest: str | None
    media_type: str
    decompressor: str
    diff_id: str
    compressed_bytes: int
    uncompressed_bytes: int
    duration_s: float
    cpu_s: float
    decompress_s: float
    decompress_cpu_s: float
    diff_hash_s: float
    unpack_s: float
    unpack_cpu_s: float
    files: int
    file_bytes: int
    dirs_created: int
    symlinks: int
    hardlinks: int
    whiteouts: int
    opaque_dirs: int
    removed: int
    special_created: int
    special_skipped: int
    xattrs: int
    fsyncs: int
    max_ratio: float | None
    max_uncompressed_bytes: int | None


@dataclass(frozen=True, slots=True)
class UnpackResult:
    """An unpacked image: its root and the per-layer probes.

    Attributes
    ----------
    root : str
    layers : tuple of LayerUnpackResult
        Base first.
    duration_s : float
        Wall time of the whole unpack.
    """

    root: str
    layers: tuple[LayerUnpackResult, ...]
    duration_s: float

    @property
    def uncompressed_bytes(self) -> int:
        return sum(layer.uncompressed_bytes for layer in self.layers)

    @property
    def files(self) -> int:
        return sum(layer.files for layer in self.layers)


class _BadHeader(Exception):
    """Raised from inside tarfile for a damaged header (tarfile would treat it as the end)."""


# tarfile's header errors are not in its typeshed stubs (private names of the module)
_InvalidHeader: type[Exception] = getattr(tarfile, "InvalidHeaderError")  # noqa: B009
_TruncatedHeader: type[Exception] = getattr(tarfile, "TruncatedHeaderError")  # noqa: B009


class _StrictTarInfo(tarfile.TarInfo):
    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except _InvalidHeader as exc:  # bad checksum, bad number field
            raise _BadHeader(f"invalid tar header at offset {tarfile_.offset}: {exc}") from None
        except _TruncatedHeader:
            raise _BadHeader(f"truncated tar header at offset {tarfile_.offset}") from None


@dataclass(slots=True)
class _Counts:
    files: int = 0
    file_bytes: int = 0
    dirs_created: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    removed: int = 0
    special_created: int = 0
    special_skipped: int = 0
    xattrs: int = 0
    fsyncs: int = 0


def _split_name(name: str) -> list[str] | str:
    """Path components of a member name, or the reason it is refused."""
    if name.startswith("/"):
        return "has an absolute name"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "has a '..' component in its name"
    return parts


class RootfsUnpacker:
    """Apply layers, in order, to one root filesystem directory.

    Parameters
    ----------
    root : path
        The root filesystem directory: created if missing; an existing one must be empty.
    decompressor : str or Decompressor
        gzip strategy (see :func:`~pullbench.list_decompressors`); default ``zlib``.
    limits : DecompressionLimits, optional
        Bomb caps. When ``max_uncompressed_bytes`` is None, each layer is capped at the free
        space of the root's file system when it starts (``statvfs`` ``f_bavail``), so a layer
        can never fill the disk.
    privileged : bool, optional
        Apply ownership, xattrs, device nodes and FIFOs (needs root). Default: whether the
        process runs as root.
    keep_partial : bool
        Keep the partial root after a failed layer (default: remove it).
    fsync : bool
        ``fsync`` every regular file (default False, like containerd and moby).

    Raises
    ------
    StrategyError
        ``root`` exists and is not an empty directory, or ``privileged=True`` without root.
    """

    def __init__(self, root: str | os.PathLike[str], *,
                 decompressor: str | Decompressor = "zlib",
                 limits: DecompressionLimits | None = None, privileged: bool | None = None,
                 keep_partial: bool = False, fsync: bool = False) -> None:
        path = Path(root)
        if path.exists() or path.is_symlink():
            if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
                raise StrategyError(f"unpack root {path} exists and is not an empty directory; "
                                    "give a new path (it is created) or empty it")
        else:
            path.mkdir(parents=True)
        is_root = os.geteuid() == 0
        if privileged is None:
            privileged = is_root
        elif privileged and not is_root:
            raise StrategyError("privileged=True (ownership, device nodes) needs root; run as "
                                "root or pass privileged=False")
        self.root = os.path.realpath(path)
        self.decompressor = decompressor
        self.limits = limits or DecompressionLimits()
        self.privileged = privileged
        self.keep_partial = keep_partial
        self.fsync = fsync
        self.results: list[LayerUnpackResult] = []
        self._failed = False

    # --- public ---------------------------------------------------------------------------
    def apply(self, source: str | os.PathLike[str] | IO[bytes], media_type: str, *,
              digest: str | None = None, diff_id: str | None = None,
              compressed_size: int | None = None) -> LayerUnpackResult:
        """Decompress and apply one layer on top of what is in the root.

        Parameters
        ----------
        source : path or binary file object
            The stored blob, or a stream of it (e.g. fed from the socket while downloading).
        media_type : str
            The layer's media type (selects the codec).
        digest : str, optional
            The layer's digest (for messages and the result).
        diff_id : str, optional
            The config's ``rootfs.diff_ids`` entry; checked after the layer is applied.
        compressed_size : int, optional
            The blob size, for the ratio cap of an external decompressor reading a file.

        Returns
        -------
        LayerUnpackResult

        Raises
        ------
        UnsafeLayerError, CorruptLayerError, DecompressionError, DecompressionBomb,
        DiffIdMismatch
            The layer cannot be applied; the root is removed unless ``keep_partial``.
        StrategyError
            An earlier layer failed (its root is gone), or a bad decompressor name.
        """
        if self._failed:
            raise StrategyError(f"an earlier layer failed to unpack into {self.root}; "
                                "start a new RootfsUnpacker")
        try:
            with _opened(source) as (stream, size):
                result = self._apply(stream, media_type, digest, diff_id,
                                     compressed_size if compressed_size is not None else size)
        except BaseException:
            self.abort()
            raise
        self.results.append(result)
        return result

    def abort(self) -> None:
        """Give up: remove the (partial) root unless ``keep_partial``. Idempotent."""
        self._failed = True
        if not self.keep_partial and os.path.lexists(self.root):
            _make_removable(self.root)
            shutil.rmtree(self.root, ignore_errors=True)

    # --- one layer ------------------------------------------------------------------------
    def _limits_now(self) -> DecompressionLimits:
        if self.limits.max_uncompressed_bytes is not None:
            return self.limits
        st = os.statvfs(self.root)
        return DecompressionLimits(max_ratio=self.limits.max_ratio,
                                   max_uncompressed_bytes=st.f_bavail * st.f_frsize,
                                   ratio_after_bytes=self.limits.ratio_after_bytes)

    def _apply(self, source: IO[bytes], media_type: str, digest: str | None,
               diff_id: str | None, size: int | None) -> LayerUnpackResult:
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        reader = open_layer(source, media_type, decompressor=self.decompressor,
                            limits=self._limits_now(), layer=digest, compressed_size=size)
        counts = _Counts()
        try:
            _LayerApplier(self, reader, digest, media_type, counts).run()
            actual = reader.verify_diff_id(diff_id)
        finally:
            reader.close()
        wall = (time.perf_counter_ns() - t0) / 1e9
        thread_cpu = (time.thread_time_ns() - c0) / 1e9
        external = reader.decompressor_name == "unpigz"
        in_process_decompress = 0.0 if external else reader.decompress_cpu_s
        return LayerUnpackResult(
            digest=digest, media_type=media_type, decompressor=reader.decompressor_name,
            diff_id=actual, compressed_bytes=reader.compressed_bytes,
            uncompressed_bytes=reader.uncompressed_bytes, duration_s=wall,
            cpu_s=thread_cpu + (reader.decompress_cpu_s if external else 0.0),
            decompress_s=reader.decompress_s, decompress_cpu_s=reader.decompress_cpu_s,
            diff_hash_s=reader.diff_hash_s,
            unpack_s=max(wall - reader.decompress_s - reader.diff_hash_s, 0.0),
            unpack_cpu_s=max(thread_cpu - in_process_decompress - reader.diff_hash_cpu_s, 0.0),
            max_ratio=reader.max_ratio, max_uncompressed_bytes=reader.max_uncompressed_bytes,
            **{name: getattr(counts, name) for name in _Counts.__dataclass_fields__})


class _LayerApplier:
    """The member loop of one layer (state: paths this layer created, deferred dir metadata)."""

    def __init__(self, owner: RootfsUnpacker, reader: LayerReader, digest: str | None,
                 media_type: str, counts: _Counts) -> None:
        self.root = owner.root
        self.privileged = owner.privileged
        self.fsync = owner.fsync
        self.reader = reader
        self.digest = digest
        self.media_type = media_type
        self.counts = counts
        self.created: set[str] = set()
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.last: str | None = None
        self._buf = bytearray(_COPY_BYTES)

    # --- errors ---------------------------------------------------------------------------
    def _where(self, member: str | None) -> str:
        return f"layer {self.digest or '?'}" + (f", member {member!r}" if member else "")

    def unsafe(self, member: str, why: str) -> UnsafeLayerError:
        return UnsafeLayerError(f"{self._where(member)} {why}; refusing the layer (nothing was "
                                "written outside the root)", layer=self.digest, member=member,
                                media_type=self.media_type)

    def corrupt(self, member: str | None, why: str) -> CorruptLayerError:
        return CorruptLayerError(f"{self._where(member)}: {why}; the layer is damaged — pull it "
                                 "again, or rebuild the image", layer=self.digest,
                                 member=member, media_type=self.media_type)

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            tar = tarfile.open(fileobj=self.reader, mode="r|",
                               tarinfo=_StrictTarInfo, bufsize=_TAR_READ_BYTES)
        except _BadHeader as exc:
            raise self.corrupt(None, f"{exc} (the first header)") from None
        except tarfile.ReadError as exc:
            raise self.corrupt(None, f"not a tar stream ({exc})") from None
        with tar:
            while True:
                try:
                    member = tar.next()
                except _BadHeader as exc:
                    raise self.corrupt(self.last, f"{exc}, after this member") from None
                except tarfile.ReadError as exc:
                    raise self.corrupt(self.last, f"{exc}, after this member") from None
                if member is None:
                    break
                tar.members.clear()  # type: ignore[attr-defined]  # stream mode: no need
                self.last = member.name
                try:
                    self.member(tar, member)
                except tarfile.ReadError as exc:
                    raise self.corrupt(member.name, f"its data is cut short ({exc})") from None
                except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
                    raise self.corrupt(member.name, f"it does not fit the tree ({exc})") from None
                except LayerError:
                    raise
                except OSError as exc:
                    raise LayerError(f"{self._where(member.name)}: {exc}", layer=self.digest,
                                     member=member.name, media_type=self.media_type) from exc
        self.finish_dirs()

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _split_name(m.name)
        if isinstance(parts, str):
            raise self.unsafe(m.name, parts)
        if not parts:
            return  # "./": the root itself
        base = parts[-1]
        parent = self.parent_dir(parts, m.name)
        if base.startswith(_WH_PREFIX):
            self.whiteout(parent, base, m.name)
            return
        target = os.path.join(parent, base)
        if m.isdir():
            self.directory(target, m)
        elif m.isreg():
            self.regular(tar, target, m)
        elif m.issym():
            self.clear(target)
            os.symlink(m.linkname, target)
            self.counts.symlinks += 1
            self.metadata(target, m, symlink=True)
        elif m.islnk():
            self.hardlink(target, m)
        elif m.ischr() or m.isblk() or m.isfifo():
            self.special(target, m)
        else:
            logger.info("%s: skipping member of tar type %r", self._where(m.name), m.type)
            return
        self.created.add(target)

    def parent_dir(self, parts: Sequence[str], member: str) -> str:
        lexical = os.path.join(self.root, *parts[:-1])
        real = os.path.realpath(lexical)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise self.unsafe(member, f"goes through a symlink that leads outside the root "
                              f"({'/'.join(parts[:-1])} resolves to {real})")
        missing = []
        existing = real
        while not os.path.lexists(existing):
            missing.append(existing)
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise self.corrupt(member, f"its parent {'/'.join(parts[:-1])} is not a directory")
        for path in reversed(missing):  # implicit parents, as containerd's MkdirAll
            os.mkdir(path, 0o755)
            self.counts.dirs_created += 1
        return real

    # --- member kinds ---------------------------------------------------------------------
    def clear(self, target: str, *, keep_dir: bool = False) -> bool:
        """Remove what is at ``target`` (never following a symlink); True if a dir was kept."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            _make_removable(target)
            shutil.rmtree(target)
        else:
            os.unlink(target)
        if target not in self.created:
            self.counts.removed += 1
        return False

    def directory(self, target: str, m: tarfile.TarInfo) -> None:
        if not self.clear(target, keep_dir=True):
            os.mkdir(target, 0o700)
            self.counts.dirs_created += 1
        self.dirs.append((target, m))

    def regular(self, tar: tarfile.TarFile, target: str, m: tarfile.TarInfo) -> None:
        self.clear(target)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            src = tar.extractfile(m)
            if src is not None and m.size:
                view = memoryview(self._buf)
                while n := src.readinto(view):  # type: ignore[attr-defined]
                    done = 0
                    while done < n:
                        done += os.write(fd, view[done:n])
                    self.counts.file_bytes += n
            if self.fsync:
                os.fsync(fd)
                self.counts.fsyncs += 1
            self.metadata(fd, m)
        finally:
            os.close(fd)
        self.counts.files += 1

    def hardlink(self, target: str, m: tarfile.TarInfo) -> None:
        parts = _split_name(m.linkname)
        if isinstance(parts, str) or not parts:
            raise self.unsafe(m.name, f"is a hard link to {m.linkname!r}, which "
                              f"{parts if isinstance(parts, str) else 'is the root'}")
        try:
            tarfile.data_filter(m, self.root)
        except tarfile.FilterError as exc:
            raise self.unsafe(m.name, f"is a hard link that leaves the root ({exc})") from None
        source = os.path.join(self.parent_dir(parts, m.name), parts[-1])
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise self.corrupt(m.name, f"it is a hard link to {m.linkname!r}, which does not "
                               "exist") from None
        if stat.S_ISDIR(st.st_mode):
            raise self.corrupt(m.name, f"it is a hard link to the directory {m.linkname!r}")
        if source == target:
            return
        self.clear(target)
        os.link(source, target, follow_symlinks=False)
        self.counts.hardlinks += 1
        # the link's header metadata applies to the shared inode, as containerd's
        # handleLChmod and moby's createTarFile do (no chmod through a linked symlink)
        self.metadata(target, m, symlink=stat.S_ISLNK(st.st_mode))

    def special(self, target: str, m: tarfile.TarInfo) -> None:
        if not self.privileged:
            self.counts.special_skipped += 1
            logger.debug("%s: device node/FIFO skipped (not privileged)", self._where(m.name))
            return
        self.clear(target)
        if m.isfifo():
            os.mkfifo(target, 0o600)
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        self.counts.special_created += 1
        self.metadata(target, m)

    def whiteout(self, parent: str, base: str, member: str) -> None:
        if base == _WH_OPAQUE:
            with os.scandir(parent) as it:
                for entry in list(it):
                    if entry.path not in self.created:
                        self.clear(entry.path)
            self.counts.opaque_dirs += 1
            return
        if base.startswith(_WH_META_PREFIX):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        victim = base[len(_WH_PREFIX):]
        if victim in ("", ".", ".."):
            raise self.unsafe(member, f"is a whiteout naming {victim or '(nothing)'!r}")
        path = os.path.join(parent, victim)
        if path in self.created:
            return  # whiteouts only hide lower layers (image-spec layer.md)
        if os.path.lexists(path):
            self.clear(path)
        self.counts.whiteouts += 1

    # --- metadata ---------------------------------------------------------------------------
    def metadata(self, where: str | int, m: tarfile.TarInfo, *, symlink: bool = False) -> None:
        follow = not symlink
        if self.privileged:
            if isinstance(where, int):
                os.fchown(where, m.uid, m.gid)
            else:
                os.chown(where, m.uid, m.gid, follow_symlinks=follow)
            for key, value in m.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    try:
                        os.setxattr(where, key[len("SCHILY.xattr."):],
                                    value.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=follow)
                        self.counts.xattrs += 1
                    except OSError as exc:
                        logger.debug("%s: xattr %s not set: %s", self._where(m.name), key, exc)
        if not symlink:
            os.chmod(where, m.mode & 0o7777)
        mtime_ns = int(m.mtime * 1e9)
        os.utime(where, ns=(mtime_ns, mtime_ns), follow_symlinks=follow)

    def finish_dirs(self) -> None:
        for target, m in sorted(self.dirs, key=lambda d: d[0], reverse=True):
            self.metadata(target, m)


@contextmanager
def _opened(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[tuple[IO[bytes], int | None]]:
    if isinstance(source, (str, os.PathLike)):
        with Path(source).open("rb") as f:
            yield f, os.fstat(f.fileno()).st_size
    else:
        yield source, None


def _make_removable(path: str) -> None:
    """Give the owner rwx on every directory under ``path`` (an unpacked 0555 dir blocks rmtree
    for a non-root user)."""
    if os.geteuid() == 0:
        return
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


# --- images ----------------------------------------------------------------------------------
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def image_layers(layout: str | os.PathLike[str], *,
                 platform: str | None = None) -> list[tuple[str, str, int, str]]:
    """The layers of the image in an OCI image layout (a pull's content store), base first.

    Parameters
    ----------
    layout : path
        A directory with ``index.json`` and ``blobs/`` (what :func:`~pullbench.pull` writes).
    platform : str, optional
        ``os/arch[/variant]`` to pick from an index (default: linux and this machine's
        architecture).

    Returns
    -------
    list of (media_type, digest, size_bytes, diff_id)

    Raises
    ------
    LayerError
        Not a layout, no manifest for the platform, or layers and diff_ids that disagree.
    """
    root = Path(layout)

    def blob(digest: str) -> Any:
        algorithm, _, encoded = digest.partition(":")
        try:
            return json.loads((root / "blobs" / algorithm / encoded).read_bytes())
        except (OSError, ValueError) as exc:
            raise LayerError(f"{root}: cannot read blob {digest} ({exc})") from exc

    try:
        top = json.loads((root / "index.json").read_text())["manifests"][0]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise LayerError(f"{root} is not an OCI image layout with a manifest ({exc}); pull "
                         "the image there first") from exc
    if top.get("mediaType") in _INDEX_TYPES:
        want = platform or f"linux/{_ARCH.get(_platform.machine(), _platform.machine())}"
        chosen = None
        for entry in blob(top["digest"]).get("manifests", []):
            p = entry.get("platform") or {}
            name = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant"))
                            if x)
            if name == want or name.rsplit("/", 1)[0] == want:
                chosen = entry
                break
        if chosen is None:
            raise LayerError(f"{root}: the index has no manifest for {want}; pass platform=")
        top = chosen
    manifest = blob(top["digest"])
    diff_ids = blob(manifest["config"]["digest"]).get("rootfs", {}).get("diff_ids", [])
    layers = manifest.get("layers", [])
    if len(diff_ids) != len(layers):
        raise LayerError(f"{root}: the manifest lists {len(layers)} layers but the config "
                         f"{len(diff_ids)} diff_ids; the image is inconsistent")
    return [(d["mediaType"], d["digest"], int(d.get("size", 0)), diff_id)
            for d, diff_id in zip(layers, diff_ids, strict=True)]


def unpack_image(layout: str | os.PathLike[str], root: str | os.PathLike[str], *,
                 decompressor: str | Decompressor = "zlib",
                 limits: DecompressionLimits | None = None, privileged: bool | None = None,
                 keep_partial: bool = False, fsync: bool = False,
                 platform: str | None = None) -> UnpackResult:
    """Unpack every layer of an image in an OCI layout into ``root``, base first.

    Each layer's uncompressed digest is checked against the config's ``rootfs.diff_ids``.
    Parameters are those of :class:`RootfsUnpacker` and :func:`image_layers`.

    Returns
    -------
    UnpackResult

    Raises
    ------
    LayerError and its subclasses
        See :meth:`RootfsUnpacker.apply`; the root is removed unless ``keep_partial``.
    """
    t0 = time.perf_counter_ns()
    layers = image_layers(layout, platform=platform)
    unpacker = RootfsUnpacker(root, decompressor=decompressor, limits=limits,
                              privileged=privileged, keep_partial=keep_partial, fsync=fsync)
    for media_type, digest, _size, diff_id in layers:
        algorithm, _, encoded = digest.partition(":")
        path = Path(layout) / "blobs" / algorithm / encoded
        if not path.is_file():
            unpacker.abort()
            raise DecompressionError(f"layer {digest} is not in {layout}; pull the image again",
                                     layer=digest, media_type=media_type)
        unpacker.apply(path, media_type, digest=digest, diff_id=diff_id)
    return UnpackResult(unpacker.root, tuple(unpacker.results),
                        (time.perf_counter_ns() - t0) / 1e9)
