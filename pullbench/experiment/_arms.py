"""The runner's seam for external arms (:mod:`pullbench.arms`): check, start, run, stop.

Arms whose ``kind`` is not ``strategy`` are built and checked in the preflight (kind and
parameters), started once per experiment after the images are pushed (binaries found, daemons
up, with one clear error carrying the daemon's log tail before any run), and each of their
planned runs is made in this process by :meth:`pullbench.arms.ExternalArm.run` (the puller is a
separate process anyway). Every row gets ``arm_kind``, ``arm_binary`` and ``arm_version``;
environment.json gets each arm's :meth:`~pullbench.arms.ExternalArm.describe`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..arms import ExternalArm
    from ._endpoints import Endpoint
    from ._spec import ArmSpec, ExperimentSpec

__all__ = ["arm_resource_table", "check_external_arms", "external_arms", "run_external",
           "strategy_arm_columns"]


def _build(arm: ArmSpec) -> ExternalArm:
    from ..arms import make_arm

    return make_arm(arm.kind, arm.name, arm.params_dict)


def check_external_arms(spec: ExperimentSpec) -> None:
    """Build every external arm once (kind and parameters checked), nothing started.

    Raises
    ------
    pullbench.arms.ArmError
        Unknown kind or parameter; the message names the arm.
    """
    for arm in spec.arms:
        if arm.external:
            _build(arm)


@contextlib.contextmanager
def external_arms(spec: ExperimentSpec, endpoint: Endpoint,
                  images: list[Any]) -> Iterator[dict[str, ExternalArm]]:
    """Start the spec's external arms for ``images`` at ``endpoint``; stop them on exit.

    Yields ``{arm name: started arm}`` (empty when the spec has none). Leaving the block --
    normally, by an error or by Ctrl-C -- stops every daemon and removes every file they made.

    Raises
    ------
    ServerError, DaemonError
        A binary is missing or a daemon did not start (before any run).
    """
    targets = [target_for(image, endpoint) for image in images]
    with contextlib.ExitStack() as stack:
        started: dict[str, ExternalArm] = {}
        for arm in spec.arms:
            if not arm.external:
                continue
            obj = stack.enter_context(_build(arm))
            obj.start(targets)
            started[arm.name] = obj
        yield started


def target_for(image: Any, endpoint: Endpoint) -> Any:
    """The :class:`pullbench.arms.PullTarget` of an :class:`~pullbench.ImageInfo`."""
    from ..arms import PullTarget

    return PullTarget.from_reference(image.reference, digest=image.digest,
                                     plain_http=endpoint.plain_http,
                                     ca_bundle=endpoint.ca_bundle, size_bytes=image.size_bytes)


def run_external(arm: ExternalArm, image: Any, endpoint: Endpoint, dest: Path,
                 timeout_s: float, puller_cpus: Sequence[int] | None = None
                 ) -> tuple[str, dict[str, Any]]:
    """One planned run of an external arm: ``(status, row columns)``.

    With ``puller_cpus`` (the runner's CPU plan) the daemon tree and the client run on the
    puller's CPUs, as a strategy's worker does: the daemon's threads are pinned before the
    run (children it starts inherit that), and the client inherits it from the calling thread,
    pinned for the run only. The shaping proxy's CPU (``proxy_cpu_s``) is added when the
    endpoint has one, as for the strategies.

    Raises
    ------
    pullbench.arms.DaemonDied
        The arm's daemon died and could not be restarted: the experiment stops.
    """
    from ._isolation import format_cpu_list, pin_process

    proxy_pid = endpoint.details.get("network", {}).get("proxy_pid")
    saved = None
    if puller_cpus:
        if arm.daemon is not None and arm.daemon.pid:
            pin_process(arm.daemon.pid, puller_cpus)
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(puller_cpus))
    try:
        before = _cpu_s(proxy_pid)
        row = arm.run(target_for(image, endpoint), dest, timeout_s=timeout_s)
        if proxy_pid:
            row["proxy_cpu_s"] = _cpu_s(proxy_pid) - before
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)
    row["puller_cpus"] = format_cpu_list(puller_cpus) if puller_cpus else None
    return str(row["status"]), row


def _cpu_s(pid: int | None) -> float:
    if not pid:
        return 0.0
    from ._endpoints import process_cpu_s

    return process_cpu_s(int(pid))


def strategy_arm_columns() -> dict[str, Any]:
    """``arm_kind``/``arm_binary``/``arm_version`` of a strategy arm (this Python, pullbench)."""
    from .._version import __version__

    return {"arm_kind": "strategy", "arm_binary": sys.executable, "arm_version": __version__}


def describe_external(arms: Mapping[str, ExternalArm]) -> list[dict[str, Any]]:
    """Each started arm's description, for environment.json."""
    return [arm.describe() for arm in arms.values()]


def arm_resource_table(rows: Any, by: Sequence[str] = ("arm",)) -> Any:
    """Per-arm medians of what a pull cost, client and daemon apart (ok, analysed runs only).

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows as returned by :func:`pullbench.load_results` (strategies and external arms;
        warm-up and failed runs are left out here).
    by : sequence of str
        Grouping columns (default ``("arm",)``; e.g. ``("setting", "arm")``).

    Returns
    -------
    pandas.DataFrame
        One row per group: ``arm_kind``, ``traced``, ``n``, and medians of ``duration_s``,
        ``client_cpu_s`` (a strategy's pull threads are its client), ``daemon_cpu_s`` (0 without
        a daemon), ``cpu_s`` (both), ``peak_rss_bytes``, ``daemon_peak_rss_bytes``,
        ``median_write_bytes`` (traced external arms and strategies with probes; else NaN),
        ``prepare_s`` (external arms' untimed management per run).
    """
    import numpy as np
    import pandas as pd

    df = rows[(rows["status"] == "ok") & ~rows["warmup"].astype(bool)].copy()

    def col(name: str) -> Any:
        return df[name] if name in df.columns else pd.Series(np.nan, index=df.index)

    kind = col("arm_kind").fillna("strategy")
    external = kind != "strategy"
    df["arm_kind"] = kind
    df["traced"] = col("traced").fillna(False).astype(bool)
    client = (col("client_cpu_user_s") + col("client_cpu_sys_s")).where(
        external, col("cpu_user_s") + col("cpu_sys_s"))
    df["client_cpu_s"] = client
    df["daemon_cpu_s"] = (col("daemon_cpu_user_s") + col("daemon_cpu_sys_s")).fillna(0.0)
    df["cpu_s"] = col("cpu_user_s") + col("cpu_sys_s")
    for name in ("peak_rss_bytes", "daemon_peak_rss_bytes", "median_write_bytes", "prepare_s"):
        df[name] = pd.to_numeric(col(name), errors="coerce")
    medians = ["duration_s", "client_cpu_s", "daemon_cpu_s", "cpu_s", "peak_rss_bytes",
               "daemon_peak_rss_bytes", "median_write_bytes", "prepare_s"]
    grouped = df.groupby(list(by), sort=False)
    out = grouped[medians].median()
    out.insert(0, "n", grouped.size())
    out.insert(0, "traced", grouped["traced"].first())
    out.insert(0, "arm_kind", grouped["arm_kind"].first())
    return out.reset_index()
