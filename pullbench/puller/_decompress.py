"""Layer decompression: media type → codec → a decompressor strategy, with caps and a diff_id.

A layer blob is a tar stream, optionally compressed (OCI image-spec ``layer.md``; Docker's
``application/vnd.docker.image.rootfs.diff.tar.gzip``). :func:`open_layer` returns a
:class:`LayerReader`: a readable binary stream of the *uncompressed* tar that

* decompresses with the chosen strategy (:func:`list_decompressors`): gzip through Python's
  ``zlib``, ``isal`` (python-isal: Intel ISA-L's igzip), ``zlib-ng`` (the PyPI binding), or an
  external ``unpigz``/``pigz -d`` process fed by a pipe (what containerd and moby do when the
  binary is installed: containerd/containerd:archive/compression/compression.go,
  moby/moby:pkg/archive/archive.go); zstd always through ``zstandard`` (containerd and moby
  decompress zstd in-process too); plain tar is passed through;
* hashes the uncompressed bytes (the layer's diff_id, checked against the image config's
  ``rootfs.diff_ids`` by :meth:`LayerReader.verify_diff_id`);
* enforces decompression-bomb caps (:class:`DecompressionLimits`: a ratio and an absolute size),
  raising :class:`~pullbench.DecompressionBomb` the moment one trips, with bounded memory (gzip
  output is produced in bounded steps with ``max_length``; zstd input is fed in steps sized from
  the ratio seen so far);
* detects truncated or corrupt streams (:class:`~pullbench.DecompressionError` naming the layer),
  which ``zstandard``'s stream reader alone would not: it ends quietly at a cut-off frame;
* counts compressed and uncompressed bytes and the wall time and CPU spent decompressing and
  hashing, for the decompress stage of the pull's probes.

Concatenated gzip members and zstd frames are read in sequence (as Go's ``gzip.Reader`` in its
default multistream mode and ``zstd -d`` do); bytes after the last member that are not another
member are an error.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any

from .._errors import DecompressionBomb, DecompressionError, DiffIdMismatch, StrategyError

__all__ = [
    "LAYER_MEDIA_TYPES",
    "DecompressionLimits",
    "Decompressor",
    "LayerReader",
    "codec_of",
    "get_decompressor",
    "list_decompressors",
    "open_layer",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20
#: Uncompressed bytes one gzip step may produce (``max_length``), and the zstd output target.
_STEP_OUT = 4 * MiB
_READ_IN = 1 * MiB

#: Layer media type → codec (``"tar"``, ``"gzip"``, ``"zstd"``). OCI image-spec v1.1
#: ``media-types.md`` (including the deprecated non-distributable types) and Docker's
#: manifest v2 schema 2 layer types.
LAYER_MEDIA_TYPES: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


def codec_of(media_type: str, *, layer: str | None = None) -> str:
    """The codec of a layer media type: ``"tar"``, ``"gzip"`` or ``"zstd"``.

    Raises
    ------
    DecompressionError
        For a media type that is not a layer type pullbench knows (the message lists them).
    """
    codec = LAYER_MEDIA_TYPES.get(media_type)
    if codec is None:
        raise DecompressionError(
            f"layer {layer or '?'} has media type {media_type!r}, which is not a tar layer type "
            f"pullbench can unpack; known: {', '.join(sorted(LAYER_MEDIA_TYPES))}",
            layer=layer, media_type=media_type)
    return codec


@dataclass(frozen=True, slots=True)
class DecompressionLimits:
    """Caps on what one layer may decompress to (a hostile layer must not exhaust the disk).

    Parameters
    ----------
    max_ratio : float or None
        Largest allowed ``uncompressed / compressed`` bytes, checked continuously once
        ``ratio_after_bytes`` have been produced (small layers of zeros are legitimately very
        compressible). Default 200: real layers are 1–10× (debian 3×, text 5×); deflate cannot
        exceed ~1032×, zstd can reach ~32000×. None: no ratio cap.
    max_uncompressed_bytes : int or None
        Absolute cap on one layer's uncompressed size. None (default): unlimited here; the
        unpacker then applies the free space of the root's file system (see
        :class:`~pullbench.RootfsUnpacker`).
    ratio_after_bytes : int
        Uncompressed bytes before the ratio cap applies (default 64 MiB).

    Raises
    ------
    StrategyError
        For a non-positive cap.
    """

    max_ratio: float | None = 200.0
    max_uncompressed_bytes: int | None = None
    ratio_after_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.max_ratio is not None and not self.max_ratio > 0:
            raise StrategyError(f"max_ratio must be > 0 or None, got {self.max_ratio!r}")
        if self.max_uncompressed_bytes is not None and (
                not isinstance(self.max_uncompressed_bytes, int)
                or self.max_uncompressed_bytes < 0):
            raise StrategyError("max_uncompressed_bytes must be an integer >= 0 or None, "
                                f"got {self.max_uncompressed_bytes!r}")
        if not isinstance(self.ratio_after_bytes, int) or self.ratio_after_bytes < 0:
            raise StrategyError(f"ratio_after_bytes must be an integer >= 0, "
                                f"got {self.ratio_after_bytes!r}")


# --- codec engines: push compressed bytes, pull bounded uncompressed steps -------------------
class _Engine(ABC):
    """Incremental decompression with bounded output per :meth:`step`."""

    @abstractmethod
    def wants_input(self) -> bool: ...

    @abstractmethod
    def input_size(self) -> int: ...

    @abstractmethod
    def push(self, data: bytes) -> None: ...

    @abstractmethod
    def step(self) -> bytes: ...

    @abstractmethod
    def finish(self) -> bytes:
        """At end of input: the last output (b"" when done); raise _CodecFault if cut short."""


class _PassThrough(_Engine):
    def __init__(self) -> None:
        self._pending = b""

    def wants_input(self) -> bool:
        return not self._pending

    def input_size(self) -> int:
        return _READ_IN

    def push(self, data: bytes) -> None:
        self._pending = data

    def step(self) -> bytes:
        out, self._pending = self._pending, b""
        return out

    def finish(self) -> bytes:
        return b""


class _GzipEngine(_Engine):
    """gzip (RFC 1952) through any zlib-compatible module (zlib, isal_zlib, zlib_ng)."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._obj = module.decompressobj(31)
        self._pending = b""
        self._started = False  # the current member has been fed input

    def wants_input(self) -> bool:
        if self._obj.eof:
            rest = self._obj.unused_data + self._pending
            return len(rest) < 2
        return not self._pending

    def input_size(self) -> int:
        return _READ_IN

    def push(self, data: bytes) -> None:
        self._pending += data

    def step(self) -> bytes:
        if self._obj.eof:
            rest = self._obj.unused_data + self._pending
            if len(rest) < 2:
                self._pending = rest
                return b""
            if rest[:2] != b"\x1f\x8b":
                raise _CodecFault(f"{len(rest)}+ bytes after the last gzip member are not "
                                  "another gzip member (trailing garbage)")
            self._obj = self._module.decompressobj(31)
            self._pending = rest
        if not self._pending:
            return b""
        self._started = True
        try:
            out: bytes = self._obj.decompress(self._pending, _STEP_OUT)
        except Exception as exc:  # zlib.error, isal_zlib.error, zlib_ng.error
            raise _CodecFault(f"corrupt gzip data: {exc}") from exc
        self._pending = self._obj.unconsumed_tail
        return out

    def finish(self) -> bytes:
        if not self._obj.eof and self._started:
            try:
                tail: bytes = self._obj.flush()  # output zlib still holds (at most a match)
            except Exception as exc:
                raise _CodecFault(f"corrupt gzip data: {exc}") from exc
            if tail:
                return tail
        if self._obj.eof:
            rest = self._obj.unused_data + self._pending
            if rest:
                raise _CodecFault(f"{len(rest)} bytes after the last gzip member are not "
                                  "another gzip member (trailing garbage)")
            return b""
        raise _CodecFault("truncated gzip stream: the data ended inside a gzip member "
                          "(an interrupted download, or a cut-off blob)" if self._started else
                          "empty gzip stream: the layer has no gzip data at all")


class _ZstdEngine(_Engine):
    """zstd frames through ``zstandard``'s decompressobj, input fed in ratio-sized steps.

    ``ZstdDecompressionObj.decompress`` has no output bound, so the output of one call is
    bounded by feeding it at most ``_STEP_OUT / ratio_seen`` compressed bytes (4 KiB to start:
    an RLE-block bomb of 4 KiB expands to at most ~128 MiB before a cap can look at it).
    """

    def __init__(self) -> None:
        import zstandard

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._fed = 0
        self._made = 0
        self._frame_fed = False

    def wants_input(self) -> bool:
        return not self._pending

    def input_size(self) -> int:
        return _READ_IN

    def push(self, data: bytes) -> None:
        self._pending += data

    def _chunk(self) -> int:
        if self._fed == 0:
            return 4096
        ratio = max(self._made / self._fed, 1.0)
        return int(min(max(_STEP_OUT / ratio, 4096), _READ_IN))

    def step(self) -> bytes:
        if not self._pending:
            return b""
        if self._obj.eof:
            self._obj = self._dctx.decompressobj()
            self._frame_fed = False
        n = self._chunk()
        piece, self._pending = self._pending[:n], self._pending[n:]
        try:
            out: bytes = self._obj.decompress(piece)
        except self._zstd.ZstdError as exc:
            raise _CodecFault(f"corrupt zstd data: {exc}") from exc
        self._frame_fed = True
        self._fed += len(piece)
        self._made += len(out)
        if self._obj.eof and self._obj.unused_data:
            self._pending = self._obj.unused_data + self._pending
        return out

    def finish(self) -> bytes:
        if self._fed == 0:
            raise _CodecFault("empty zstd stream: the layer has no zstd data at all")
        if self._frame_fed and not self._obj.eof:
            raise _CodecFault("truncated zstd stream: the data ended inside a zstd frame "
                              "(an interrupted download, or a cut-off blob)")
        return b""


class _CodecFault(Exception):
    """Internal: a codec problem, turned into DecompressionError with the layer's context."""


# --- strategies ------------------------------------------------------------------------------
class Decompressor(ABC):
    """A decompression strategy for layer blobs (named, like a copy strategy).

    Attributes
    ----------
    name : str
        The arm-name token (``zlib``, ``isal``, ``zlib-ng``, ``unpigz``).
    description : str
    """

    name: str = ""
    description: str = ""

    def available(self) -> str | None:
        """None when usable here, else what is missing and how to get it."""
        return None

    @abstractmethod
    def _gzip_module(self) -> ModuleType | None:
        """The zlib-compatible module for gzip, or None for an external process."""

    def external_command(self) -> list[str] | None:
        """The gzip decompression command of an external strategy (stdin → stdout)."""
        return None

    def __repr__(self) -> str:
        return f"<Decompressor {self.name}>"


class _ModuleDecompressor(Decompressor):
    def __init__(self, name: str, module_name: str, pip_name: str, description: str) -> None:
        self.name, self.description = name, description
        self._module_name, self._pip = module_name, pip_name
        self._module: ModuleType | None = None

    def available(self) -> str | None:
        try:
            self._gzip_module()
        except ImportError:
            return f"the {self.name} decompressor needs `pip install {self._pip}`"
        return None

    def _gzip_module(self) -> ModuleType:
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._module_name)
        return self._module


class _ExternalDecompressor(Decompressor):
    name = "unpigz"
    description = ("an external `unpigz` (else `pigz -d`) process reading the compressed "
                   "stream on a pipe, as containerd and moby do when pigz is installed; "
                   "zstd layers stay in-process (zstandard)")

    def available(self) -> str | None:
        return None if self.external_command() else (
            "the unpigz decompressor needs the pigz program: apt-get install pigz")

    def _gzip_module(self) -> None:
        return None

    def external_command(self) -> list[str] | None:
        unpigz = shutil.which("unpigz")
        if unpigz:
            return [unpigz, "-d", "-c"]
        pigz = shutil.which("pigz")
        return [pigz, "-d", "-c"] if pigz else None


_DECOMPRESSORS: dict[str, Decompressor] = {
    d.name: d for d in [
        _ModuleDecompressor("zlib", "zlib", "(standard library)",
                            "Python's zlib (the system zlib): Go's compress/flate class"),
        _ModuleDecompressor("isal", "isal.isal_zlib", "isal",
                            "python-isal: Intel ISA-L igzip inflate (what containerd uses "
                            "through igzip when installed)"),
        _ModuleDecompressor("zlib-ng", "zlib_ng.zlib_ng", "zlib-ng",
                            "zlib-ng through its PyPI binding (SIMD inflate)"),
        _ExternalDecompressor(),
    ]
}


def list_decompressors() -> tuple[str, ...]:
    """Names of the decompressor strategies, in a stable order."""
    return tuple(_DECOMPRESSORS)


def get_decompressor(name: str | Decompressor) -> Decompressor:
    """The decompressor strategy called ``name``.

    Raises
    ------
    StrategyError
        Unknown name (the message lists the names), or the strategy cannot run here (missing
        package or program; the message says how to install it).
    """
    if isinstance(name, Decompressor):
        dec = name
    else:
        found = _DECOMPRESSORS.get(name)
        if found is None:
            raise StrategyError(f"unknown decompressor {name!r}; known: "
                                f"{', '.join(_DECOMPRESSORS)}")
        dec = found
    missing = dec.available()
    if missing:
        raise StrategyError(missing)
    return dec


# --- the reader ------------------------------------------------------------------------------
class LayerReader(io.RawIOBase):
    """The uncompressed tar stream of one layer, hashed, capped and measured.

    Create with :func:`open_layer`. Read it to the end (``read``/``readinto``), then call
    :meth:`verify_diff_id` and :meth:`close`.

    Attributes
    ----------
    compressed_bytes, uncompressed_bytes : int
        Consumed and produced so far.
    decompress_s, decompress_cpu_s : float
        Wall time and CPU (this thread's; for the external process, the child's user+sys
        after it exited) spent decompressing.
    diff_hash_s, diff_hash_cpu_s : float
        Wall time and CPU spent hashing the uncompressed bytes (sha256, i.e. the diff_id).
    max_uncompressed_bytes : int or None
        The absolute cap in force (reported).
    max_ratio : float or None
        The ratio cap in force (reported).
    """

    def __init__(self, source: IO[bytes], codec: str, decompressor: Decompressor,
                 limits: DecompressionLimits, *, layer: str | None, media_type: str | None,
                 compressed_size: int | None) -> None:
        super().__init__()
        self.codec = codec
        self.decompressor_name = decompressor.name if codec == "gzip" else (
            "zstandard" if codec == "zstd" else "none")
        self.layer, self.media_type = layer, media_type
        self.max_ratio = limits.max_ratio
        self.max_uncompressed_bytes = limits.max_uncompressed_bytes
        self._ratio_after = limits.ratio_after_bytes
        self._source = source
        self._compressed_size = compressed_size
        self.compressed_bytes = 0
        self.uncompressed_bytes = 0
        self.decompress_s = 0.0
        self.decompress_cpu_s = 0.0
        self.diff_hash_s = 0.0
        self.diff_hash_cpu_s = 0.0
        self._hash = hashlib.sha256()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._command = ""
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None
        self._engine: _Engine | None = None
        command = decompressor.external_command() if codec == "gzip" else None
        if command:
            self._start_process(command)
        elif codec == "gzip":
            module = decompressor._gzip_module()
            assert module is not None
            self._engine = _GzipEngine(module)
        elif codec == "zstd":
            self._engine = _ZstdEngine()
        else:
            self._engine = _PassThrough()

    # --- external process ----------------------------------------------------------------
    def _start_process(self, command: list[str]) -> None:
        self._command = command[0]
        fileno: int | None
        try:
            fileno = self._source.fileno()
            if not stat.S_ISREG(os.fstat(fileno).st_mode) or self._source.tell() != 0:
                fileno = None
        except (OSError, AttributeError, io.UnsupportedOperation):
            fileno = None
        if fileno is not None:  # the child reads the stored blob itself
            self._proc = subprocess.Popen(command, stdin=fileno, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0)
            self._compressed_size = os.fstat(fileno).st_size
            return
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0)
        self._feeder = threading.Thread(target=self._feed, name="pullbench-unpigz-feed",
                                        daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        try:
            while chunk := self._source.read(_READ_IN):
                self.compressed_bytes += len(chunk)
                self._proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the child stopped reading (it failed, or we killed it): wait() reports
        except BaseException as exc:
            self._feed_error = exc
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def _read_process(self) -> bytes:
        assert self._proc is not None
        assert self._proc.stdout is not None
        t0 = time.perf_counter_ns()
        out = self._proc.stdout.read(_READ_IN)
        self.decompress_s += (time.perf_counter_ns() - t0) / 1e9
        if out:
            return out
        self._reap()
        return b""

    def _reap(self, *, kill: bool = False) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        if self._feeder is not None:
            if kill and proc.stdout is not None:
                proc.stdout.close()
            self._feeder.join(timeout=None if not kill else 10)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.decompress_cpu_s += usage.ru_utime + usage.ru_stime
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        if self._feeder is None and self._compressed_size is not None:
            self.compressed_bytes = self._compressed_size
        if kill:
            return
        if self._feed_error is not None:
            raise self._feed_error
        if proc.returncode != 0:
            raise self._fail(f"{self._command} exited with status {proc.returncode}: "
                             f"{err[-500:] or '(no message)'} — a corrupt or truncated gzip "
                             "stream")

    # --- in-process engines ----------------------------------------------------------------
    def _read_engine(self) -> bytes:
        engine = self._engine
        assert engine is not None
        while True:
            if engine.wants_input():
                chunk = self._source.read(engine.input_size())
                if not chunk:
                    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                    try:
                        out = engine.step() or engine.finish()
                    except _CodecFault as exc:
                        raise self._fail(str(exc)) from None
                    finally:
                        self.decompress_s += (time.perf_counter_ns() - t0) / 1e9
                        self.decompress_cpu_s += (time.thread_time_ns() - c0) / 1e9
                    return out
                self.compressed_bytes += len(chunk)
                engine.push(chunk)
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            try:
                out = engine.step()
            except _CodecFault as exc:
                raise self._fail(str(exc)) from None
            finally:
                self.decompress_s += (time.perf_counter_ns() - t0) / 1e9
                self.decompress_cpu_s += (time.thread_time_ns() - c0) / 1e9
            if out:
                return out

    def _fail(self, what: str) -> DecompressionError:
        return DecompressionError(
            f"layer {self.layer or '?'} ({self.media_type or self.codec}): {what}; pull the "
            "layer again, and if it persists the registry serves a damaged blob",
            layer=self.layer, media_type=self.media_type)

    # --- caps --------------------------------------------------------------------------------
    def _check_caps(self) -> None:
        made = self.uncompressed_bytes
        cap = self.max_uncompressed_bytes
        if cap is not None and made > cap:
            self._abort()
            raise DecompressionBomb(
                f"layer {self.layer or '?'} decompressed past the cap of {cap} bytes "
                f"({made} bytes from {self.compressed_bytes} compressed) — a decompression "
                "bomb, or a layer bigger than the space allowed; raise "
                "DecompressionLimits(max_uncompressed_bytes=...) if it is genuine",
                cap="bytes", limit=float(cap), compressed_bytes=self.compressed_bytes,
                uncompressed_bytes=made, layer=self.layer, media_type=self.media_type)
        ratio_cap = self.max_ratio
        if ratio_cap is not None and made > self._ratio_after:
            # an external process reading the stored file itself: its size is what we know
            reads_file = self._proc is not None and self._feeder is None
            consumed = (self._compressed_size or 0) if reads_file else self.compressed_bytes
            if made > ratio_cap * max(consumed, 1):
                self._abort()
                raise DecompressionBomb(
                    f"layer {self.layer or '?'} expanded more than {ratio_cap:g}× "
                    f"({made} bytes from {consumed} compressed) — a decompression bomb; "
                    "raise DecompressionLimits(max_ratio=...) (or None) if it is genuine",
                    cap="ratio", limit=float(ratio_cap), compressed_bytes=consumed,
                    uncompressed_bytes=made, layer=self.layer, media_type=self.media_type)

    def _abort(self) -> None:
        self._eof = True
        if self._proc is not None:
            self._reap(kill=True)

    # --- io.RawIOBase ------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._pos >= len(self._buf):
            if self._eof:
                return 0
            out = self._read_process() if self._proc is not None else self._read_engine()
            if not out:
                self._eof = True
                return 0
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            self._hash.update(out)
            self.diff_hash_s += (time.perf_counter_ns() - t0) / 1e9
            self.diff_hash_cpu_s += (time.thread_time_ns() - c0) / 1e9
            self.uncompressed_bytes += len(out)
            self._check_caps()
            self._buf, self._pos = out, 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def drain(self) -> int:
        """Read (and hash) whatever remains; return the number of bytes discarded."""
        total = 0
        buf = bytearray(_READ_IN)
        while n := self.readinto(buf):
            total += n
        return total

    @property
    def diff_id(self) -> str:
        """``sha256:<hex>`` of the uncompressed bytes read so far (the diff_id once drained)."""
        return "sha256:" + self._hash.hexdigest()

    @property
    def at_eof(self) -> bool:
        return self._eof

    def verify_diff_id(self, expected: str | None) -> str:
        """Drain the stream and check its digest against ``expected`` (None: just return it).

        Raises
        ------
        DiffIdMismatch
            The uncompressed bytes do not hash to ``expected``.
        """
        self.drain()
        actual = self.diff_id
        if expected is not None and actual != expected:
            raise DiffIdMismatch(
                f"layer {self.layer or '?'} decompresses to {actual}, but the image config's "
                f"rootfs.diff_ids says {expected}: the layer or the config is damaged (or they "
                "belong to different images)", expected=expected, actual=actual,
                layer=self.layer, media_type=self.media_type)
        return actual

    def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._reap(kill=True)
        super().close()


def open_layer(source: IO[bytes], media_type: str, *,
               decompressor: str | Decompressor = "zlib",
               limits: DecompressionLimits | None = None, layer: str | None = None,
               compressed_size: int | None = None) -> LayerReader:
    """Open the uncompressed tar stream of a layer blob.

    Parameters
    ----------
    source : binary file object
        The compressed blob: a stored file (an external decompressor then reads it directly)
        or any stream with ``read(n)`` (a pipe fed from the socket while downloading).
    media_type : str
        The layer descriptor's media type (see :data:`LAYER_MEDIA_TYPES`).
    decompressor : str or Decompressor
        The gzip strategy (:func:`list_decompressors`); zstd always uses ``zstandard``.
    limits : DecompressionLimits, optional
        Bomb caps (default :class:`DecompressionLimits`).
    layer : str, optional
        The layer's digest, for error messages.
    compressed_size : int, optional
        The blob's size, used for the ratio cap when the compressed bytes are not counted as
        they are read (an external process reading a file).

    Returns
    -------
    LayerReader

    Raises
    ------
    DecompressionError
        Unknown media type (at once); corrupt or truncated data (while reading).
    DecompressionBomb
        A cap tripped (while reading).
    StrategyError
        Unknown or unusable decompressor.
    """
    codec = codec_of(media_type, layer=layer)
    dec = get_decompressor(decompressor)
    return LayerReader(source, codec, dec, limits or DecompressionLimits(), layer=layer,
                       media_type=media_type, compressed_size=compressed_size)

