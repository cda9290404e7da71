"""Run an experiment: preflight checks, registry and images, randomized blocks, worker processes.

Flow of :func:`run_experiment`::

    preflight (strategies, cache policy, writable folders)       -- errors before any run
    registry  (registry factory -> Endpoint, wrapped by the network-profile / TLS layers)
    images    (build if not cached, push, digest)  -> disk-space check
    environment.json, spec.json
    for each planned run not yet in rows.jsonl:
        empty the destination store; drop the page cache (cache_policy="drop", root)
        pull in a fresh worker process (forked from a fork server) -- time measured inside
            it, around the pull only
        append the row (fsync) -> progress bar
    rows.parquet, rows.csv

The seams for other network set-ups (registry factories, endpoint layers) live in
:mod:`pullbench.experiment._endpoints`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import (
    BenchmarkError,
    ExperimentInterrupted,
    ImageNotFound,
    ParameterWarning,
    RegistryUnavailable,
    StrategyError,
)
from ..arms._daemons import DaemonDied
from ._endpoints import (
    Endpoint,
    RegistryFactory,
    _check_reachable,
    _endpoint_for,
    _unknown_profile_message,
    network_profiles,
    process_cpu_s,
    remote_registry_factory,
)
from ._interference import InterferenceProbe
from ._isolation import apply_plan, endpoint_pids, format_cpu_list, nice_of, plan_cpus, thread_ids
from ._results import (
    ENVIRONMENT_JSON,
    RESULTS_SCHEMA_VERSION,
    SPEC_JSON,
    ResultsStore,
    consolidate_results,
)
from ._spec import ExperimentSpec, PlannedRun, design

__all__ = [
    "ExperimentInterrupted",
    "ExperimentResult",
    "ImageInfo",
    "drop_page_cache",
    "run_experiment",
]

logger = logging.getLogger(__name__)

DEFAULT_PULL_FUNCTION = "pullbench.puller._pipeline:pull"
#: Window of the machine check the runner makes itself when none is given, seconds.
PREFLIGHT_WINDOW_S = 0.25
#: A single run taking longer than this is stopped and recorded as an error.
DEFAULT_RUN_TIMEOUT_S = 900.0
_DISK_HEADROOM = 1.10
_DISK_SLACK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image ready to pull: name in the spec, reference at the endpoint, digest, size."""

    name: str
    reference: str
    digest: str | None
    size_bytes: int | None

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``environment.json``."""
        return {"name": self.name, "reference": self.reference, "digest": self.digest,
                "size_bytes": self.size_bytes}


def _catalog_names() -> list[str]:
    from ..images._catalog import catalog

    return sorted(catalog)


def _layout_size(layout: Any) -> int | None:
    for attr in ("total_bytes", "size_bytes", "compressed_bytes", "total_size_bytes"):
        value = getattr(layout, attr, None)
        if isinstance(value, int):
            return value
    layers = getattr(layout, "layers", None)
    if layers:
        sizes = [getattr(layer, "size", getattr(layer, "size_bytes", None)) for layer in layers]
        ints = [s for s in sizes if isinstance(s, int)]
        if len(ints) == len(sizes):
            return sum(ints)
    return None


def _check_images(spec: ExperimentSpec) -> None:
    if spec.registry not in ("embedded", "distribution"):
        return  # references in an external registry are checked once it is reachable
    from ..images._catalog import catalog

    names = _catalog_names()
    unknown = [i for i in spec.images if i not in names]
    if names and unknown:
        raise ImageNotFound(
            f"unknown image(s) {unknown}: with a registry pullbench starts, images come from the "
            f"fixture catalog: {names}", image_ref=unknown[0],
        )
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    for name in spec.images:
        if catalog[name].needs_root and not is_root:
            raise BenchmarkError(
                f"image {name!r} is built with debootstrap and needs root; run as root or pick "
                "a synthetic image (see `pullbench image list`)"
            )


def _prepare_images(spec: ExperimentSpec, endpoint: Endpoint,
                    cache_dir: Path | None) -> list[ImageInfo]:
    from ..images._catalog import build_image
    from ..images._oci import push_image

    catalog = set(_catalog_names())
    infos = []
    for name in spec.images:
        if name in catalog:
            logger.info("building (or reusing) fixture image %s", name)
            layout = build_image(name, cache_dir=cache_dir)
            repo = f"pullbench/{name}"
            reference = f"{endpoint.host}/{repo}:latest"
            push_kw: dict[str, Any] = {"plain_http": endpoint.plain_http}
            if endpoint.ca_bundle:
                push_kw["ca_bundle"] = endpoint.ca_bundle
            digest = push_image(layout, reference, **push_kw)
            infos.append(ImageInfo(name, reference, str(digest), _layout_size(layout)))
        else:
            reference = name if name.startswith(endpoint.host) else f"{endpoint.host}/{name}"
            infos.append(ImageInfo(name, reference, _resolve_digest(reference, endpoint), None))
    return infos


def _resolve_digest(reference: str, endpoint: Endpoint) -> str | None:
    """HEAD the manifest of a reference in an external registry; ImageNotFound on 404."""
    import requests

    from .._media import MANIFEST_ACCEPT

    path = reference[len(endpoint.host) + 1:]
    repo, _, tag = path.rpartition(":") if "@" not in path else path.partition("@")
    if not repo or "/" in tag:
        repo, tag = path, "latest"
    url = f"{endpoint.url}/v2/{repo}/manifests/{tag}"
    with requests.Session() as session:
        session.trust_env = False
        try:
            response = session.head(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=10,
                                    verify=endpoint.ca_bundle or True)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"{endpoint.url}: {exc}", registry=endpoint.host) from exc
    if response.status_code == 404:
        raise ImageNotFound(
            f"image {reference} does not exist in {endpoint.url}; push it first or use a catalog "
            "name with --registry embedded/distribution", registry=endpoint.host,
            image_ref=reference,
        )
    return response.headers.get("Docker-Content-Digest")


def _validate_strategies(spec: ExperimentSpec) -> None:
    from ..puller.strategies import get_strategy, list_strategies
    from ._arms import check_external_arms

    check_external_arms(spec)  # kinds and parameters of the arms pullbench does not own
    names = [info.name for info in list_strategies()]
    for arm in spec.arms:
        if arm.external:
            continue
        if arm.strategy not in names:
            raise StrategyError(
                f"arm {arm.name!r}: unknown strategy {arm.strategy!r}; choose one of: "
                f"{', '.join(names)} (see `pullbench strategies`)"
            )
        try:
            strategy = get_strategy(arm.strategy, **arm.params_dict)
        except (StrategyError, TypeError) as exc:
            raise StrategyError(f"arm {arm.name!r}: {exc}") from exc
        _warn_ineffective(arm.name, arm.params_dict, strategy.ineffective_params(),
                          get_strategy(arm.strategy).ineffective_params(), strategy.params)


def _warn_ineffective(arm: str, given: Mapping[str, Any], ineffective: Mapping[str, str],
                      preset: Mapping[str, str], params: Mapping[str, Any]) -> None:
    """Warn about parameters that cannot take effect because of what the user set.

    A parameter counts when the user set it, or when it worked in the preset and the user's
    overrides disabled it (e.g. ``write_mode=per-read`` on ``pr48602`` makes ``write_size``
    idle); a preset's own idle parameter (``go-iocopy``'s ``write_size``) is not the user's doing.
    """
    for key, why in ineffective.items():
        if key in given or key not in preset:
            warnings.warn(f"arm {arm}: {key}={params.get(key)!r} cannot take effect: {why}",
                          ParameterWarning, stacklevel=4)


def _check_writable(directory: Path, what: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".pullbench-write-test"):
            pass
    except OSError as exc:
        raise BenchmarkError(
            f"{what} {directory} is not writable ({exc.strerror or exc}); choose another location"
        ) from exc


def _check_disk(store_root: Path, sizes: list[int], registry_dir: Path | None,
                exact: bool) -> None:
    """Enough free space for the planned runs, before any run.

    Runs are sequential and each content store is emptied after its run, so the destination
    needs one store of the largest image at a time (``concurrent_stores = 1``); a registry that
    pullbench starts keeps one copy of every image in its storage.
    """
    sizes = [s for s in sizes if s]
    if not sizes:
        return
    what = "" if exact else "estimated "
    concurrent_stores = 1
    needs: dict[Path, int] = {}
    needs[store_root] = int(max(sizes) * concurrent_stores * _DISK_HEADROOM) + _DISK_SLACK_BYTES
    if registry_dir is not None:
        needs[registry_dir] = int(sum(sizes) * _DISK_HEADROOM) + _DISK_SLACK_BYTES
    by_device: dict[int, tuple[Path, int]] = {}
    for path, need in needs.items():
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        dev = probe.stat().st_dev
        prev = by_device.get(dev)
        by_device[dev] = (probe, need + (prev[1] if prev else 0))
    for probe, need in by_device.values():
        free = shutil.disk_usage(probe).free
        if free < need:
            raise BenchmarkError(
                f"too little disk for the planned runs on {probe}: {free / 2**20:.0f} MiB free, "
                f"need about {need / 2**20:.0f} MiB ({what}image sizes "
                f"{[s // 2**20 for s in sizes]}"
                f" MiB x {concurrent_stores} content store at a time, plus the registry's copy "
                "and headroom); free space, or put the stores elsewhere with --dest"
            )


def _approx_sizes(spec: ExperimentSpec) -> list[int]:
    from ..images._catalog import catalog

    return [int(getattr(catalog.get(i), "approx_size_bytes", 0) or 0) for i in spec.images]


def drop_page_cache() -> None:
    """``sync; echo 1 > /proc/sys/vm/drop_caches`` (Linux, root only).

    Raises
    ------
    BenchmarkError
        Not root, or the kernel refused.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise BenchmarkError(
            "dropping the page cache needs root (cache_policy='drop' / --drop-caches); "
            "run as root or leave the cache warm"
        )
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as exc:
        raise BenchmarkError(f"could not drop the page cache: {exc}") from exc


# -- one run --------------------------------------------------------------------------------------
def _load_function(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise BenchmarkError(f"pull function {path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _execute_pull(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one pull as described by ``task``; time it around the pull call only."""
    from ..puller.strategies import get_strategy

    pull = _load_function(task["pull_function"])
    strategy = get_strategy(task["strategy"], **task["params"])
    kwargs: dict[str, Any] = {
        "concurrency": task["concurrency"], "plain_http": task["plain_http"],
        "probes": task["probes"],
    }
    if task.get("ca_bundle"):
        kwargs["ca_bundle"] = task["ca_bundle"]
    if task.get("unpack"):  # the arm's decompress/unpack stage (an UnpackPlan's tokens)
        from ..puller._stages import UnpackPlan

        kwargs["unpack"] = UnpackPlan.from_tokens(task["unpack"])
    dest = Path(task["dest"])
    proxy_pid = task.get("proxy_pid")
    puller_cpus = task.get("puller_cpus")
    saved_affinity = _pin_self(puller_cpus)
    # the CPUs this thread really has (read back, not the plan)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    probe = (InterferenceProbe(task.get("measured_pids"), puller_cpus=puller_cpus,
                               exclusive_puller_cpus=bool(task.get("exclusive_puller")))
             if task.get("interference", True) else None)  # off only to measure its cost
    try:
        proxy_before = process_cpu_s(proxy_pid) if proxy_pid else 0.0
        if probe is not None:
            probe.start()
        cpu_before = os.times()
        started = time.perf_counter()
        try:
            result = pull(task["reference"], strategy, dest, **kwargs)
        except BaseException:
            if probe is not None:
                probe.cancel()
            raise
        pull_wall_s = time.perf_counter() - started
        cpu_after = os.times()
        interference = probe.stop() if probe is not None else {}
    finally:
        if saved_affinity is not None and task.get("restore_affinity"):
            os.sched_setaffinity(0, saved_affinity)
    row = result.to_row() if hasattr(result, "to_row") else dict(result)
    row["pull_wall_s"] = pull_wall_s
    row.update(interference)
    row["puller_cpus"] = format_cpu_list(affinity) if affinity is not None else None
    row["puller_nice"] = nice_of()
    if proxy_pid:  # the shaping proxy's CPU during this pull (its pid is in Endpoint.details)
        row["proxy_cpu_s"] = process_cpu_s(proxy_pid) - proxy_before
    # CPU of the whole process around the pull, independent of the puller's probes (in a worker
    # process that is the pull alone; in-process it also counts an in-process registry)
    row["worker_cpu_user_s"] = cpu_after.user - cpu_before.user
    row["worker_cpu_sys_s"] = cpu_after.system - cpu_before.system
    row["worker_pid"] = os.getpid()
    return row


def _pin_self(cpus: Any) -> set[int] | None:
    """Pin the calling thread (threads it starts inherit it) to ``cpus``; return the old set."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    return old


def _worker_main(conn: Any, task: dict[str, Any]) -> None:
    """Entry point of a worker process: one pull, one message back, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    try:
        row = _execute_pull(task)
        conn.send(("ok", row))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5)))
    finally:
        conn.close()


def _worker_context() -> Any:
    """A fresh process per run: forked from a pristine fork server that has imported pullbench.

    The fork server (``multiprocessing`` ``forkserver``) is started once and imports pullbench
    and its dependencies once; each worker is a fork of it, so it starts in milliseconds with no
    state from earlier runs or from the parent (no registry threads, no caches). Falls back to
    ``spawn`` where fork servers are unavailable.
    """
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    # ``import pullbench`` alone is lazy (it imports next to nothing), so name what a worker runs:
    # this module (the process target), the puller and its strategies, and requests. No
    # numpy/pandas/scipy: a pull needs none of them.
    ctx.set_forkserver_preload(["pullbench", "pullbench.experiment._runner",
                                "pullbench.puller._pipeline", "pullbench.puller.strategies",
                                "requests"])
    return ctx


def _run_in_worker(task: dict[str, Any], timeout_s: float) -> tuple[str, Any]:
    ctx = _worker_context()
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(child_conn, task), daemon=True,
                       name=f"pullbench-run-{task['run_index']}")
    proc.start()
    child_conn.close()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if parent_conn.poll(0.2):
                try:
                    message = parent_conn.recv()
                except EOFError:
                    message = None
                break
            if not proc.is_alive():
                message = parent_conn.recv() if parent_conn.poll(0.5) else None
                break
            if time.monotonic() > deadline:
                message = ("error",
                           f"run exceeded the {timeout_s:.0f} s timeout and was stopped", "")
                break
        proc.join(timeout=10)
        if message is None:
            return ("error", f"worker process exited with code {proc.exitcode} before reporting")
        return message[0], message[1]
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        parent_conn.close()


def _run_inprocess(task: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", _execute_pull(task)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        logger.debug("run %s failed", task["run_index"], exc_info=True)
        return "error", f"{type(exc).__name__}: {exc}"


#: Puller row keys renamed in results rows (the harness's ``params`` are the arm's overrides).
_RENAMED = {"params": "effective_params"}
_JSON_TEXT_KEYS = ("effective_params", "read_size_hist", "write_size_hist")


def _merge_rows(base: dict[str, Any], pulled: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(base)
    for key, value in pulled.items():
        key = _RENAMED.get(key, key)
        if key in _JSON_TEXT_KEYS and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if key in row and row[key] != value:
            row[f"pull_{key}"] = value
        else:
            row[key] = value
    if "bytes" not in row and "total_bytes" in row:
        row["bytes"] = row["total_bytes"]
    return row


# -- the experiment -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """What :func:`run_experiment` did.

    Attributes
    ----------
    directory : Path
        The results folder.
    spec : ExperimentSpec
    planned_runs : int
        Runs in the plan (warm-up included).
    completed_runs : int
        Rows in ``rows.jsonl`` now (from this and earlier sessions).
    ok_runs, error_runs : int
        Completed runs by status.
    resumed_runs : int
        Runs skipped because an earlier session had finished them.
    interrupted : bool
        True when Ctrl-C stopped the experiment.
    """

    directory: Path
    spec: ExperimentSpec
    planned_runs: int
    completed_runs: int
    ok_runs: int
    error_runs: int
    resumed_runs: int
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        """Every planned run has a row."""
        return self.completed_runs >= self.planned_runs


def _check_record(check: Any) -> dict[str, Any] | None:
    """A SystemCheck (or QuietWait, or mapping) as the ``preflight`` record; None stays None."""
    if check is None:
        return None
    if hasattr(check, "to_dict"):
        return dict(check.to_dict())
    return dict(check)


def _default_wiring(spec: ExperimentSpec, factory: RegistryFactory | None,
                    pull_function: str | None) -> tuple[RegistryFactory, str]:
    """Pick the registry factory (native TLS when ``spec.tls``) and the pull function."""
    return (factory or remote_registry_factory), (pull_function or DEFAULT_PULL_FUNCTION)


def preflight(spec: ExperimentSpec, *, check_registry: bool = False) -> None:
    """Check what can fail before any registry starts or any run is made.

    Arms (strategies and their parameters), the network profile, ``cache_policy='drop'``
    (root), the fixture images; with ``check_registry`` also that a URL registry answers
    ``GET /v2/`` (plain HTTP or publicly trusted TLS).

    Raises
    ------
    StrategyError
        Unknown strategy or bad parameter; the message names the arm.
    BenchmarkError, ImageNotFound, RegistryUnavailable
        Unknown network profile, not root for ``drop``, unknown image, unreachable URL registry.
    """
    _validate_strategies(spec)
    if spec.network_profile not in network_profiles():
        raise BenchmarkError(_unknown_profile_message(spec.network_profile))
    if spec.cache_policy == "drop" and (not hasattr(os, "geteuid") or os.geteuid() != 0):
        raise BenchmarkError(
            "--drop-caches / cache_policy='drop' needs root to write /proc/sys/vm/drop_caches; "
            "run as root or leave the cache warm"
        )
    _check_images(spec)
    if check_registry and spec.registry not in ("embedded", "distribution") and not spec.tls:
        _check_reachable(spec.registry.rstrip("/"))


def default_results_dir(spec: ExperimentSpec, base: str | Path = "results") -> Path:
    """``<base>/<UTC timestamp>-<spec.name>`` (e.g. ``results/20261129T084400Z-bench``)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(base) / f"{stamp}-{spec.name}"


def _load_resume_spec(store: ResultsStore, spec: ExperimentSpec | None) -> ExperimentSpec:
    saved = store.read_json(SPEC_JSON)
    if saved is None:
        raise BenchmarkError(
            f"cannot resume: {store.directory} has no {SPEC_JSON} (not a pullbench results folder)"
        )
    saved_spec = ExperimentSpec.from_mapping(saved)
    if spec is not None and spec != saved_spec:
        raise BenchmarkError(
            f"cannot resume {store.directory} with a different spec; drop the spec options to "
            "continue the saved one, or use a new --out"
        )
    return saved_spec


def run_experiment(
    spec: ExperimentSpec | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    registry_factory: RegistryFactory | None = None,
    pull_function: str | None = None,
    image_cache_dir: str | Path | None = None,
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
    notes: Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    system_check: Any = None,
    before_run: Callable[[PlannedRun], None] | None = None,
) -> ExperimentResult:
    """Run (or continue) an experiment and write its results folder.

    Parameters
    ----------
    spec : ExperimentSpec, optional
        What to run. With ``resume=True`` it may be omitted (the saved ``spec.json`` is used);
        if given, it must equal the saved one.
    out_dir : path, optional
        Results folder; default ``results/<timestamp>-<name>`` in the current directory.
    resume : bool
        Continue the experiment in ``out_dir``: runs that already have a row (ok or error) are
        not repeated; a partial last row left by a crash is dropped and that run is redone.
    progress : bool
        Show a tqdm progress bar with ETA on stderr.
    registry_factory : callable, optional
        ``(spec, work_dir) -> context manager yielding an Endpoint``. Default:
        :func:`pullbench.remote_registry_factory`: :func:`default_registry_factory`, with the
        registry serving TLS itself when ``spec.tls``.
    pull_function : str, optional
        ``"module:function"`` with :func:`pullbench.pull`'s signature. Default: ``pull``. When the
        network profile puts a shaping proxy between puller and registry, every row also gets
        ``proxy_cpu_s`` (the proxy's CPU during the pull; its pid is in ``Endpoint.details``).
    image_cache_dir : path, optional
        Fixture-image build cache (``build_image``'s default when None).
    run_timeout_s : float
        A run taking longer is stopped and recorded as an error.
    notes : Mapping, optional
        Recorded under ``extra`` in ``environment.json``.
    max_runs : int, optional
        Stop after this many new runs (the rest can be resumed).
    system_check : SystemCheck or Mapping, optional
        The preflight check of the machine (``pullbench bench`` makes one before announcing the
        experiment), recorded in ``environment.json`` under ``preflight``. None: a short check
        (:data:`PREFLIGHT_WINDOW_S`) is made here, before the registry starts.
    before_run : callable, optional
        Called with each :class:`PlannedRun` just before it runs, in this process (e.g. to
        switch injected load on and off per block, as the interference tests do).

    Every row also carries the interference columns of
    :mod:`pullbench.experiment._interference` (CPU used by other processes during the pull,
    run queue, steal, CPU frequency, involuntary context switches), and the puller, registry,
    proxy and daemons are pinned to CPUs as ``spec.cpus`` says
    (:mod:`pullbench.experiment._isolation`); the plan and nice levels go to
    ``environment.json`` under ``cpu_isolation``.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    StrategyError
        Unknown strategy or parameter (before any run).
    BenchmarkError
        Invalid set-up (not root for ``drop``, folder not writable, too little disk, resume
        mismatch), raised before any run; :class:`ExperimentInterrupted` after Ctrl-C (its
        ``result`` tells what was kept).
    RegistryUnavailable, ImageNotFound, ServerError, ImageBuildError
        Registry or image problems, before any run.
    """
    if resume:
        if out_dir is None:
            raise BenchmarkError("resume needs the results folder of the interrupted experiment")
        store = ResultsStore(Path(out_dir))
        spec = _load_resume_spec(store, spec)
    else:
        spec = spec or ExperimentSpec()
        out = Path(out_dir) if out_dir is not None else default_results_dir(spec)
        store = ResultsStore(out)
        if store.rows_path.exists() and store.rows_path.stat().st_size > 0:
            raise BenchmarkError(
                f"{out} already holds results; use --resume to continue them or another --out"
            )
    assert spec is not None

    # -- preflight: everything that can fail before a registry starts ---------------------------
    preflight(spec)
    registry_factory, pull_function = _default_wiring(spec, registry_factory, pull_function)
    created_here = not store.directory.exists()
    try:
        return _run_prepared(spec, store, resume=resume, progress=progress,
                             factory=registry_factory, pull_function=pull_function,
                             image_cache_dir=image_cache_dir, run_timeout_s=run_timeout_s,
                             notes=notes, max_runs=max_runs,
                             preflight_check=_check_record(system_check),
                             before_run=before_run)
    except BaseException:
        # nothing half-written: a folder this call created and never wrote a row to goes away
        if created_here and not store.rows_path.exists():
            shutil.rmtree(store.directory, ignore_errors=True)
        raise


def _run_prepared(spec: ExperimentSpec, store: ResultsStore, *, resume: bool, progress: bool,
                  factory: RegistryFactory, pull_function: str,
                  image_cache_dir: str | Path | None, run_timeout_s: float,
                  notes: Mapping[str, Any] | None, max_runs: int | None,
                  preflight_check: dict[str, Any] | None,
                  before_run: Callable[[PlannedRun], None] | None) -> ExperimentResult:
    store.create()
    with _exclusive(store):
        return _run_locked(spec, store, resume=resume, progress=progress, factory=factory,
                           pull_function=pull_function, image_cache_dir=image_cache_dir,
                           run_timeout_s=run_timeout_s, notes=notes, max_runs=max_runs,
                           preflight_check=preflight_check, before_run=before_run)


@contextlib.contextmanager
def _exclusive(store: ResultsStore) -> Iterator[None]:
    """One writer per results folder: a second ``--resume`` while one runs is refused."""
    import fcntl

    fd = os.open(store.directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BenchmarkError(
                f"another pullbench process is writing to {store.directory}; wait for it (or stop "
                "it) before resuming"
            ) from exc
        yield
    finally:
        os.close(fd)  # closing releases the lock; a killed process releases it too


def _run_locked(spec: ExperimentSpec, store: ResultsStore, *, resume: bool, progress: bool,
                factory: RegistryFactory, pull_function: str,
                image_cache_dir: str | Path | None, run_timeout_s: float,
                notes: Mapping[str, Any] | None, max_runs: int | None,
                preflight_check: dict[str, Any] | None,
                before_run: Callable[[PlannedRun], None] | None) -> ExperimentResult:
    store_root = Path(spec.dest_dir) if spec.dest_dir else store.directory / "store"
    _check_writable(store_root, "destination folder")
    rows = store.read_rows(repair=True)
    done = {int(r["run_index"]) for r in rows}
    plan = design(spec)
    if resume and rows:
        planned_ids = {p.run_index: p.run_id for p in plan}
        bad = [r["run_index"] for r in rows
               if planned_ids.get(int(r["run_index"])) != r["run_id"]]
        if bad:
            raise BenchmarkError(
                f"rows {bad[:5]} do not match the saved plan; the folder is corrupt"
            )
    todo = [p for p in plan if p.run_index not in done]
    cache_state = "cold" if spec.cache_policy == "drop" else "warm"

    starts_registry = spec.registry in ("embedded", "distribution")
    _check_disk(store_root, _approx_sizes(spec),
                Path(tempfile.gettempdir()) if starts_registry else None, exact=False)
    cpu_plan = plan_cpus(spec.cpus)
    if preflight_check is None:
        from ._system import system_check

        preflight_check = system_check(PREFLIGHT_WINDOW_S).to_dict()
    work_dir = Path(tempfile.mkdtemp(prefix="pullbench-registry-"))
    ok = sum(1 for r in rows if r.get("status") == "ok")
    err = len(rows) - ok
    new = 0
    interrupted = False
    stopped: BaseException | None = None  # a daemon of an external arm died for good
    try:
        threads_before = thread_ids()
        with _endpoint_for(spec, factory, work_dir) as endpoint, contextlib.ExitStack() as arms:
            server_threads = thread_ids() - threads_before  # an in-process registry's
            pids = endpoint_pids(endpoint.details, registry_in_process=bool(server_threads))
            isolation = {"cpus": cpu_plan.to_dict(), "describe": cpu_plan.describe(),
                         "applied": apply_plan(cpu_plan, pids, server_threads),
                         "puller_nice": nice_of()}
            logger.info("CPU affinity: %s", cpu_plan.describe())
            run_context = {
                "measured_pids": {r: p for r, p in pids.items()},
                "puller_cpus": list(cpu_plan.puller) if cpu_plan.puller else None,
                "exclusive_puller": cpu_plan.exclusive_puller,
                "restore_affinity": spec.isolation == "inprocess",
            }
            images = _prepare_images(spec, endpoint,
                                     Path(image_cache_dir) if image_cache_dir else None)
            from ._arms import describe_external, external_arms

            external = arms.enter_context(external_arms(spec, endpoint, images))
            _check_disk(store_root, [i.size_bytes or 0 for i in images],
                        work_dir if spec.registry in ("embedded", "distribution") else None,
                        exact=True)
            by_name = {i.name: i for i in images}
            store.write_json(SPEC_JSON, spec.to_dict())
            if not resume or store.read_json(ENVIRONMENT_JSON) is None:
                from ._env import capture_environment

                store.write_json(ENVIRONMENT_JSON, capture_environment(
                    spec=spec.to_dict(), registry=endpoint.describe(),
                    images=[i.describe() for i in images], dest_dir=store_root,
                    extra={"cache_policy": spec.cache_policy, "isolation": spec.isolation,
                           "pull_function": pull_function,
                           **({"external_arms": describe_external(external)} if external else {}),
                           **(notes or {})},
                    preflight=preflight_check, cpu_isolation=isolation,
                ))
            else:
                _record_resume(store, endpoint, images)
            bar = _progress_bar(len(plan), len(plan) - len(todo), progress)
            try:
                for planned in todo:
                    if max_runs is not None and new >= max_runs:
                        break
                    bar.set_postfix_str(f"block {planned.block} {planned.arm}", refresh=False)
                    if before_run is not None:
                        before_run(planned)
                    row = _one_run(spec, planned, by_name[planned.image], endpoint, store_root,
                                   cache_state, pull_function, run_timeout_s, run_context,
                                   external)
                    store.append(row)
                    new += 1
                    if row["status"] == "ok":
                        ok += 1
                    else:
                        err += 1
                        logger.warning("run %d (%s) failed: %s", planned.run_index, planned.arm,
                                       row["error"])
                    bar.update(1)
            except KeyboardInterrupt:
                interrupted = True
            except DaemonDied as exc:
                stopped = exc
            finally:
                bar.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if not spec.dest_dir:
            shutil.rmtree(store_root, ignore_errors=True)
    if store.rows_path.exists():
        consolidate_results(store.directory)
        _record_end(store, new, interrupted)
    if stopped is not None:
        raise BenchmarkError(
            f"experiment stopped: {stopped}\n{len(rows) + new} of {len(plan)} runs kept in "
            f"{store.directory}; continue with: pullbench bench --resume {store.directory}"
        ) from stopped
    result = ExperimentResult(
        directory=store.directory, spec=spec, planned_runs=len(plan),
        completed_runs=len(rows) + new, ok_runs=ok, error_runs=err,
        resumed_runs=len(plan) - len(todo), interrupted=interrupted,
    )
    if interrupted and result.completed_runs == 0:
        raise ExperimentInterrupted("interrupted before the first run finished; nothing was "
                                    "recorded", result=result)
    if interrupted:
        raise ExperimentInterrupted(
            f"interrupted: {result.completed_runs} of {result.planned_runs} runs kept in "
            f"{store.directory}; continue with: pullbench bench --resume {store.directory}",
            result=result,
        )
    return result


def _record_resume(store: ResultsStore, endpoint: Endpoint, images: list[ImageInfo]) -> None:
    env = store.read_json(ENVIRONMENT_JSON) or {}
    sessions = env.setdefault("resumed_sessions", [])
    sessions.append({
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "registry": endpoint.describe(),
        "images": [i.describe() for i in images],
    })
    old = {i.get("name"): i.get("digest") for i in env.get("images", [])}
    changed = [i.name for i in images if old.get(i.name) not in (None, i.digest)]
    if changed:
        logger.warning("image digests changed since the experiment started: %s", changed)
        sessions[-1]["digest_changed"] = changed
    store.write_json(ENVIRONMENT_JSON, env)


def _record_end(store: ResultsStore, new_runs: int, interrupted: bool) -> None:
    """Note when a session ended and how loaded the host was (shared machines drift)."""
    env = store.read_json(ENVIRONMENT_JSON)
    if env is None:
        return
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:
        load = None
    env.setdefault("sessions_ended", []).append({
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "new_runs": new_runs, "interrupted": interrupted, "loadavg_1_5_15": load,
    })
    store.write_json(ENVIRONMENT_JSON, env)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="run", file=sys.stderr,
                dynamic_ncols=True, desc="pullbench")


def _one_run(spec: ExperimentSpec, planned: PlannedRun, image: ImageInfo, endpoint: Endpoint,
             store_root: Path, cache_state: str, pull_function: str,
             run_timeout_s: float, run_context: Mapping[str, Any],
             external: Mapping[str, Any] | None = None) -> dict[str, Any]:
    arm = spec.arm(planned.arm)
    dest = store_root / f"run-{planned.run_index:05d}"
    if store_root.exists():  # the store is always emptied between runs (also after a crash)
        for leftover in store_root.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
    dest.mkdir(parents=True)
    base: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "experiment": spec.name,
        "run_index": planned.run_index,
        "run_id": planned.run_id,
        "block": planned.block,
        "order_in_block": planned.order_in_block,
        "warmup": planned.warmup,
        "arm": arm.name,
        "strategy": arm.strategy,
        "params": arm.params_dict,
        "image": image.name,
        "image_ref": image.reference,
        "image_digest": image.digest,
        "registry_kind": endpoint.kind,
        "registry_version": endpoint.version,
        "network_profile": endpoint.network_profile,
        "tls": endpoint.tls,
        "cache_state": cache_state,
        "isolation": spec.isolation,
        "concurrency": spec.concurrency,
        "probes": spec.probes,
        "cpus": spec.cpus,
        "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "status": "ok",
        "error": None,
    }
    if external and arm.name in external:  # a puller pullbench does not own (pullbench.arms)
        from ._arms import run_external

        if spec.cache_policy == "drop":
            drop_page_cache()
        ext = external[arm.name]
        measured = dict(run_context.get("measured_pids") or {})
        if ext.daemon is not None and ext.daemon.pid:
            measured["daemon"] = ext.daemon.pid  # and its children (dockerd's containerd)
        # the client is this process's child, waited for inside the run: RUSAGE_CHILDREN
        probe = (InterferenceProbe(measured, puller_cpus=run_context.get("puller_cpus"),
                                   include_children=True)
                 if run_context.get("interference", True) else None)
        try:
            started = time.perf_counter()
            if probe is not None:
                probe.start()
            try:
                status, payload = run_external(ext, image, endpoint, dest, run_timeout_s,
                                               run_context.get("puller_cpus"))
            except BaseException:
                if probe is not None:
                    probe.cancel()
                raise
            interference = probe.stop() if probe is not None else {}
            base["harness_wall_s"] = time.perf_counter() - started
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        return {**base, **interference, **payload, "status": status}
    from ._arms import strategy_arm_columns

    base.update(strategy_arm_columns())
    task = {
        "run_index": planned.run_index, "pull_function": pull_function,
        "reference": image.reference, "strategy": arm.strategy, "params": arm.params_dict,
        "dest": str(dest), "concurrency": spec.concurrency, "plain_http": endpoint.plain_http,
        "ca_bundle": endpoint.ca_bundle, "probes": spec.probes, "unpack": list(arm.unpack),
        "proxy_pid": endpoint.details.get("network", {}).get("proxy_pid"),
        **run_context,
    }
    try:
        if spec.cache_policy == "drop":
            drop_page_cache()
        started = time.perf_counter()
        if spec.isolation == "process":
            status, payload = _run_in_worker(task, run_timeout_s)
        else:
            status, payload = _run_inprocess(task)
        base["harness_wall_s"] = time.perf_counter() - started
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    if status == "ok":
        return _merge_rows(base, payload)
    base["status"] = "error"
    base["error"] = str(payload)
    return base
