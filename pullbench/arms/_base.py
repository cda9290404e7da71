"""What every external arm shares: the pull target, parameters, and one measured run.

An :class:`ExternalArm` is a puller pullbench does not own (a shell command, skopeo, ctr,
docker). The runner treats it like a copy strategy: one object per arm, started once per
experiment (:meth:`~ExternalArm.start`: daemons, ``setup``), then for every planned run
:meth:`~ExternalArm.run`, which does, in order::

    daemon alive?          (a dead daemon is restarted; the run is then made)
    prepare  (untimed)     the arm's cold state: remove what the last run stored, and verify it
                           is gone (prepare_s, of which cold_check_s is the verification)
    probes on              daemon tree CPU/IO/RSS snapshot; strace attached if traced
    pull     (timed)       the client process, wall time from fork to wait4 only
    probes off
    verify   (untimed)     the image is really there (else status=error)
    cleanup  (untimed)

and returns one row: the strategies' columns where the meaning is the same (``duration_s``,
``cpu_user_s``/``cpu_sys_s`` of client plus daemon tree, ``wchar``, ``peak_rss_bytes``,
``write_size_hist`` ...), and ``client_*`` / ``daemon_*`` columns that keep them apart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .._errors import (
    ArmError,
    BenchmarkError,
    ColdStateError,
    DaemonDied,
    DaemonError,
    PullbenchError,
)
from ._daemons import ManagedDaemon
from ._probes import ClientResult, TreeProbe, TreeSample, run_client
from ._trace import StraceSession, TraceResult

__all__ = ["ArmError", "ColdStateError", "ExternalArm", "PullTarget"]

logger = logging.getLogger(__name__)

#: A daemon that dies is restarted this many times per experiment before the experiment stops.
MAX_RESTARTS = 2


@dataclass(frozen=True, slots=True)
class PullTarget:
    """The image one run pulls, as every external puller needs it.

    Attributes
    ----------
    reference : str
        ``host:port/repository:tag`` at the endpoint (what a strategy pulls too).
    registry : str
        ``host:port``.
    repository : str
    tag : str or None
    digest : str or None
        Manifest digest (``sha256:...``) when known.
    plain_http : bool
        The endpoint speaks plain HTTP.
    ca_bundle : str or None
        PEM CA bundle that signs the endpoint's certificate (pullbench's own CA).
    size_bytes : int or None
        Bytes the pull transfers (the image's blobs), for throughput and CPU per byte.
    """

    reference: str
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    plain_http: bool = True
    ca_bundle: str | None = None
    size_bytes: int | None = None

    @classmethod
    def from_reference(cls, reference: str, *, digest: str | None = None,
                       plain_http: bool = True, ca_bundle: str | None = None,
                       size_bytes: int | None = None) -> PullTarget:
        """Split ``reference`` (``host:port/repo:tag``) into a target."""
        from .._reference import parse_reference

        ref = parse_reference(reference)
        return cls(reference=reference, registry=ref.registry, repository=ref.repository,
                   tag=ref.tag, digest=digest or ref.digest, plain_http=plain_http,
                   ca_bundle=ca_bundle, size_bytes=size_bytes)

    @property
    def host(self) -> str:
        """The registry's host (no port)."""
        return self.registry.rsplit(":", 1)[0].strip("[]") if ":" in self.registry else (
            self.registry)

    @property
    def port(self) -> int:
        """The registry's port (443 / 80 when the reference has none)."""
        host, sep, port = self.registry.rpartition(":")
        if sep and port.isdigit() and not host.endswith(":"):
            return int(port)
        return 80 if self.plain_http else 443

    @property
    def url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.registry}"

    @property
    def is_loopback(self) -> bool:
        import ipaddress

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class ExternalArm:
    """Base of the external arms (see the module docstring for one run).

    Subclasses set :attr:`kind`, :attr:`parameters` (name -> default; the accepted types are
    the defaults' types), :attr:`trace_file_pattern`, and implement :meth:`pull_argv`; they
    may override :meth:`start`, :meth:`prepare`, :meth:`verify`, :meth:`cleanup`,
    :meth:`describe`.

    Parameters
    ----------
    name : str
        The arm's name in the experiment.
    params : Mapping
        Overrides of :attr:`parameters`.

    Raises
    ------
    ArmError
        Unknown parameter or a value of the wrong type.
    """

    kind: ClassVar[str] = ""
    #: Parameters and their defaults; ``trace`` (bool) is accepted by every kind.
    parameters: ClassVar[dict[str, Any]] = {}
    #: Paths of the layer temp files the puller writes (searched in strace's fd paths).
    trace_file_pattern: ClassVar[re.Pattern[str]] = re.compile(r"$^")
    #: Trace the client process too (it is the puller: skopeo, a command; ctr fetches itself).
    trace_client: ClassVar[bool] = True

    def __init__(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        self.name = name
        allowed = {"trace": False, **self.parameters}
        given = dict(params or {})
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ArmError(
                f"arm {name!r} ({self.kind}): unknown parameter(s) {unknown}; "
                f"{self.kind} takes: {', '.join(sorted(allowed))}"
            )
        values = {**allowed, **given}
        for key, value in given.items():
            default = allowed[key]
            if default is not None and not _type_ok(value, default):
                raise ArmError(
                    f"arm {name!r} ({self.kind}): parameter {key}={value!r} must be "
                    f"{type(default).__name__}"
                )
        self.params: dict[str, Any] = values
        self.trace = bool(values["trace"])
        self.daemon: ManagedDaemon | None = None
        self.client_binary = ""
        self.client_version = "unknown"
        self._work: Path | None = None
        self._targets: list[PullTarget] = []

    # --- experiment lifecycle ---------------------------------------------------------------------
    def start(self, targets: list[PullTarget]) -> None:
        """Once per experiment, before any run: check binaries, start daemons, write config.

        Raises
        ------
        ServerError, DaemonError
            A binary is missing (names the Debian package) or a daemon did not start (with
            its log tail).
        """
        self._targets = list(targets)
        self._work = Path(tempfile.mkdtemp(prefix=f"pullbench-arm-{self.kind}-"))
        if self.trace:
            from ._trace import find_strace

            find_strace()

    @property
    def work(self) -> Path:
        if self._work is None:
            raise BenchmarkError(f"arm {self.name!r} is not started; call start() first")
        return self._work

    def close(self) -> None:
        """Stop daemons and remove every file the arm made (safe to call twice)."""
        daemon, self.daemon = self.daemon, None
        if daemon is not None:
            daemon.close()
        work, self._work = self._work, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> ExternalArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """JSON-able description for rows and ``environment.json``: kind, binary, version."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "binary": self.client_binary, "version": self.client_version,
                               "params": dict(self.params)}
        if self.daemon is not None:
            out["daemon"] = self.daemon.describe()
        return out

    # --- one run --------------------------------------------------------------------------------
    def prepare(self, target: PullTarget, dest: Path) -> float:
        """Untimed, before the pull: make the state cold and verify it; return the check's s."""
        return 0.0

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        """The timed command."""
        raise NotImplementedError

    def trace_pattern(self, dest: Path) -> re.Pattern[str]:
        """The layer temp files of this run (default :attr:`trace_file_pattern`)."""
        return self.trace_file_pattern

    def client_env(self) -> dict[str, str] | None:
        """Environment of the client (None: inherit)."""
        return None

    def verify(self, target: PullTarget, dest: Path) -> dict[str, Any]:
        """Untimed, after a successful pull: check the image is there; return extra columns.

        Raises
        ------
        PullbenchError
            It is not (the run becomes ``status=error``).
        """
        return {}

    def cleanup(self, target: PullTarget, dest: Path) -> None:
        """Untimed, after the run."""

    def columns(self, target: PullTarget) -> dict[str, Any]:
        """Columns describing how this arm reaches ``target`` (in every row)."""
        return {"tls_verified": not target.plain_http}

    def ensure_daemon(self) -> None:
        """Restart a daemon that died (at most :data:`MAX_RESTARTS` times per experiment).

        Raises
        ------
        DaemonDied
            It died again after the last allowed restart, or could not be restarted.
        """
        daemon = self.daemon
        if daemon is None or daemon.running:
            return
        try:
            daemon.check_alive()
        except DaemonDied as exc:
            if daemon.restarts >= MAX_RESTARTS:
                raise DaemonDied(f"arm {self.name!r}: {exc} (restarted {daemon.restarts} times "
                                 "already; stopping the experiment)", kind=exc.kind,
                                 log_tail=exc.log_tail) from exc
            logger.warning("arm %s: %s; restarting it", self.name, exc)
            try:
                daemon.restart()
            except DaemonError as again:
                raise DaemonDied(f"arm {self.name!r}: {daemon.kind} died and could not be "
                                 f"restarted: {again}", kind=daemon.kind,
                                 log_tail=again.log_tail) from again

    def run(self, target: PullTarget, dest: Path, *, timeout_s: float = 900.0) -> dict[str, Any]:
        """Make one measured run (see the module docstring); return its row.

        A failing pull, a failed cold-state check or a failed verification gives
        ``status="error"`` with the puller's or daemon's message; the row's other columns are
        those that were measured.

        Raises
        ------
        DaemonDied
            The daemon died and could not be restarted (the experiment should stop).
        """
        row: dict[str, Any] = {
            "arm_kind": self.kind, "arm_binary": self.client_binary,
            "arm_version": self.client_version, "traced": self.trace, "status": "ok",
            "error": None,
        }
        if self.daemon is not None:
            row["daemon_binary"] = self.daemon.binary
            row["daemon_version"] = self.daemon.version
        row.update(self.columns(target))
        self.ensure_daemon()
        dest.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            row["cold_check_s"] = self.prepare(target, dest)
        except PullbenchError as exc:
            row.update(status="error", error=f"prepare: {exc}",
                       prepare_s=time.perf_counter() - started)
            self._daemon_note(row)
            return row
        row["prepare_s"] = time.perf_counter() - started
        roots = [self.daemon.pid] if self.daemon is not None and self.daemon.pid else []
        argv = self.pull_argv(target, dest)
        tracer = (StraceSession(self.work / "trace", file_pattern=self.trace_pattern(dest),
                                registry_port=target.port) if self.trace else None)
        probe = TreeProbe(roots)
        try:
            if tracer is not None:
                tracer.attach(probe.tree() if roots else [])
                if self.trace_client:
                    argv = tracer.wrap(argv)
            probe.start()
            try:
                client = run_client(argv, env=self.client_env(), timeout_s=timeout_s)
            finally:  # Ctrl-C included: the sampling thread ends with the run
                tree = probe.stop()
            trace = tracer.stop() if tracer is not None else None
        finally:
            if tracer is not None:
                tracer.close()
        row.update(_measured(client, tree, trace, target))
        if client.returncode != 0:
            message = client.stderr_tail or client.stdout_tail or "(no output)"
            what = "timed out" if client.timed_out else f"exit {client.returncode}"
            row.update(status="error", error=f"{self.kind} pull failed ({what}): {message}")
            self._daemon_note(row)
        else:
            try:
                row.update(self.verify(target, dest))
            except PullbenchError as exc:
                row.update(status="error", error=f"verify: {exc}")
        with contextlib.suppress(PullbenchError):
            self.cleanup(target, dest)
        return row

    def _daemon_note(self, row: dict[str, Any]) -> None:
        """Add why the daemon failed to an error row (its log tail) when it has died."""
        if self.daemon is not None and not self.daemon.running:
            row["error"] = f"{row['error']}; {self.daemon.kind} died: {self.daemon.log_tail(800)}"


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _measured(client: ClientResult, tree: TreeSample, trace: TraceResult | None,
              target: PullTarget) -> dict[str, Any]:
    cpu_user = client.cpu_user_s + tree.cpu_user_s
    cpu_sys = client.cpu_sys_s + tree.cpu_sys_s
    size = target.size_bytes
    row: dict[str, Any] = {
        "duration_s": client.wall_s,
        "pull_wall_s": client.wall_s,
        "client_cpu_user_s": client.cpu_user_s,
        "client_cpu_sys_s": client.cpu_sys_s,
        "client_peak_rss_bytes": client.peak_rss_bytes,
        "daemon_cpu_user_s": tree.cpu_user_s,
        "daemon_cpu_sys_s": tree.cpu_sys_s,
        "daemon_peak_rss_bytes": tree.peak_rss_bytes if tree.pids else None,
        "daemon_hwm_sum_rss_bytes": tree.hwm_sum_rss_bytes,
        "daemon_wchar": tree.io["wchar"],
        "daemon_rchar": tree.io["rchar"],
        "daemon_write_bytes": tree.io["write_bytes"],
        "daemon_pids": list(tree.pids),
        "cpu_user_s": cpu_user,
        "cpu_sys_s": cpu_sys,
        "peak_rss_bytes": client.peak_rss_bytes + (tree.peak_rss_bytes if tree.pids else 0),
        "total_bytes": size,
        "bytes": size,
        "throughput_mb_s": (size / client.wall_s / 1e6) if size and client.wall_s > 0 else None,
        "client_returncode": client.returncode,
    }
    if trace is not None:
        row.update(trace.to_row())
    return row
