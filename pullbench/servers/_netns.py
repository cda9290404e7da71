"""Optional kernel mode (root): the registry in its own network namespace behind a veth pair.

::

    host namespace                       pullbench-<pid>-<i> namespace
    pbh<pid><i> 10.231.<i>.1/30 ══ veth ══ pbn<pid><i> 10.231.<i>.2/30  (the registry listens here)
    egress: tc tbf (requests)              egress: tc tbf (blob bodies)

Bandwidth is the kernel's token bucket filter (``tc qdisc ... tbf``) on both ends. Delay needs
``netem``, which this machine's kernel does not have: then the delay is added by the user-space
shaping proxy with a delay-only profile in front of the namespace (a documented hybrid), or, when
kernel mode is unavailable altogether (not root, no ``ip``/``tc``, no ``tbf``), everything falls
back to :class:`ShapingProxy` on loopback.

Addresses are only ever 10.231.<i>.0/30 **inside the namespace pair this module created**:
traffic stays on this machine. Everything is removed on :meth:`KernelLink.close`, which also runs
at interpreter exit (``atexit``) and after a failed start.

The embedded registry is moved into the namespace by creating its listening socket from a thread
that has called ``setns(2)`` (network namespaces are per thread on Linux). Distribution (Debian's
``docker-registry``) is started under ``ip netns exec NAME`` listening on the namespace's address
(:func:`shaped_distribution_registry`); its readiness probe dials that address through the veth.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from .._errors import ServerError
from ._distribution import DistributionRegistry
from ._embedded import EmbeddedRegistry
from ._nsexec import run_in_netns
from ._proxy import NetworkProfile, ShapingProxy, get_profile

__all__ = [
    "KernelLink",
    "KernelLinkInfo",
    "ShapedRegistry",
    "kernel_mode_available",
    "shaped_distribution_registry",
    "shaped_embedded_registry",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_SUBNET = "10.231"
_LOCK = threading.Lock()


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        raise ServerError(f"kernel mode: `{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc


def kernel_mode_available() -> tuple[bool, str]:
    """Whether kernel mode can run here, and why not.

    Returns
    -------
    (bool, str)
        ``(True, "")`` when root with ``ip`` and ``tc``; otherwise ``(False, reason)``.
    """
    if os.geteuid() != 0:
        return False, "kernel mode needs root (network namespaces, tc); using the shaping proxy"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"kernel mode needs `{tool}` (iproute2); using the shaping proxy"
    return True, ""


@dataclass(frozen=True, slots=True)
class KernelLinkInfo:
    """What a :class:`KernelLink` set up.

    Attributes
    ----------
    namespace : str
    host_interface, namespace_interface : str
    host_address, namespace_address : str
        IPv4 addresses on the /30 (no prefix).
    rate_mbit_s : float or None
        tbf rate on both ends (None: no tbf).
    kernel_delay_ms : float
        One-way delay applied by netem on each end (0 when netem is missing).
    netem : bool
        Whether the kernel had netem.
    """

    namespace: str
    host_interface: str
    namespace_interface: str
    host_address: str
    namespace_address: str
    rate_mbit_s: float | None
    kernel_delay_ms: float
    netem: bool


class KernelLink:
    """A namespace + veth pair shaped by ``tc`` (root only). Use as a context manager.

    Parameters
    ----------
    profile : str or NetworkProfile
        ``bandwidth_mbit_s`` becomes tbf on both ends; ``rtt_ms`` becomes netem delay when the
        kernel has netem (else :attr:`info` ``.netem`` is False and the caller adds the delay).

    Raises
    ------
    ServerError
        Not root, a command failed (the message quotes it), or no free 10.231.x.0/30.
    """

    def __init__(self, profile: str | NetworkProfile) -> None:
        self.profile = get_profile(profile)
        self.info: KernelLinkInfo | None = None
        self._closed = True

    def start(self) -> KernelLink:
        ok, why = kernel_mode_available()
        if not ok:
            raise ServerError(why)
        with _LOCK:
            used = _run("ip", "-o", "-4", "addr", "show").stdout
            namespaces = _run("ip", "netns", "list").stdout
            index = next((i for i in range(256) if f"{_SUBNET}.{i}." not in used
                          and f"pullbench-{os.getpid()}-{i}" not in namespaces), None)
            if index is None:
                raise ServerError(f"kernel mode: no free {_SUBNET}.x.0/30 subnet")
            tag = f"{os.getpid() % 100000}{index}"[-9:]
            info = KernelLinkInfo(
                namespace=f"pullbench-{os.getpid()}-{index}",
                host_interface=f"pbh{tag}", namespace_interface=f"pbn{tag}",
                host_address=f"{_SUBNET}.{index}.1", namespace_address=f"{_SUBNET}.{index}.2",
                rate_mbit_s=self.profile.bandwidth_mbit_s, kernel_delay_ms=0.0, netem=False,
            )
            self.info = info
            self._closed = False
            atexit.register(self.close)
            try:
                self._setup(info)
            except BaseException:
                self.close()
                raise
        return self

    def _setup(self, info: KernelLinkInfo) -> None:
        ns = info.namespace
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", info.host_interface, "type", "veth", "peer", "name",
             info.namespace_interface)
        _run("ip", "link", "set", info.namespace_interface, "netns", ns)
        _run("ip", "addr", "add", f"{info.host_address}/30", "dev", info.host_interface)
        _run("ip", "link", "set", info.host_interface, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{info.namespace_address}/30",
             "dev", info.namespace_interface)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", info.namespace_interface, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        delay_ms = self.profile.rtt_ms / 2
        netem = False
        if delay_ms > 0:
            probe = _run("tc", "qdisc", "add", "dev", info.host_interface, "root", "handle", "1:",
                         "netem", "delay", f"{delay_ms}ms", check=False)
            netem = probe.returncode == 0
            if netem:
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev",
                     info.namespace_interface, "root", "handle", "1:", "netem", "delay",
                     f"{delay_ms}ms")
            else:
                logger.info("kernel mode: no netem in this kernel (%s); the delay is added by "
                            "the user-space proxy", probe.stderr.strip())
        rate = self.profile.bandwidth_mbit_s
        if rate:
            burst = max(int(rate * 1e6 / 8 * 0.01), 32 * 1024)  # 10 ms, like the proxy
            tbf = ["tbf", "rate", f"{rate}mbit", "burst", str(burst), "latency", "50ms"]
            parent = ["parent", "1:1"] if netem else ["root"]
            _run("tc", "qdisc", "add", "dev", info.host_interface, *parent, *tbf)
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", info.namespace_interface,
                 *parent, *tbf)
        self.info = replace(info, netem=netem, kernel_delay_ms=delay_ms if netem else 0.0)
        logger.info("kernel link %s", self.info)

    def run_in_namespace(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` in a thread that has entered the namespace (sockets it creates live there).

        Raises
        ------
        ServerError
            ``setns`` failed.
        """
        if self.info is None or self._closed:
            raise ServerError("kernel link is not running; call start() first")
        return run_in_netns(self.info.namespace, fn)

    def qdisc_stats(self) -> str:
        """``tc -s qdisc show`` of the namespace end (what the registry sent through tbf)."""
        assert self.info is not None
        return _run("ip", "netns", "exec", self.info.namespace, "tc", "-s", "qdisc", "show",
                    "dev", self.info.namespace_interface).stdout

    def close(self) -> None:
        """Delete the veth pair (its qdiscs go with it) and the namespace. Idempotent."""
        if self._closed or self.info is None:
            return
        self._closed = True
        _run("ip", "link", "del", self.info.host_interface, check=False)
        _run("ip", "netns", "del", self.info.namespace, check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def __enter__(self) -> KernelLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class ShapedRegistry:
    """What :func:`shaped_embedded_registry` and :func:`shaped_distribution_registry` yield.

    Attributes
    ----------
    registry : EmbeddedRegistry or DistributionRegistry
        The registry (inside the namespace in kernel mode).
    host : str
        ``host:port`` to pull from (the proxy's when one is in front).
    mode : str
        ``"kernel"``, ``"kernel+proxy-delay"`` or ``"proxy"``.
    link : KernelLink or None
    proxy : ShapingProxy or None
    fallback_reason : str
        Why kernel mode was not (fully) used.
    """

    registry: Any
    host: str
    mode: str
    link: KernelLink | None
    proxy: ShapingProxy | None
    fallback_reason: str = ""


@contextlib.contextmanager
def shaped_embedded_registry(
    profile: str | NetworkProfile, root: str | Path, *, mode: str = "auto",
    **registry_kwargs: Any,
) -> Iterator[ShapedRegistry]:
    """An embedded registry behind a shaped link: kernel mode when possible, else the proxy.

    Parameters
    ----------
    profile : str or NetworkProfile
    root : path
        Registry storage.
    mode : {"auto", "kernel", "proxy"}
        ``auto``: kernel mode when :func:`kernel_mode_available`, else the proxy. ``kernel``:
        raise if unavailable.
    **registry_kwargs
        Passed to :class:`EmbeddedRegistry` (``ssl_context``, ``authorizer``...).

    Raises
    ------
    ServerError
        ``mode="kernel"`` without kernel support, or setup failed.
    """

    prof, kernel, why = _shaping_mode(profile, mode)
    if not kernel:
        with EmbeddedRegistry(Path(root), **registry_kwargs) as reg:
            yield from _behind_proxy(reg, prof, why)
        return
    with KernelLink(prof) as link:
        assert link.info is not None
        address = link.info.namespace_address
        reg = link.run_in_namespace(
            lambda: EmbeddedRegistry(Path(root), host=address, **registry_kwargs).start())
        try:
            yield from _in_namespace(reg, link, prof)
        finally:
            reg.close()


def _shaping_mode(profile: str | NetworkProfile, mode: str) -> tuple[NetworkProfile, bool, str]:
    """(the profile, whether the kernel shapes the link, why not) for ``mode``.

    Raises
    ------
    ServerError
        A ``mode`` other than auto, kernel or proxy, or ``kernel`` without kernel support.
    """
    if mode not in ("auto", "kernel", "proxy"):
        raise ServerError(f"mode must be auto, kernel or proxy, not {mode!r}")
    prof = get_profile(profile)
    ok, why = kernel_mode_available()
    if mode == "kernel" and not ok:
        raise ServerError(why)
    return prof, mode != "proxy" and ok, why


def _behind_proxy(reg: Any, prof: NetworkProfile, why: str) -> Iterator[ShapedRegistry]:
    """Proxy mode: the registry on loopback behind a shaping proxy of the whole profile."""
    with ShapingProxy(reg.host, replace(prof, use_proxy=True)) as proxy:
        yield ShapedRegistry(reg, proxy.address, "proxy", None, proxy, why)


def _in_namespace(reg: Any, link: KernelLink, prof: NetworkProfile) -> Iterator[ShapedRegistry]:
    """Kernel mode: the registry in the link's namespace; the delay from a delay-only proxy
    when the kernel has no netem."""
    assert link.info is not None
    if prof.rtt_ms and not link.info.netem:
        delay_only = NetworkProfile(f"{prof.name}-delay", rtt_ms=prof.rtt_ms,
                                    jitter_ms=prof.jitter_ms, seed=prof.seed)
        with ShapingProxy(reg.host, delay_only) as proxy:
            yield ShapedRegistry(reg, proxy.address, "kernel+proxy-delay", link, proxy,
                                 "no netem in this kernel: delay from the proxy")
    else:
        yield ShapedRegistry(reg, reg.host, "kernel", link, None)


@contextlib.contextmanager
def shaped_distribution_registry(
    profile: str | NetworkProfile, root: str | Path | None = None, *, mode: str = "auto",
    **registry_kwargs: Any,
) -> Iterator[ShapedRegistry]:
    """Distribution (Debian's ``docker-registry``) behind a shaped link: kernel mode, else proxy.

    Kernel mode starts the binary under ``ip netns exec`` in the namespace of a
    :class:`KernelLink`, listening on the namespace's 10.231.x.2 address; bandwidth is tbf on
    both veth ends, and the delay comes from a delay-only :class:`ShapingProxy` when the kernel
    has no netem (as in :func:`shaped_embedded_registry`). On close (also after an error) the
    registry process, its temporary folders, the proxy, the veth pair and the namespace are
    removed, in that order.

    Parameters
    ----------
    profile : str or NetworkProfile
    root : path or None
        Registry storage (kept); ``None``: a temporary folder, deleted on close.
    mode : {"auto", "kernel", "proxy"}
        ``auto``: kernel mode when :func:`kernel_mode_available`, else the proxy on loopback.
        ``kernel``: raise if unavailable. ``proxy``: always the proxy.
    **registry_kwargs
        Passed to :class:`~pullbench.servers.DistributionRegistry` (``tls_cert``/``tls_key``,
        ``extra_config``, ``binary``...). ``host``, ``netns`` and ``port`` are chosen here.

    Raises
    ------
    ServerError
        Bad ``mode`` or a ``host``/``netns``/``port`` argument, ``mode="kernel"`` without kernel
        support, the binary is missing, or setup failed (the message quotes the failing command
        or the registry's log).
    """

    chosen = sorted({"host", "netns", "port"} & registry_kwargs.keys())
    if chosen and mode in ("auto", "kernel", "proxy"):
        raise ServerError(f"shaped_distribution_registry chooses {', '.join(chosen)} itself; "
                          "do not pass them")
    prof, kernel, why = _shaping_mode(profile, mode)
    storage = Path(root) if root is not None else None
    if not kernel:
        with DistributionRegistry(storage, **registry_kwargs) as reg:
            yield from _behind_proxy(reg, prof, why)
        return
    with KernelLink(prof) as link:
        assert link.info is not None
        reg = DistributionRegistry(storage, host=link.info.namespace_address,
                                   netns=link.info.namespace, **registry_kwargs)
        with reg:
            yield from _in_namespace(reg, link, prof)
