"""The pull pipeline: resolve → fetch config and layers concurrently → content store → PullResult.

Stages (as in dockerd and containerd): the reference is resolved to an image manifest (an index is
narrowed to one platform), then the config and layer blobs are fetched by a thread pool (default 3
concurrent downloads, moby/moby:daemon/config/config.go ``max-concurrent-downloads`` and
containerd's default), each through the chosen :class:`~pullbench.CopyStrategy` into the content
store ``dest/blobs/sha256/<hex>``. The manifest (and index) bytes are stored too, and ``dest`` gets
``oci-layout`` and ``index.json`` so it is an OCI image layout. ``index.json`` is written last,
atomically, and only once every blob it reaches is in the store: after a failed pull ``dest``
never names a manifest whose blobs are missing. It names the image manifest pulled (with its
platform, when it was chosen from an index), since the index's other manifests are not pulled.

Faults (see :class:`~pullbench.RetryPolicy`): requests are retried by the client; an interrupted
blob body is resumed with a Range request by the copy (every strategy, or a restart from zero for
one that declares it cannot resume); temp files left by a killed pull are reused or removed by
the next pull into the same store; Ctrl-C (``KeyboardInterrupt``) cuts every blob transfer at
once, removes their temp files and stops the worker threads before it propagates. The retries,
resumes and seconds of backoff a pull needed are in its :class:`PullResult`.

Decompression and extraction are the ``unpack`` argument: an :class:`~pullbench.UnpackPlan`
builds a root filesystem (``dest/rootfs`` by default) with a chosen decompressor, schedule
(after each download, streamed while downloading, or after all) and order (concurrent downloads
applied in order, or fully serial), and the pull's result gains the decompress and unpack stage
probes (see :mod:`pullbench.puller._stages`). A plain callable ``unpack(descriptor, path)`` is
still accepted: called for each layer once it is verified and stored (from the worker thread
that fetched it); its time is included in the layer's ``duration_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from .._errors import BlobError, PullbenchError, StrategyError
from .._media import OCI_INDEX
from .._reference import ImageReference, parse_reference
from ._client import Descriptor, Manifest, Platform, RegistryClient
from ._probes import (
    Meter,
    NullMeter,
    ProbeSample,
    ThreadProbe,
    median_of_counts,
    merge_counts,
    power_of_two_histogram,
    process_rusage,
)
from ._stages import StageTimes, UnpackCoordinator, UnpackPlan
from ._transport import RetryPolicy
from .strategies import CopyStats, CopyStrategy, get_strategy
from .strategies._base import CopyCancelled
from .strategies._partial import clean_stale_partials, partial_name, write_atomically

__all__ = ["LayerResult", "PullResult", "pull"]

logger = logging.getLogger(__name__)

UnpackHook = Callable[[Descriptor, Path], None]


@dataclass(frozen=True, slots=True)
class LayerResult:
    """One blob (config or layer) of a pull.

    Attributes
    ----------
    digest : str
    media_type : str
    size_bytes : int
    duration_s : float
        Wall time of this blob's transfer in its worker thread: from the blob request to the
        stored file (plus ``unpack``, if given). A hashing helper thread runs inside that span and
        adds no wall time.
    ttfb_s : float
        From the blob request to the response headers (includes redirects and auth).
    read_count, write_count : int or None
    read_size_hist, write_size_hist : dict[int, int] or None
        Power-of-two bucket upper bound (bytes) → count.
    median_write_bytes : float or None
    buffer_bytes : int
    cpu_user_s, cpu_sys_s : float or None
        CPU of the worker thread and its helper threads (summed).
    syscr, syscw, rchar, wchar : int or None
        ``/proc/thread-self/io`` deltas of those threads.
    resumes : int
        Range requests that continued this blob after its body was cut.
    hash_s, write_s : float or None
        Inside ``duration_s``: wall time computing the blob's digest and inside the write
        system calls to its temp file (:class:`~pullbench.CopyStats`; with
        ``hash_mode="thread"`` the hashing overlaps the copy). None when not measured.
    uncompressed_bytes : int or None
        With an :class:`~pullbench.UnpackPlan`, for layers: the uncompressed tar's size; the
        stage probes below are None without a plan (and for the config).
    decompress_s, decompress_cpu_s, unpack_s, unpack_cpu_s : float or None
        Wall time and CPU in the decompressor and in the tar/file-system work of this layer
        (:class:`~pullbench.LayerUnpackResult`).
    files : int or None
        Regular files this layer wrote.
    streamed : bool or None
        The layer was decompressed while it downloaded (``schedule="stream"``).

    Fields marked "or None" are None when the pull ran with ``probes=False`` (not measured).
    """

    digest: str
    media_type: str
    size_bytes: int
    duration_s: float
    ttfb_s: float
    read_count: int | None
    write_count: int | None
    read_size_hist: dict[int, int] | None
    write_size_hist: dict[int, int] | None
    median_write_bytes: float | None
    buffer_bytes: int
    cpu_user_s: float | None
    cpu_sys_s: float | None
    syscr: int | None
    syscw: int | None
    rchar: int | None
    wchar: int | None
    resumes: int = 0
    hash_s: float | None = None
    write_s: float | None = None
    uncompressed_bytes: int | None = None
    decompress_s: float | None = None
    decompress_cpu_s: float | None = None
    unpack_s: float | None = None
    unpack_cpu_s: float | None = None
    files: int | None = None
    streamed: bool | None = None


@dataclass(frozen=True, slots=True)
class PullResult:
    """The outcome and probes of one pull.

    Attributes
    ----------
    reference : str
        Normalized reference pulled.
    registry : str
    manifest_digest : str
        Digest of the image manifest (per-platform).
    platform : str or None
        Platform selected from an index, if any.
    strategy : str
    params : dict
        The strategy's effective parameters.
    concurrency : int
    total_bytes : int
        Sum of blob sizes (config + layers; manifests excluded).
    duration_s : float
        Wall time of the whole pull.
    resolve_s : float
        Manifest resolution (ping, auth, manifest/index GETs).
    ttfb_s : float
        Time to first byte of the first blob: from the start of the blob stage to the first blob
        response's headers.
    transfer_s : float
        Blob stage: from the first blob request to the last blob stored.
    throughput_mb_s : float
        ``total_bytes / duration_s / 1e6`` (MB = 10^6 bytes; end to end).
    transfer_mb_s : float
        ``total_bytes / transfer_s / 1e6``.
    hash_s, write_s : float or None
        The hash and write stages inside the transfer: the blobs' digest computation and their
        temp-file write system calls (wall seconds summed over blobs, so with concurrent
        downloads the sum can exceed ``transfer_s``; :class:`~pullbench.CopyStats`). The rest
        of a blob's time is receiving (socket reads, waiting for the network). None when not
        measured (probes off, or a custom strategy that does not time them).
    layers : tuple of LayerResult
        In manifest order, config first.
    cpu_user_s, cpu_sys_s : float or None
        CPU of the pull's own threads (resolve thread, workers, hashing threads;
        ``getrusage(RUSAGE_THREAD)``) — an in-process server's threads are not counted.
    process_cpu_user_s, process_cpu_sys_s : float or None
        ``getrusage(RUSAGE_SELF)`` delta of the whole process (includes in-process servers).
    syscr, syscw, rchar, wchar : int or None
        ``/proc/thread-self/io`` deltas summed over the pull's threads. ``syscr`` does not count
        socket ``recv`` calls (the kernel counts read/write-family calls only).
    read_size_hist, write_size_hist : dict[int, int] or None
        Power-of-two bucket upper bound (bytes) → count, over all blobs.
    read_count, write_count : int or None
    median_write_bytes : float or None
    buffer_bytes : int
        Buffers held by the strategy, summed over the layers that can run at once
        (``min(concurrency, blobs)`` × the largest per-copy buffer).
    peak_rss_bytes : int or None
        ``ru_maxrss`` of the process after the pull (a high-water mark since process start).
    dest : str
    retries : int
        Requests the client sent again after a transient status or connection error.
    resumes : int
        Range requests that continued an interrupted blob body (or restarted it from zero).
    backoff_s : float
        Seconds the pull spent waiting before retries and resumes. A run with any of these
        three non-zero measured a fault as well as a copy (experiments leave it out of verdicts
        by default).
    decompressor, unpack_schedule, unpack_order : str or None
        The :class:`~pullbench.UnpackPlan` of the pull (None: blobs were only stored).
    decompress_concurrency : int or None
    rootfs : str or None
        The root filesystem directory built.
    uncompressed_bytes : int or None
        Sum of the layers' uncompressed tar sizes.
    decompress_s, decompress_cpu_s : float or None
        Sum over layers of the wall time and CPU spent in the decompressor (an external
        ``unpigz``'s CPU is its own process's).
    diff_hash_s : float or None
        Sum of the time hashing uncompressed bytes (the diff_id check).
    unpack_s, unpack_cpu_s : float or None
        Sum over layers of the tar parsing and file-system work (wall, CPU).
    unpack_wall_s : float or None
        From the first layer's apply start to the last layer's end (what the stage spans;
        with ``stream`` it overlaps the transfer).
    unpack_tail_s : float or None
        From the last blob stored to the root filesystem done: what unpacking adds to the
        pull beyond the transfer.
    files, file_bytes, dirs_created, fsyncs : int or None
        Regular files and their bytes, directories created, fsync calls (all layers).
    layers_streamed : int or None
        Layers decompressed while they downloaded.

    With an :class:`~pullbench.UnpackPlan`, ``duration_s`` runs until the root filesystem is
    complete and ``transfer_s`` ends at the last blob stored.

    Fields marked "or None" are None when the pull ran with ``probes=False``: not measured
    (never 0, which would look like data).
    """

    reference: str
    registry: str
    manifest_digest: str
    platform: str | None
    strategy: str
    params: dict[str, Any]
    concurrency: int
    total_bytes: int
    duration_s: float
    resolve_s: float
    ttfb_s: float
    transfer_s: float
    throughput_mb_s: float
    transfer_mb_s: float
    layers: tuple[LayerResult, ...]
    cpu_user_s: float | None
    cpu_sys_s: float | None
    process_cpu_user_s: float | None
    process_cpu_sys_s: float | None
    syscr: int | None
    syscw: int | None
    rchar: int | None
    wchar: int | None
    read_size_hist: dict[int, int] | None
    write_size_hist: dict[int, int] | None
    read_count: int | None
    write_count: int | None
    median_write_bytes: float | None
    buffer_bytes: int
    peak_rss_bytes: int | None
    dest: str = field(default="")
    hash_s: float | None = None
    write_s: float | None = None
    retries: int = 0
    resumes: int = 0
    backoff_s: float = 0.0
    decompressor: str | None = None
    unpack_schedule: str | None = None
    unpack_order: str | None = None
    decompress_concurrency: int | None = None
    rootfs: str | None = None
    uncompressed_bytes: int | None = None
    decompress_s: float | None = None
    decompress_cpu_s: float | None = None
    diff_hash_s: float | None = None
    unpack_s: float | None = None
    unpack_cpu_s: float | None = None
    unpack_wall_s: float | None = None
    unpack_tail_s: float | None = None
    files: int | None = None
    file_bytes: int | None = None
    dirs_created: int | None = None
    fsyncs: int | None = None
    layers_streamed: int | None = None

    def to_row(self) -> dict[str, Any]:
        """A flat row for results tables.

        Scalars stay scalars; ``params``, ``read_size_hist`` and ``write_size_hist`` become JSON
        strings (histogram keys are the bucket upper bounds as strings, e.g. ``{"32768": 120}``);
        ``layers`` becomes ``layer_count``. Use :func:`json.loads` to get the dicts back.
        Fields not measured (``probes=False``) stay None.
        """
        row: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "layers":
                row["layer_count"] = len(value)
            elif name in {"params", "read_size_hist", "write_size_hist"} and value is not None:
                row[name] = json.dumps({str(k): v for k, v in value.items()}, sort_keys=False)
            else:
                row[name] = value
        return row

    def to_dict(self) -> dict[str, Any]:
        """Everything, nested (layers as a list of dicts); JSON-serialisable."""
        return asdict(self)


@dataclass(slots=True)
class _BlobOutcome:
    layer: LayerResult
    sample: ProbeSample | None
    stats: CopyStats
    started_ns: int
    headers_ns: int
    ended_ns: int = 0


def _store_path(dest: Path, digest: str) -> Path:
    algorithm, _, encoded = digest.partition(":")
    return dest / "blobs" / algorithm / encoded


def _write_small(path: Path, data: bytes) -> None:
    write_atomically(path, data)


def _fetch_blob(
    client: RegistryClient,
    repository: str,
    desc: Descriptor,
    strategy: CopyStrategy,
    dest: Path,
    unpack: UnpackHook | None,
    cancel: threading.Event,
    probes: bool,
    coord: UnpackCoordinator | None = None,
    layer_index: int | None = None,
) -> _BlobOutcome:
    if coord is not None and layer_index is not None:
        coord.before_download(layer_index)
    if cancel.is_set():
        raise _Cancelled()
    probe = ThreadProbe() if probes else None
    started = time.perf_counter_ns()
    headers_at: list[int] = []

    def reopen(offset: int) -> tuple[requests.Response, int]:
        if cancel.is_set():
            raise _Cancelled()
        opened = client.open_blob_range(repository, desc, offset)
        if not headers_at:
            headers_at.append(time.perf_counter_ns())
        return opened

    if coord is not None and layer_index is not None:
        meter = coord.meter_for(layer_index, probes)
    else:
        meter = Meter() if probes else NullMeter()
    path = _store_path(dest, desc.digest)
    try:
        try:
            stats = strategy.copy(
                None, path, expected_size=desc.size_bytes, expected_digest=desc.digest,
                probe=meter, reopen=reopen, policy=client.retry, cancel=cancel,
            )
        except CopyCancelled:
            raise _Cancelled() from None
        except PullbenchError as exc:
            if getattr(exc, "registry", None) is None and hasattr(exc, "registry"):
                exc.registry = client.registry
            if getattr(exc, "image_ref", None) is None and hasattr(exc, "image_ref"):
                exc.image_ref = f"{client.registry}/{repository}@{desc.digest}"
            raise
    except BaseException:
        if coord is not None:  # the unpack stage must not wait for this blob
            if layer_index is None:
                coord.config_stored(None)
            else:
                coord.failed(layer_index)
        raise
    if coord is not None:
        if layer_index is None:
            coord.config_stored(path)
        else:
            coord.stored(layer_index, path)
    if unpack is not None:
        unpack(desc, path)
    # the layer's wall time is this thread's span only (a hashing thread runs inside it)
    ended = time.perf_counter_ns()
    headers = headers_at[0] if headers_at else ended
    sample = None
    if probe is not None:
        sample = probe.stop()
        if stats.helper is not None:
            sample = sample + stats.helper  # CPU and I/O add up; wall time does not
    layer = LayerResult(
        digest=desc.digest,
        media_type=desc.media_type,
        size_bytes=desc.size_bytes,
        duration_s=(ended - started) / 1e9,
        ttfb_s=(headers - started) / 1e9,
        read_count=stats.read_count,
        write_count=stats.write_count,
        read_size_hist=stats.read_size_hist,
        write_size_hist=stats.write_size_hist,
        median_write_bytes=stats.median_write_bytes,
        buffer_bytes=stats.buffer_bytes,
        cpu_user_s=sample.cpu_user_s if sample is not None else None,
        cpu_sys_s=sample.cpu_sys_s if sample is not None else None,
        syscr=sample.io.syscr if sample is not None else None,
        syscw=sample.io.syscw if sample is not None else None,
        rchar=sample.io.rchar if sample is not None else None,
        wchar=sample.io.wchar if sample is not None else None,
        resumes=stats.resumes,
        hash_s=stats.hash_s,
        write_s=stats.write_s,
    )
    return _BlobOutcome(layer, sample, stats, started, headers, ended)


class _Cancelled(Exception):
    pass


def pull(
    reference: str | ImageReference,
    strategy: str | CopyStrategy,
    dest: str | Path,
    *,
    concurrency: int = 3,
    platform: str | None = None,
    session: requests.Session | None = None,
    plain_http: bool = False,
    ca_bundle: str | Path | None = None,
    credentials: tuple[str, str] | None = None,
    token: str | None = None,
    probes: bool = True,
    params: Mapping[str, Any] | None = None,
    unpack: UnpackPlan | UnpackHook | None = None,
    client: RegistryClient | None = None,
    retry: RetryPolicy | None = None,
) -> PullResult:
    """Pull an image's config and layer blobs into a content store, measuring how.

    Parameters
    ----------
    reference : str or ImageReference
        ``[registry[:port]/]repo[:tag][@digest]``.
    strategy : str or CopyStrategy
        A registered name (see :func:`list_strategies`) or a strategy object.
    dest : path
        Content store root; blobs land in ``dest/blobs/sha256/<hex>``.
    concurrency : int
        Blobs fetched at once (default 3, like dockerd and containerd).
    platform : str, optional
        ``os/arch[/variant]`` to select from an index (default: this host).
    session : requests.Session, optional
        HTTP seam (connection pools are sized to ``concurrency`` when pullbench creates it).
    plain_http, ca_bundle, credentials, token
        Passed to :class:`RegistryClient`.
    probes : bool
        Measure how the pull ran (default True). ``probes=False`` turns off, and does not pay for:
        the per-thread CPU snapshots (``getrusage(RUSAGE_THREAD)``) and ``/proc/thread-self/io``
        reads at the start and end of the pull and of every blob, in the worker threads and in
        the hashing helper threads; the process ``getrusage(RUSAGE_SELF)`` before and after (CPU,
        peak RSS); and the strategy's counting of every read and write (the copy gets a
        :class:`~pullbench.puller._probes.NullMeter`), hence the size histograms. The fields
        they feed are None in the result (``cpu_*``, ``process_cpu_*``,
        ``syscr``/``syscw``/``rchar``/``wchar``, ``read_*``/``write_*`` counts and histograms,
        ``median_write_bytes``,
        ``peak_rss_bytes``, in the :class:`PullResult` and in each :class:`LayerResult`).
        Unchanged: the wall-clock timers (``duration_s``, ``resolve_s``, ``ttfb_s``,
        ``transfer_s``, throughputs), ``buffer_bytes`` (declared by the strategy, not measured)
        and verification: every blob's size (``fstat`` of the written file) and digest are
        checked exactly as with probes on.
    params : mapping, optional
        Strategy parameter overrides when ``strategy`` is a name.
    unpack : UnpackPlan or callable, optional
        The decompression/extraction seam. An :class:`~pullbench.UnpackPlan` unpacks the image
        into a root filesystem (decompressor, schedule, order; its stage probes fill the
        ``unpack_*``/``decompress_*`` fields). A callable ``unpack(descriptor, stored_path)`` is
        called per layer (not the config) after the layer is verified and stored. None
        (default) stores only.
    client : RegistryClient, optional
        Use this client instead of building one (its settings win over the arguments above).
    retry : RetryPolicy, optional
        Retries, backoff, deadline, resume and low-speed limits (default ``RetryPolicy()``);
        ``RetryPolicy(attempts=1)`` fails at the first fault.

    Returns
    -------
    PullResult

    Raises
    ------
    InvalidReference, StrategyError
        Bad input, before any network traffic.
    ImageNotFound, AuthenticationError, ManifestError, RegistryUnavailable
        Resolution failures.
    DigestMismatch, SizeMismatch
        A blob failed verification (or its body could not be completed within the retry
        policy); its temp file is removed and nothing is stored for it. Other blobs already
        stored stay (they are verified content); ``index.json`` is not written.
    KeyboardInterrupt
        Propagated after every transfer was cut and its temp file removed.
    LayerError, DecompressionError, DecompressionBomb, DiffIdMismatch, UnsafeLayerError,
    CorruptLayerError
        With an :class:`~pullbench.UnpackPlan`: a layer could not be unpacked; the partial root
        is removed unless the plan keeps it.
    """
    ref = reference if isinstance(reference, ImageReference) else parse_reference(reference)
    if isinstance(strategy, str):
        strat = get_strategy(strategy, **dict(params or {}))
    elif isinstance(strategy, CopyStrategy):
        if params:
            raise StrategyError("params= only applies when strategy is given by name")
        strat = strategy
    else:
        raise StrategyError(
            f"strategy must be a name or a CopyStrategy, not {type(strategy).__name__}"
        )
    if not isinstance(concurrency, int) or concurrency < 1:
        raise StrategyError(f"concurrency must be a positive integer, got {concurrency!r}")
    dest = Path(dest)
    own_client = client is None
    own_session = session is None and own_client
    if own_session:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(concurrency, 10)
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    if client is None:
        client = RegistryClient(
            ref.registry,
            plain_http=plain_http,
            ca_bundle=ca_bundle,
            credentials=credentials,
            token=token,
            session=session,
            retry=retry,
        )
    counters0 = client.counters.snapshot()
    plan = unpack if isinstance(unpack, UnpackPlan) else None
    hook = None if isinstance(unpack, UnpackPlan) else unpack
    proc0 = process_rusage() if probes else None
    t0 = time.perf_counter_ns()
    main_probe = ThreadProbe() if probes else None
    stage: StageTimes | None = None
    try:
        manifest = client.get_manifest(ref.repository, ref.ref, platform)
        resolve_ns = time.perf_counter_ns()
        clean_stale_partials(dest, keep=[partial_name(_store_path(dest, d.digest))
                                         for d in manifest.blobs])
        _store_manifests(dest, manifest)
        cancel = threading.Event()
        coord = None
        if plan is not None:
            coord = UnpackCoordinator(
                plan, dest, [(d.media_type, d.digest, d.size_bytes) for d in manifest.layers],
                cancel)
        try:
            outcomes = _fetch_all(client, ref, manifest, strat, dest, concurrency, hook, probes,
                                  cancel=cancel, coord=coord)
        except BaseException:
            if coord is not None:
                coord.abort()
            raise
        _write_index(dest, manifest, ref)
        if coord is not None:
            stage = coord.finish()
    finally:
        if own_session and session is not None:
            session.close()
    end_ns = time.perf_counter_ns()
    sample = main_probe.stop() if main_probe is not None else None
    proc1 = process_rusage() if probes else None

    layers = tuple(o.layer for o in outcomes)
    total = sum(layer.size_bytes for layer in layers)
    duration_s = (end_ns - t0) / 1e9
    first_start = min((o.started_ns for o in outcomes), default=resolve_ns)
    first_headers = min((o.headers_ns for o in outcomes), default=resolve_ns)
    transfer_end = max((o.ended_ns for o in outcomes), default=end_ns) if plan else end_ns
    transfer_s = (transfer_end - first_start) / 1e9
    reads = writes = None
    if sample is not None:  # probes on
        for o in outcomes:
            assert o.sample is not None
            sample = sample + o.sample
        reads = merge_counts(o.stats.read_sizes or {} for o in outcomes)
        writes = merge_counts(o.stats.write_sizes or {} for o in outcomes)
    retries1, resumes1, backoff1 = client.counters.snapshot()
    resumes = sum(o.stats.resumes for o in outcomes)
    if stage is not None:
        layers = _with_stage(layers, stage)
    parallel = min(concurrency, len(outcomes)) if outcomes else 0
    per_copy = max((o.stats.buffer_bytes for o in outcomes), default=0)
    return PullResult(
        reference=str(ref),
        registry=ref.registry,
        manifest_digest=manifest.digest,
        platform=str(manifest.platform) if manifest.platform else None,
        strategy=strat.name,
        params=dict(strat.params),
        concurrency=concurrency,
        total_bytes=total,
        duration_s=duration_s,
        resolve_s=(resolve_ns - t0) / 1e9,
        ttfb_s=(first_headers - first_start) / 1e9,
        transfer_s=transfer_s,
        throughput_mb_s=total / duration_s / 1e6 if duration_s > 0 else 0.0,
        transfer_mb_s=total / transfer_s / 1e6 if transfer_s > 0 else 0.0,
        layers=layers,
        cpu_user_s=sample.cpu_user_s if sample is not None else None,
        cpu_sys_s=sample.cpu_sys_s if sample is not None else None,
        process_cpu_user_s=proc1[0] - proc0[0] if proc0 and proc1 else None,
        process_cpu_sys_s=proc1[1] - proc0[1] if proc0 and proc1 else None,
        syscr=sample.io.syscr if sample is not None else None,
        syscw=sample.io.syscw if sample is not None else None,
        rchar=sample.io.rchar if sample is not None else None,
        wchar=sample.io.wchar if sample is not None else None,
        read_size_hist=power_of_two_histogram(reads) if reads is not None else None,
        write_size_hist=power_of_two_histogram(writes) if writes is not None else None,
        read_count=sum(reads.values()) if reads is not None else None,
        write_count=sum(writes.values()) if writes is not None else None,
        median_write_bytes=median_of_counts(writes) if writes is not None else None,
        buffer_bytes=parallel * per_copy,
        peak_rss_bytes=proc1[2] if proc1 else None,
        dest=str(dest),
        hash_s=_stage_sum(layer.hash_s for layer in layers),
        write_s=_stage_sum(layer.write_s for layer in layers),
        retries=retries1 - counters0[0],
        resumes=resumes + resumes1 - counters0[1],
        backoff_s=backoff1 - counters0[2] + sum(o.stats.backoff_s for o in outcomes),
        **(_stage_fields(plan, stage, transfer_end) if plan and stage else {}),
    )


def _stage_sum(values: Iterable[float | None]) -> float | None:
    """Sum of per-blob stage times; None when any blob's was not measured."""
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _with_stage(layers: tuple[LayerResult, ...], stage: StageTimes) -> tuple[LayerResult, ...]:
    """The layers (config first) with the unpack stage's per-layer probes filled in."""
    import dataclasses

    out = [layers[0]]
    for layer, done, streamed in zip(layers[1:], stage.layers, stage.streamed, strict=True):
        out.append(dataclasses.replace(
            layer, uncompressed_bytes=done.uncompressed_bytes, decompress_s=done.decompress_s,
            decompress_cpu_s=done.decompress_cpu_s, unpack_s=done.unpack_s,
            unpack_cpu_s=done.unpack_cpu_s, files=done.files, streamed=streamed))
    return tuple(out)


def _stage_fields(plan: UnpackPlan, stage: StageTimes, transfer_end_ns: int) -> dict[str, Any]:
    done = stage.layers
    first = min(stage.starts_ns, default=transfer_end_ns)
    last = max(stage.ends_ns, default=transfer_end_ns)
    return {
        "decompressor": plan.decompressor, "unpack_schedule": plan.schedule,
        "unpack_order": plan.order, "decompress_concurrency": plan.decompress_concurrency,
        "rootfs": stage.root,
        "uncompressed_bytes": sum(x.uncompressed_bytes for x in done),
        "decompress_s": sum(x.decompress_s for x in done),
        "decompress_cpu_s": sum(x.decompress_cpu_s for x in done),
        "diff_hash_s": sum(x.diff_hash_s for x in done),
        "unpack_s": sum(x.unpack_s for x in done),
        "unpack_cpu_s": sum(x.unpack_cpu_s for x in done),
        "unpack_wall_s": (last - first) / 1e9,
        "unpack_tail_s": max(last - transfer_end_ns, 0) / 1e9,
        "files": sum(x.files for x in done),
        "file_bytes": sum(x.file_bytes for x in done),
        "dirs_created": sum(x.dirs_created for x in done),
        "fsyncs": sum(x.fsyncs for x in done),
        "layers_streamed": sum(stage.streamed),
    }


def _store_manifests(dest: Path, manifest: Manifest) -> None:
    """Store the manifest (and index) bytes and the ``oci-layout`` marker (not ``index.json``)."""
    _write_small(_store_path(dest, manifest.digest), manifest.data)
    if manifest.index is not None:
        _write_small(_store_path(dest, manifest.index.digest), manifest.index.data)
    layout = dest / "oci-layout"
    if not layout.exists():
        _write_small(layout, b'{"imageLayoutVersion":"1.0.0"}')


def _write_index(dest: Path, manifest: Manifest, ref: ImageReference) -> None:
    """Write ``index.json`` (atomically) naming the image manifest, once every blob it reaches
    is in the store.

    Raises
    ------
    BlobError
        A blob the manifest names is missing (nothing is written then).
    """
    missing = [d.digest for d in (*manifest.blobs,)
               if not _store_path(dest, d.digest).is_file()]
    if not _store_path(dest, manifest.digest).is_file():
        missing.append(manifest.digest)
    if missing:
        raise BlobError(f"not writing {dest / 'index.json'}: blobs missing from the store: "
                        + ", ".join(missing))
    entry: dict[str, Any] = {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": len(manifest.data),
    }
    if manifest.platform is not None:
        plat = manifest.platform
        entry["platform"] = {"architecture": plat.architecture, "os": plat.os,
                             **({"variant": plat.variant} if plat.variant else {})}
    if ref.tag:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref.tag}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    _write_small(dest / "index.json", json.dumps(index, indent=2).encode())


def _fetch_all(
    client: RegistryClient,
    ref: ImageReference,
    manifest: Manifest,
    strategy: CopyStrategy,
    dest: Path,
    concurrency: int,
    unpack: UnpackHook | None,
    probes: bool = True,
    *,
    cancel: threading.Event | None = None,
    coord: UnpackCoordinator | None = None,
) -> list[_BlobOutcome]:
    blobs = list(manifest.blobs)
    cancel = cancel if cancel is not None else threading.Event()
    config_digest = manifest.config.digest
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pullbench-blob") as pool:
        futures = [
            pool.submit(
                _fetch_blob,
                client,
                ref.repository,
                desc,
                strategy,
                dest,
                None if desc.digest == config_digest and desc is manifest.config else unpack,
                cancel,
                probes,
                coord,
                None if index == 0 else index - 1,  # blobs are the config, then the layers
            )
            for index, desc in enumerate(blobs)
        ]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C (KeyboardInterrupt): stop every transfer now
            cancel.set()  # each copy's watchdog shuts its socket down; temp files are removed
            for f in futures:
                f.cancel()
            wait(futures)
            logger.warning("pull of %s interrupted: transfers stopped, temp files removed", ref)
            raise
        failed = [
            f for f in futures if f.done() and not f.cancelled() and f.exception() is not None
        ]
        if failed:
            cancel.set()
            for f in futures:
                f.cancel()
            wait(futures)
            errors = [
                f.exception()
                for f in futures
                if f.done()
                and not f.cancelled()
                and f.exception() is not None
                and not isinstance(f.exception(), _Cancelled)
            ]
            if not errors and coord is not None and coord.error is not None:
                raise coord.error  # the unpack stage failed and cancelled the downloads
            raise errors[0]  # type: ignore[misc]
        return [f.result() for f in futures]


# Keep a name for the host platform handy for callers that want to report it.
host_platform = Platform.host
