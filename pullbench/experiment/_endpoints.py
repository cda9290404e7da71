"""Where the puller connects: registry factories, network-profile and TLS layers.

A *registry factory* ``(spec, work_dir) -> context manager yielding an Endpoint`` makes the base
registry from the spec (:func:`default_registry_factory`: embedded, Distribution or a URL;
:func:`remote_registry_factory`: the same, serving TLS natively when ``spec.tls``). *Endpoint
layers* (:func:`register_network_profile`, :func:`register_tls_layer`) wrap an endpoint, e.g. a
shaping proxy in front of it (:func:`shaped_endpoint`, registered for every proxied profile), and
say what the puller must connect to. What a layer wants recorded goes into ``Endpoint.details``
(the proxy's pid travels to each worker from there). ``details["pids"]`` maps roles to the
processes that serve or pull for the experiment (``registry`` for Distribution; any other role,
e.g. ``dockerd``, for an arm's daemons): the runner counts them in the measured set of the
interference probes and pins them to CPUs (:mod:`pullbench.experiment._isolation`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import BenchmarkError, RegistryUnavailable
from ..puller._pipeline import pull
from ..servers._distribution import DistributionRegistry
from ..servers._embedded import EmbeddedRegistry
from ..servers._proxy import (
    PROFILES,
    NetworkProfile,
    NetworkProfileError,
    ShapingProxy,
    _proc_cpu_s,
    get_profile,
)
from ..servers._tls import make_tls_material
from ._spec import ExperimentSpec

__all__ = [
    "Endpoint",
    "EndpointLayer",
    "RegistryFactory",
    "add_profile",
    "default_registry_factory",
    "network_profiles",
    "process_cpu_s",
    "pull_recording_proxy_cpu",
    "register_network_profile",
    "register_runner_layers",
    "register_tls_layer",
    "remote_registry_factory",
    "shaped_endpoint",
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the puller connects, and what to record about it.

    Attributes
    ----------
    host : str
        ``host:port`` used in image references.
    url : str
        Base URL (``http://127.0.0.1:5000``).
    plain_http : bool
        True for HTTP, False for HTTPS.
    ca_bundle : str or None
        CA bundle the puller must trust (TLS layers set it).
    kind : str
        ``embedded``, ``distribution`` or ``external``.
    version : str
        Registry version string.
    network_profile : str
        Profile name between puller and registry (``loopback`` unless a layer changed it).
    tls : bool
        Whether the puller speaks TLS.
    details : dict
        Anything else a layer wants recorded in ``environment.json`` (shaping parameters...).
    """

    host: str
    url: str
    plain_http: bool = True
    ca_bundle: str | None = None
    kind: str = "external"
    version: str = "unknown"
    network_profile: str = "loopback"
    tls: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``environment.json``."""
        return {
            "host": self.host, "url": self.url, "plain_http": self.plain_http,
            "ca_bundle": self.ca_bundle, "kind": self.kind, "version": self.version,
            "network_profile": self.network_profile, "tls": self.tls, "details": dict(self.details),
        }


#: ``(spec, work_dir) -> context manager yielding the base Endpoint``.
RegistryFactory = Callable[[ExperimentSpec, Path], AbstractContextManager[Endpoint]]
#: ``(spec, endpoint) -> context manager yielding the Endpoint the puller uses``.
EndpointLayer = Callable[[ExperimentSpec, Endpoint], AbstractContextManager[Endpoint]]

_NETWORK_PROFILES: dict[str, EndpointLayer] = {}
_TLS_LAYER: list[EndpointLayer] = []


def register_network_profile(name: str, layer: EndpointLayer) -> None:
    """Make ``network_profile=name`` usable in specs.

    Parameters
    ----------
    name : str
        Profile name (``loopback`` is built in and cannot be replaced).
    layer : callable
        ``layer(spec, endpoint)`` returns a context manager yielding the endpoint the puller must
        use (e.g. a shaping proxy in front of ``endpoint``) with ``network_profile=name``.
    """
    if name == "loopback":
        raise BenchmarkError("the 'loopback' network profile is built in")
    _NETWORK_PROFILES[name] = layer


def register_tls_layer(layer: EndpointLayer) -> None:
    """Make ``tls=True`` usable: ``layer(spec, endpoint)`` yields a TLS endpoint."""
    _TLS_LAYER[:] = [layer]


def network_profiles() -> list[str]:
    """Names of the usable network profiles."""
    return ["loopback", *sorted(_NETWORK_PROFILES)]


def _check_reachable(url: str, timeout_s: float = 5.0, ca_bundle: str | None = None) -> None:
    import requests

    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(f"{url.rstrip('/')}/v2/", timeout=timeout_s,
                                   verify=ca_bundle if ca_bundle else True)
    except requests.RequestException as exc:
        from ..puller._client import _root_cause

        raise RegistryUnavailable(
            f"registry {url} is not reachable ({_root_cause(exc)[1]}); "
            "start it, or use --registry embedded", registry=url,
        ) from exc
    if response.status_code not in (200, 401):
        raise RegistryUnavailable(
            f"registry {url} answered GET /v2/ with HTTP {response.status_code}; "
            "is this an OCI distribution registry?", registry=url,
        )


@contextlib.contextmanager
def default_registry_factory(spec: ExperimentSpec, work_dir: Path) -> Iterator[Endpoint]:
    """Start (or reach) the registry named by ``spec.registry``.

    ``embedded``: :class:`pullbench.servers.EmbeddedRegistry` with its storage under ``work_dir``;
    ``distribution``: :class:`pullbench.servers.DistributionRegistry` (Debian's docker-registry);
    a URL: an already running registry, checked with ``GET /v2/``.

    Raises
    ------
    RegistryUnavailable
        The URL cannot be reached.
    ServerError
        The registry could not be started (the message names the fix).
    """
    if spec.registry in ("embedded", "distribution"):
        cls: Any = EmbeddedRegistry if spec.registry == "embedded" else DistributionRegistry
        root = work_dir / f"{spec.registry}-storage"
        root.mkdir(parents=True, exist_ok=True)
        with cls(root) as reg:
            yield Endpoint(
                host=reg.host, url=reg.url, plain_http=reg.url.startswith("http://"),
                kind=str(getattr(reg, "kind", spec.registry)),
                version=str(getattr(reg, "version", "unknown")), details=_pid_details(reg),
            )
        return
    url = spec.registry.rstrip("/")
    _check_reachable(url)
    host = url.split("://", 1)[1].split("/", 1)[0]
    yield Endpoint(host=host, url=url, plain_http=url.startswith("http://"), kind="external")


def _pid_details(reg: Any) -> dict[str, Any]:
    """``{"pids": {"registry": pid}}`` for a registry in its own process (Distribution)."""
    pid = getattr(reg, "pid", None)
    return {"pids": {"registry": pid}} if isinstance(pid, int) and pid > 0 else {}


@contextlib.contextmanager
def _endpoint_for(spec: ExperimentSpec, factory: RegistryFactory,
                  work_dir: Path) -> Iterator[Endpoint]:
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(factory(spec, work_dir))
        if spec.tls and not endpoint.tls:
            if not _TLS_LAYER:
                raise BenchmarkError(
                    "tls=True needs a TLS layer (pullbench.register_tls_layer); none is registered"
                )
            endpoint = stack.enter_context(_TLS_LAYER[0](spec, endpoint))
        if spec.network_profile != "loopback":
            layer = _NETWORK_PROFILES.get(spec.network_profile)
            if layer is None:
                raise BenchmarkError(_unknown_profile_message(spec.network_profile))
            endpoint = stack.enter_context(layer(spec, endpoint))
        yield endpoint


def _unknown_profile_message(name: str) -> str:
    return (f"unknown network profile {name!r}; choose one of {', '.join(network_profiles())} "
            "(`pullbench net profiles` describes them)")


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far, seconds (0.0 if it is gone)."""
    try:
        return _proc_cpu_s(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def add_profile(profile: NetworkProfile) -> None:
    """Add a custom profile under ``profile.name`` and make it usable in experiment specs.

    Raises
    ------
    NetworkProfileError
        The name is a built-in one.
    """
    if profile.name in ("loopback", "passthrough", "lan-1g", "wan-200m", "wan-50m"):
        raise NetworkProfileError(f"{profile.name!r} is a built-in network profile")
    PROFILES[profile.name] = profile
    register_network_profile(profile.name, shaped_endpoint)


@contextlib.contextmanager
def shaped_endpoint(spec: Any, endpoint: Any) -> Iterator[Any]:
    """Endpoint layer for the experiment runner: a shaping proxy in front of ``endpoint``.

    ``spec.network_profile`` names the profile (see :func:`get_profile`). The yielded endpoint
    points at the proxy and records the profile and the proxy's pid in ``details``; each run's
    ``proxy_cpu_s`` is measured by :func:`pull_recording_proxy_cpu` (see its docstring).

    Raises
    ------
    NetworkProfileError
        Unknown profile (lists the known ones).
    RegistryUnavailable
        The proxy cannot reach the registry (before any run).
    """
    profile = get_profile(spec.network_profile)
    if not profile.use_proxy:
        yield endpoint
        return
    host, _, port = endpoint.host.rpartition(":")
    scheme = endpoint.url.split("://", 1)[0]
    with ShapingProxy((host, int(port)), profile) as proxy:
        assert proxy.pid is not None
        details = dict(endpoint.details)
        details["network"] = {**profile.to_dict(), "proxy_pid": proxy.pid,
                              "upstream": endpoint.host}
        yield dataclasses.replace(endpoint, host=proxy.address,
                                  url=f"{scheme}://{proxy.address}",
                                  network_profile=profile.name, details=details)


@contextlib.contextmanager
def remote_registry_factory(spec: Any, work_dir: Path) -> Iterator[Any]:
    """Registry factory for the runner that serves TLS natively when ``spec.tls`` is true.

    ``embedded`` → :class:`EmbeddedRegistry` with an ``ssl_context``; ``distribution`` →
    :class:`DistributionRegistry` with ``tls_cert``/``tls_key`` (Go's TLS server), both with
    trustme material under ``work_dir`` whose CA bundle is handed to the puller. Without
    ``spec.tls`` (or for a URL) it is the runner's default factory.
    """
    if not spec.tls or spec.registry not in ("embedded", "distribution"):
        with default_registry_factory(spec, work_dir) as endpoint:
            yield endpoint
        return
    material = make_tls_material(work_dir / "tls")
    root = work_dir / f"{spec.registry}-storage"
    root.mkdir(parents=True, exist_ok=True)
    reg: Any
    if spec.registry == "embedded":
        reg = EmbeddedRegistry(root, ssl_context=material.server_context())
    else:
        reg = DistributionRegistry(root, tls_cert=material.cert_chain, tls_key=material.key)
    with reg:
        yield Endpoint(
            host=reg.host, url=reg.url, plain_http=False, ca_bundle=str(material.ca_bundle),
            kind=str(getattr(reg, "kind", spec.registry)),
            version=str(getattr(reg, "version", "unknown")), tls=True,
            details={"tls": {"ca_bundle": str(material.ca_bundle), "native": True},
                     **_pid_details(reg)},
        )


@contextlib.contextmanager
def _tls_layer_unavailable(spec: Any, endpoint: Any) -> Iterator[Any]:
    raise BenchmarkError(
        "tls=True: the registry must serve TLS itself; run the experiment with "
        "registry_factory=pullbench.remote_registry_factory (it starts the embedded registry or "
        "Distribution with trustme certificates)"
    )
    yield endpoint  # pragma: no cover


def pull_recording_proxy_cpu(reference: str, strategy: Any, dest: Any, *,
                             proxy_pid: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`pullbench.pull`, plus ``proxy_cpu_s``: the shaping proxy's CPU during this pull.

    Parameters
    ----------
    reference, strategy, dest, **kwargs
        As for :func:`pullbench.pull`.
    proxy_pid : int or None
        The shaping proxy's process id (``Endpoint.details["network"]["proxy_pid"]``; the runner
        passes it to every worker). None: no proxy, ``proxy_cpu_s`` is 0.0.

    Returns
    -------
    dict
        The result's row (:meth:`PullResult.to_row`) with ``proxy_cpu_s`` (seconds).
    """
    before = process_cpu_s(proxy_pid) if proxy_pid else 0.0
    result = pull(reference, strategy, dest, **kwargs)
    row: dict[str, Any] = result.to_row()
    row["proxy_cpu_s"] = (process_cpu_s(proxy_pid) - before) if proxy_pid else 0.0
    return row


def register_runner_layers() -> None:
    """Register every proxied profile of :data:`pullbench.servers.PROFILES` (including profiles
    added there directly) as a runner network profile, and the TLS layer. Idempotent; done at
    import of this module."""
    for name, profile in PROFILES.items():
        if profile.use_proxy:
            _NETWORK_PROFILES.setdefault(name, shaped_endpoint)
    if not _TLS_LAYER:
        _TLS_LAYER.append(_tls_layer_unavailable)


register_runner_layers()
