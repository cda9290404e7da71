"""The stages after the download inside a pull: decompress and unpack, and how they are scheduled.

:class:`UnpackPlan` is what :func:`~pullbench.pull` takes as ``unpack=`` to build a root
filesystem while (or after) it downloads. Its dimensions are the ones runtimes differ on:

``decompressor``
    The gzip strategy (:func:`~pullbench.list_decompressors`); zstd layers use zstandard.
``schedule``
    ``after``: a layer is decompressed and applied from its stored, verified blob as soon as it
    is its turn (the layers before it applied) — moby's order (moby/moby:distribution/xfer:
    downloads run concurrently, registration is serial in layer order). ``stream``: the layer
    that is next in order is fed to the decompressor *while it downloads*, from the bytes the
    copy strategy has written so far (a reader that follows the temp file); a layer whose
    download finished before its turn is read from its file. Its digest is still verified at
    the end of the download; if it fails, the partial root is removed. (Strategies that write
    without :meth:`Meter.write`, i.e. ``splice``, are always read after the download.)
    ``end``: nothing is applied before every download finished (the fully staged order).
``order``
    ``in-order``: downloads run ``concurrency`` at a time and are applied in layer order as they
    become ready. ``serial``: a layer's download starts only after the previous layer was
    applied — the fully serial pipeline moby#21814 measured.
``decompress_concurrency``
    Layers decompressed at once. 1: decompression is fused with unpacking in one thread (as in
    containerd's and moby's appliers). N > 1: up to N−1 helper threads decompress stored layers
    that are not yet due into temporary uncompressed tars (diff_id checked there), so the
    applier only untars them — the overlap a parallel decompressor buys, at the cost of writing
    the tar once more.

The timings (per layer: :class:`~pullbench.LayerUnpackResult`; per pull: ``unpack_*``,
``decompress_*`` columns of :class:`~pullbench.PullResult`) come from the unpacker's probes.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from .._errors import LayerError, PullbenchError, StrategyError
from ._decompress import DecompressionLimits, get_decompressor, list_decompressors, open_layer
from ._probes import Meter, NullMeter
from ._unpack import LayerUnpackResult, RootfsUnpacker

__all__ = ["ORDERS", "SCHEDULES", "UnpackPlan"]

logger = logging.getLogger(__name__)

SCHEDULES = ("after", "stream", "end")
ORDERS = ("in-order", "serial")
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class UnpackPlan:
    """How a pull decompresses and unpacks its layers into a root filesystem.

    Parameters
    ----------
    decompressor : str
        ``zlib`` (default), ``isal``, ``zlib-ng`` or ``unpigz``.
    schedule : {"after", "stream", "end"}
        See the module documentation. Default ``after``.
    order : {"in-order", "serial"}
        Default ``in-order``.
    decompress_concurrency : int
        Layers decompressed at once (default 1: fused with unpacking).
    root : str, optional
        The root filesystem directory (default ``<dest>/rootfs``); must be new or empty.
    limits : DecompressionLimits, optional
        Bomb caps (default: :class:`~pullbench.DecompressionLimits`, capped at free space).
    privileged : bool, optional
        Ownership, xattrs and device nodes (default: when running as root).
    keep_partial : bool
        Keep the partial root when a layer fails (default: remove it).
    fsync : bool
        fsync each regular file (default False).

    Raises
    ------
    StrategyError
        Unknown decompressor, schedule or order; a non-positive concurrency.
    """

    decompressor: str = "zlib"
    schedule: str = "after"
    order: str = "in-order"
    decompress_concurrency: int = 1
    root: str | None = None
    limits: DecompressionLimits | None = field(default=None, compare=False)
    privileged: bool | None = None
    keep_partial: bool = False
    fsync: bool = False

    def __post_init__(self) -> None:
        get_decompressor(self.decompressor)  # unknown or unusable: StrategyError
        if self.schedule not in SCHEDULES:
            raise StrategyError(f"unpack schedule {self.schedule!r} is not one of "
                                f"{', '.join(SCHEDULES)}")
        if self.order not in ORDERS:
            raise StrategyError(f"unpack order {self.order!r} is not one of {', '.join(ORDERS)}")
        if (not isinstance(self.decompress_concurrency, int)
                or isinstance(self.decompress_concurrency, bool)
                or self.decompress_concurrency < 1):
            raise StrategyError("decompress_concurrency must be a positive integer, got "
                                f"{self.decompress_concurrency!r}")

    @property
    def label(self) -> str:
        """``decompressor+schedule[+serial][+dcN]``: the arm-name suffix of this plan."""
        parts = [self.decompressor, self.schedule]
        if self.order != "in-order":
            parts.append(self.order)
        if self.decompress_concurrency != 1:
            parts.append(f"dc{self.decompress_concurrency}")
        return "+".join(parts)

    @classmethod
    def from_tokens(cls, tokens: list[str] | tuple[str, ...], **kw: Any) -> UnpackPlan:
        """Build a plan from arm-name tokens: ``["isal", "stream"]``, ``["zlib", "serial",
        "dc2"]`` (any order; unnamed dimensions keep their defaults).

        Raises
        ------
        StrategyError
            A token that is none of: a decompressor, a schedule, an order, ``dcN``.
        """
        values: dict[str, Any] = {}
        for token in tokens:
            if token in list_decompressors():
                values["decompressor"] = token
            elif token in SCHEDULES:
                values["schedule"] = token
            elif token in ORDERS:
                values["order"] = token
            elif token.startswith("dc") and token[2:].isdigit():
                values["decompress_concurrency"] = int(token[2:])
            else:
                names = ", ".join(list_decompressors())
                raise StrategyError(
                    f"unpack token {token!r} is not a decompressor ({names}),"
                    f" a schedule ({', '.join(SCHEDULES)}), an order ({', '.join(ORDERS)}) "
                    "or dcN (decompression concurrency)")
        return cls(**values, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The plan's scalar settings (what a results row records)."""
        return {"decompressor": self.decompressor, "schedule": self.schedule,
                "order": self.order, "decompress_concurrency": self.decompress_concurrency}


# --- following a download as it is written -------------------------------------------------
class _Follow:
    """The bytes a copy strategy has written to its temp file so far (fed by a tee meter)."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond  # the coordinator's: the applier wakes at the first write
        self.fd: int | None = None
        self.written = 0
        self.done = False
        self.ok = False

    def wrote(self, fd: int, n: int) -> None:
        with self.cond:
            if self.fd is None:
                self.fd = os.dup(fd)  # the strategy closes its fd before the rename
            self.written += n
            self.cond.notify_all()

    def finish(self, ok: bool) -> None:
        with self.cond:
            self.done, self.ok = True, ok
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


class _Tee:
    """Mixed in before a meter: each write the strategy makes is also told to the follower."""

    def __init__(self, follow: _Follow) -> None:
        super().__init__()
        self._follow = follow

    def write(self, fd: int, data: memoryview | bytes) -> int:
        n: int = super().write(fd, data)  # type: ignore[misc]  # the meter's write
        self._follow.wrote(fd, n)
        return n


class _TeeMeter(_Tee, Meter):
    """A :class:`Meter` that tells the follower of each write."""


class _TeeNullMeter(_Tee, NullMeter):
    """A :class:`NullMeter` (probes off) that tells the follower of each write."""


class _DownloadFailed(Exception):
    pass


class _FollowingReader(io.RawIOBase):
    """Reads a blob while it is being downloaded; EOF once the download finished."""

    def __init__(self, follow: _Follow) -> None:
        super().__init__()
        self._f = follow
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        f = self._f
        with f.cond:
            while self._offset >= f.written and not f.done:
                f.cond.wait()
            if f.done and not f.ok:
                raise _DownloadFailed()
            available = f.written - self._offset
            fd = f.fd
        if available <= 0:
            return 0
        assert fd is not None
        view = memoryview(buffer).cast("B")
        n = os.preadv(fd, [view[:available]], self._offset)
        self._offset += n
        return n


# --- the coordinator -----------------------------------------------------------------------
@dataclass(slots=True)
class _Slot:
    index: int
    media_type: str
    digest: str
    size_bytes: int
    follow: _Follow | None = None
    path: Path | None = None
    failed: bool = False
    download_end_ns: int = 0
    applied: threading.Event = field(default_factory=threading.Event)
    ahead: Future[tuple[Path, str, dict[str, Any]]] | None = None
    result: LayerUnpackResult | None = None
    start_ns: int = 0
    end_ns: int = 0
    streamed: bool = False


@dataclass(frozen=True, slots=True)
class StageTimes:
    """What the unpack stage did during one pull (consumed by the pipeline's result)."""

    layers: tuple[LayerUnpackResult, ...]
    starts_ns: tuple[int, ...]
    ends_ns: tuple[int, ...]
    streamed: tuple[bool, ...]
    root: str


class UnpackCoordinator:
    """Runs the applier thread of one pull and tells download workers when to go.

    The pipeline calls :meth:`before_download`, :meth:`meter_for`, :meth:`stored` /
    :meth:`failed` from its workers, :meth:`config_stored` for the config, then :meth:`finish`.
    """

    def __init__(self, plan: UnpackPlan, dest: Path, layers: list[tuple[str, str, int]],
                 cancel: threading.Event) -> None:
        self.plan = plan
        self.root = Path(plan.root) if plan.root else dest / "rootfs"
        self.slots = [_Slot(i, mt, d, s) for i, (mt, d, s) in enumerate(layers)]
        self.cancel = cancel
        self.cond = threading.Condition()
        self.diff_ids: list[str] | None = None
        self.config_failed = False
        self.error: BaseException | None = None
        self.unpacker = RootfsUnpacker(self.root, decompressor=plan.decompressor,
                                       limits=plan.limits, privileged=plan.privileged,
                                       keep_partial=plan.keep_partial, fsync=plan.fsync)
        self._ahead_pool = (ThreadPoolExecutor(plan.decompress_concurrency - 1,
                                               thread_name_prefix="pullbench-decompress")
                            if plan.decompress_concurrency > 1 else None)
        self.thread = threading.Thread(target=self._run, name="pullbench-unpack", daemon=True)
        self.thread.start()

    # --- called from download workers ------------------------------------------------------
    def before_download(self, index: int) -> None:
        """Serial order: wait until the previous layer was applied (or the pull failed)."""
        if self.plan.order != "serial" or index == 0:
            return
        prev = self.slots[index - 1].applied
        while not prev.wait(0.05):
            if self.cancel.is_set():
                return

    def meter_for(self, index: int, probes: bool) -> Meter:
        if self.plan.schedule != "stream":
            return Meter() if probes else NullMeter()
        follow = _Follow(self.cond)
        with self.cond:
            self.slots[index].follow = follow
            self.cond.notify_all()
        return _TeeMeter(follow) if probes else _TeeNullMeter(follow)

    def stored(self, index: int, path: Path) -> None:
        slot = self.slots[index]
        with self.cond:
            slot.path = path
            slot.download_end_ns = time.perf_counter_ns()
            if slot.follow is not None:
                slot.follow.finish(True)
            self.cond.notify_all()
        if self._ahead_pool is not None and self.diff_ids is not None:
            self._maybe_ahead(slot)

    def failed(self, index: int) -> None:
        slot = self.slots[index]
        with self.cond:
            slot.failed = True
            if slot.follow is not None:
                slot.follow.finish(False)
            self.cond.notify_all()

    def config_stored(self, path: Path | None) -> None:
        import json

        with self.cond:
            if path is None:
                self.config_failed = True
            else:
                try:
                    config = json.loads(path.read_bytes())
                    self.diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
                except (OSError, ValueError) as exc:
                    self.error = LayerError(f"the image config {path.name} is not JSON ({exc}); "
                                            "cannot unpack")
                    self.config_failed = True
            self.cond.notify_all()

    # --- the applier thread ------------------------------------------------------------------
    def _wait(self, predicate: Any) -> bool:
        with self.cond:
            while not predicate():
                if self.cancel.is_set():
                    return False
                self.cond.wait(0.05)
            return True

    def _maybe_ahead(self, slot: _Slot) -> None:
        with self.cond:
            if slot.ahead is not None or slot.path is None or slot.start_ns:
                return
            assert self._ahead_pool is not None
            slot.ahead = self._ahead_pool.submit(self._decompress_ahead, slot)

    def _decompress_ahead(self, slot: _Slot) -> tuple[Path, str, dict[str, Any]]:
        assert slot.path is not None
        assert self.diff_ids is not None
        tar = slot.path.with_name(f".{slot.path.name[:16]}.{slot.index}.tar")
        with slot.path.open("rb") as src, tar.open("wb") as out:
            reader = open_layer(src, slot.media_type, decompressor=self.plan.decompressor,
                                limits=self.plan.limits, layer=slot.digest,
                                compressed_size=slot.size_bytes)
            try:
                buf = bytearray(MiB)
                while n := reader.readinto(buf):
                    out.write(memoryview(buf)[:n])
                reader.verify_diff_id(self.diff_ids[slot.index])
            finally:
                reader.close()
        done = {"decompressor": reader.decompressor_name,
                "compressed_bytes": reader.compressed_bytes,
                "decompress_s": reader.decompress_s, "decompress_cpu_s": reader.decompress_cpu_s,
                "diff_hash_s": reader.diff_hash_s}
        return tar, "application/vnd.oci.image.layer.v1.tar", done

    def _run(self) -> None:
        try:
            if not self._wait(lambda: self.diff_ids is not None or self.config_failed):
                return
            if self.diff_ids is None:
                return
            if len(self.diff_ids) != len(self.slots):
                raise LayerError(f"the manifest lists {len(self.slots)} layers but the config "
                                 f"{len(self.diff_ids)} diff_ids; the image is inconsistent")
            if self._ahead_pool is not None:
                for slot in self.slots:
                    if slot.path is not None:
                        self._maybe_ahead(slot)
            if self.plan.schedule == "end" and not self._wait(
                    lambda: all(s.path is not None or s.failed for s in self.slots)):
                return
            stream = self.plan.schedule == "stream"
            for slot in self.slots:
                if not self._wait(lambda s=slot: s.path is not None or s.failed or (
                        stream and s.follow is not None and s.follow.fd is not None)):
                    return
                if slot.failed:
                    return
                self._apply(slot)
                slot.applied.set()
        except BaseException as exc:
            self.error = exc
            self.cancel.set()
        finally:
            for slot in self.slots:
                slot.applied.set()  # release serial gates

    def _apply(self, slot: _Slot) -> None:
        assert self.diff_ids is not None
        diff_id = self.diff_ids[slot.index]
        slot.start_ns = time.perf_counter_ns()
        source: str | os.PathLike[str] | IO[bytes]
        media_type = slot.media_type
        ahead = slot.ahead
        reader: _FollowingReader | None = None
        ahead_stats: dict[str, Any] = {}
        if ahead is not None:
            tar, media_type, ahead_stats = ahead.result()
            source = tar
        elif slot.path is not None:
            source = slot.path
        else:
            assert slot.follow is not None
            reader = _FollowingReader(slot.follow)
            source = cast(IO[bytes], reader)
            slot.streamed = True
        try:
            result = self.unpacker.apply(source, media_type, digest=slot.digest,
                                         diff_id=diff_id, compressed_size=slot.size_bytes)
        except _DownloadFailed:
            raise _Aborted() from None
        finally:
            if reader is not None:
                reader.close()
            if slot.follow is not None:
                slot.follow.close()
            if ahead is not None:
                Path(source).unlink(missing_ok=True)  # type: ignore[arg-type]
        slot.end_ns = time.perf_counter_ns()
        if ahead_stats:  # decompressed by a helper thread: its work is this layer's decompress
            import dataclasses

            result = dataclasses.replace(
                result, media_type=slot.media_type, decompressor=ahead_stats["decompressor"],
                compressed_bytes=ahead_stats["compressed_bytes"],
                decompress_s=result.decompress_s + ahead_stats["decompress_s"],
                decompress_cpu_s=result.decompress_cpu_s + ahead_stats["decompress_cpu_s"],
                diff_hash_s=result.diff_hash_s + ahead_stats["diff_hash_s"],
                cpu_s=result.cpu_s + ahead_stats["decompress_cpu_s"])
        slot.result = result

    # --- end ---------------------------------------------------------------------------------
    def abort(self) -> None:
        """The pull failed: stop, and remove the partial root (unless ``keep_partial``)."""
        self.cancel.set()
        self.thread.join()
        self._close_pool()
        self.unpacker.abort()

    def _close_pool(self) -> None:
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=True, cancel_futures=True)
            for slot in self.slots:
                if slot.ahead is not None and slot.ahead.done() and not slot.ahead.cancelled():
                    if slot.ahead.exception() is None:
                        slot.ahead.result()[0].unlink(missing_ok=True)

    def finish(self) -> StageTimes:
        """Wait for the last layer; raise the unpack error, if any.

        Raises
        ------
        LayerError and its subclasses
            A layer could not be applied (the root is removed unless ``keep_partial``).
        """
        self.thread.join()
        self._close_pool()
        if self.error is not None and not isinstance(self.error, _Aborted):
            if not isinstance(self.error, PullbenchError):
                self.unpacker.abort()
            raise self.error
        if any(s.result is None for s in self.slots):
            self.unpacker.abort()
            raise LayerError("the unpack stage stopped before the last layer (the pull was "
                             "cancelled)")
        return StageTimes(
            layers=tuple(s.result for s in self.slots if s.result is not None),
            starts_ns=tuple(s.start_ns for s in self.slots),
            ends_ns=tuple(s.end_ns for s in self.slots),
            streamed=tuple(s.streamed for s in self.slots), root=str(self.unpacker.root))


class _Aborted(Exception):
    """The layer being streamed failed its download; the download's error is the one raised."""
