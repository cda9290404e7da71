"""Launch the real CNCF Distribution registry (Debian's ``docker-registry``) on 127.0.0.1.

It can also listen on another address of this machine, optionally inside a network namespace
(``ip netns exec``): :func:`pullbench.servers.shaped_distribution_registry` uses that to
run it behind the kernel-shaped veth pair.

The launcher writes its own configuration (keys from distribution/distribution:
docs/configuration.md@v2.8.2 "Development configuration"): filesystem storage in a temporary
directory, delete enabled, no auth, access log off, storage health check off. Debian's stock
``/etc/docker/registry/config.yml`` enables htpasswd on a directory and answers 401 to every
request, so it is never used; ``REGISTRY_*`` environment overrides are removed from the child's
environment for the same reason.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from .._errors import ServerError
from .._process import stop_process

__all__ = ["DistributionRegistry", "find_distribution_binary"]

logger = logging.getLogger(__name__)

_BINARIES = ("docker-registry", "registry")
_START_ATTEMPTS = 5


def find_distribution_binary(binary: str | None = None) -> str:
    """Return the path of the Distribution registry binary.

    Parameters
    ----------
    binary : str or None
        A path or command name; default: ``docker-registry`` (Debian), then ``registry``.

    Raises
    ------
    ServerError
        When none is found; the message names the Debian package ``docker-registry``.
    """
    for name in (binary,) if binary else _BINARIES:
        found = shutil.which(name) if name else None
        if found:
            return found
    wanted = binary or " or ".join(_BINARIES)
    raise ServerError(f"Distribution registry binary not found ({wanted}): install the Debian "
                      "package docker-registry (`apt-get install docker-registry`), or put a "
                      "`registry` binary on PATH, or pass binary=PATH")


def _dies_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run through ``setpriv --pdeathsig TERM`` (util-linux) when possible.

    The kernel then sends SIGTERM to the registry when the process that started it dies without
    calling :meth:`DistributionRegistry.close` (killed test run, Ctrl-C twice): no orphaned
    registry keeps its port and folders. Only from the main thread: the signal follows the
    thread that started the child, and a worker thread may end while the registry is in use.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return cmd
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd]


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _free_port(host: str = "127.0.0.1", netns: str | None = None) -> int:
    """A port free on ``host`` now (in network namespace ``netns`` when given)."""

    def pick() -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])

    if netns is None:
        return pick()
    from ._nsexec import run_in_netns

    return run_in_netns(netns, pick)


def _host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ServerError(f"host must be an IP address of this machine (e.g. 127.0.0.1), "
                          f"not {host!r}") from None


class DistributionRegistry:
    """Debian's ``docker-registry`` (CNCF Distribution 2.8.2) with a generated configuration.

    Same handle as :class:`~pullbench.servers.EmbeddedRegistry`: a context manager with
    ``.url``, ``.host``, ``.kind`` (``"distribution"``), ``.version``, ``.close()``.

    Parameters
    ----------
    root : Path or None
        Storage root directory (kept after close); ``None``: a temporary one, deleted on close.
    port : int
        TCP port on ``host``; 0 picks a free one (and retries on a bind race).
    tls_cert, tls_key : Path or None
        PEM certificate and key: serve HTTPS (``http.tls`` in the config).
    extra_config : dict or None
        Deep-merged into the generated configuration (e.g. ``{"auth": {"htpasswd": ...}}``,
        ``{"middleware": {"storage": [...]}}``).
    binary : str or None
        Registry binary (default ``docker-registry``, then ``registry``).
    host : str
        IP address to listen on (``http.addr``) and to health-check; ``.host`` and ``.url``
        report it. Must be an address of this machine (or of ``netns``).
    netns : str or None
        Run the registry inside this named network namespace (``ip netns exec NAME``; needs
        root and ``ip``, and the namespace must exist, e.g. made by
        :class:`~pullbench.servers._netns.KernelLink`). ``host`` must then be the namespace's
        address, reachable from here (the namespace itself is not removed on close).

    Raises
    ------
    ServerError
        Binary missing (names the Debian package), ``host`` not an IP address, ``netns`` missing
        or ``ip`` missing, or the registry did not come up; the message carries the tail of its
        log.
    """

    kind = "distribution"

    def __init__(self, root: Path | None = None, *, port: int = 0, tls_cert: Path | None = None,
                 tls_key: Path | None = None, extra_config: dict[str, Any] | None = None,
                 binary: str | None = None, host: str = "127.0.0.1",
                 netns: str | None = None) -> None:
        self.binary = find_distribution_binary(binary)
        if (tls_cert is None) != (tls_key is None):
            raise ServerError("pass both tls_cert and tls_key, or neither")
        self.bind_host = _check_host(host)
        self.netns = netns
        self._ip: str | None = None
        if netns is not None:
            self._ip = shutil.which("ip")
            if self._ip is None:
                raise ServerError("netns needs `ip` (the Debian package iproute2)")
            if not netns or "/" in netns or not (Path("/var/run/netns") / netns).exists():
                raise ServerError(f"network namespace {netns!r} does not exist (`ip netns list`); "
                                  "create it first, e.g. with pullbench.servers._netns.KernelLink")
        self._workdir = Path(tempfile.mkdtemp(prefix="pullbench-distribution-"))
        self._owns_root = root is None
        self.root = (self._workdir / "storage") if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self._workdir / "config.yml"
        self.log_path = self._workdir / "registry.log"
        self._requested_port = port
        self._port: int | None = None
        self.tls_cert = Path(tls_cert).resolve() if tls_cert is not None else None
        self.tls_key = Path(tls_key).resolve() if tls_key is not None else None
        self.extra_config = extra_config or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._version: str | None = None

    # --- configuration -------------------------------------------------------------------
    def make_config(self, port: int) -> dict[str, Any]:
        """The configuration for ``port``: generated defaults deep-merged with extra_config."""
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root.resolve())},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
                "redirect": {"disable": True},
            },
            "http": {"addr": _host_port(self.bind_host, port),
                     "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.tls_cert is not None:
            config["http"]["tls"] = {"certificate": str(self.tls_cert),
                                     "key": str(self.tls_key)}
        return _deep_merge(config, self.extra_config)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> DistributionRegistry:
        """Start the registry and wait until ``/v2/`` answers; return ``self``.

        Raises
        ------
        ServerError
            The registry did not come up (the message carries the tail of its log). Its work
            folder (config and log; also the storage when ``root`` was not given) is removed
            first, as :meth:`close` does; ``start()`` may be called again.
        """
        if self._proc is not None:
            return self
        self._workdir.mkdir(parents=True, exist_ok=True)  # again after a failed start or close
        self.root.mkdir(parents=True, exist_ok=True)
        last_error = ""
        try:
            for _ in range(_START_ATTEMPTS if self._requested_port == 0 else 1):
                port = self._requested_port or _free_port(self.bind_host, self.netns)
                self.config_path.write_text(yaml.safe_dump(self.make_config(port),
                                                           sort_keys=True))
                if self._try_start(port):
                    return self
                last_error = self.log_path.read_text(errors="replace")[-1500:]
                if "address already in use" not in last_error:
                    break
        except BaseException:
            self._port = None
            self.close()  # e.g. Ctrl-C while waiting: no registry or work folder left behind
            raise
        self._port = None
        self.close()  # leave no work folder behind (the log tail goes into the message)
        where = (_host_port(self.bind_host, self._requested_port) if self._requested_port
                 else self.bind_host)
        if self.netns is not None:
            where += f" in network namespace {self.netns}"
        raise ServerError(f"{self.binary} did not start on {where}; its log ends with:\n"
                          f"{last_error}")

    def _try_start(self, port: int) -> bool:
        """One launch on ``port``: True when ``/v2/`` answers (the process is then ``_proc``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        cmd = [self.binary, "serve", str(self.config_path)]
        if self.netns is not None:
            assert self._ip is not None
            cmd = [self._ip, "netns", "exec", self.netns, *cmd]  # execs the binary: same pid
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(_dies_with_parent(cmd), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
        self._proc = proc  # close() stops it whatever happens next
        self._port = port
        if self._wait_ready(proc, timeout_s=30.0):
            logger.info("distribution registry %s serving %s (pid %d%s)", self.version, self.url,
                        proc.pid, f", network namespace {self.netns}" if self.netns else "")
            return True
        self._proc = None
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        return False

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if self._tls:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        self.bind_host, self._port, timeout=2, context=ctx)
                else:
                    conn = http.client.HTTPConnection(self.bind_host, self._port, timeout=2)
                try:
                    conn.request("GET", "/v2/")
                    status = conn.getresponse().status
                finally:
                    conn.close()
                if status in (200, 401):
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL after 5 s) and remove temporary files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, what="distribution registry")
        self._port = None
        if self._owns_root:
            shutil.rmtree(self._workdir, ignore_errors=True)
        else:
            for p in (self.config_path, self.log_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            with contextlib.suppress(OSError):
                self._workdir.rmdir()

    def __enter__(self) -> DistributionRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- addresses -----------------------------------------------------------------------
    @property
    def _tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("distribution registry is not running; call start() first")
        return self._port

    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``: the bound address (``"[::1]:PORT"`` for IPv6)."""
        return _host_port(self.bind_host, self.port)

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"`` (``https://`` with TLS), the bound address."""
        return f"{'https' if self._tls else 'http'}://{self.host}"

    @property
    def version(self) -> str:
        """Version reported by ``BINARY --version`` (e.g. ``"2.8.2+ds1"``)."""
        if self._version is None:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 check=False, timeout=10).stdout.split()
            self._version = out[-1] if out else "unknown"
        return self._version

    def __repr__(self) -> str:
        state = self.url if self._port is not None else "stopped"
        return f"DistributionRegistry({state}, root={str(self.root)!r})"
