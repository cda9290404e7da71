"""The ``ctr-fetch`` and ``ctr-pull`` arms: a private containerd 1.6 and its ``ctr`` client.

The daemon gets a version-2 configuration whose ``root``, ``state``, ``temp``, gRPC and ttrpc
sockets and ``opt`` plugin path all lie in its temporary work folder, with the CRI plugin
disabled (containerd/containerd:docs/ops.md, "Base Configuration"; RELEASES.md for version 2).

``ctr`` resolves and fetches the blobs itself and streams them to the daemon over the content
API; the daemon writes them to ``<root>/io.containerd.content.v1.content/ingest/<hash>/data``
(containerd/containerd:content/local/store.go) in the 1 MiB chunks ``content.Copy`` fills
(containerd/containerd:content/helpers.go), which ``--trace`` counts. TLS trusts pullbench's CA
through a private hosts folder (``--hosts-dir``, containerd/containerd:docs/hosts.md: a
``hosts.toml`` with ``ca = ...`` for the endpoint), nothing under ``/etc/containerd``.

Cold state before every run: images removed with ``--sync`` (garbage collection done), then
every content blob and snapshot removed, and verified -- no image, no content, no active
ingest, no snapshot, an empty ingest folder -- not just commands run.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

from ._base import ArmError, ColdStateError, ExternalArm, PullTarget
from ._daemons import ManagedDaemon, find_binary, run_checked

__all__ = ["ContainerdDaemon", "CtrArm"]

_NAMESPACE = "pullbench"
_INGEST = "io.containerd.content.v1.content/ingest"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ContainerdDaemon(ManagedDaemon):
    """A private containerd (Debian's ``containerd`` 1.6) in a temporary folder.

    Parameters
    ----------
    binary : str
        containerd executable (default ``/usr/bin/containerd``).
    """

    kind = "containerd"

    def __init__(self, binary: str = "/usr/bin/containerd", **kw: Any) -> None:
        super().__init__(binary, package="containerd", **kw)

    @property
    def address(self) -> Path:
        """The gRPC socket."""
        return self._dir / "containerd.sock"

    @property
    def root(self) -> Path:
        return self._dir / "root"

    def prepare_workdir(self, workdir: Path) -> None:
        for sub in ("root", "state", "tmp", "opt"):
            (workdir / sub).mkdir()
        config = "\n".join([
            "version = 2",
            f"root = {_toml_str(str(workdir / 'root'))}",
            f"state = {_toml_str(str(workdir / 'state'))}",
            f"temp = {_toml_str(str(workdir / 'tmp'))}",
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f"  address = {_toml_str(str(workdir / 'containerd.sock'))}",
            "[ttrpc]",
            f"  address = {_toml_str(str(workdir / 'containerd.sock.ttrpc'))}",
            "[debug]",
            '  address = ""',
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml_str(str(workdir / 'opt'))}",
            "",
        ])
        (workdir / "config.toml").write_text(config)

    def command(self) -> list[str]:
        return [self.binary, "--config", str(self._dir / "config.toml")]

    def ready(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(self.address))
        return True

    @property
    def version(self) -> str:
        """``1.6.20~ds1`` (the third word of ``containerd --version``)."""
        line = super().version
        words = line.split()
        return words[2] if len(words) >= 3 else line


class CtrArm(ExternalArm):
    """``ctr content fetch`` (``mode="fetch"``) or ``ctr images pull`` (``mode="pull"``).

    Parameters (``params``)
    -----------------------
    binary : str
        containerd executable (default ``/usr/bin/containerd``).
    client : str
        ctr executable (default ``/usr/bin/ctr``).
    snapshotter : str
        For ``ctr-pull``: ``overlayfs`` (default) or ``native``.
    max_concurrent_downloads : int
        ``--max-concurrent-downloads`` of ``ctr images pull`` (0: ctr's default).
    """

    parameters: ClassVar[dict[str, Any]] = {
        "binary": "/usr/bin/containerd", "client": "/usr/bin/ctr", "snapshotter": "overlayfs",
        "max_concurrent_downloads": 0,
    }
    trace_file_pattern = re.compile(r"/" + re.escape(_INGEST) + r"/[^/]+/data$")
    trace_client = True  # ctr reads from the registry; the daemon writes the files

    def __init__(self, name: str, params: dict[str, Any] | None = None, *,
                 mode: str = "pull") -> None:
        if mode not in ("fetch", "pull"):
            raise ArmError(f"arm {name!r}: ctr mode must be 'fetch' or 'pull', not {mode!r}")
        self.mode = mode
        self.kind = f"ctr-{mode}"  # type: ignore[misc]
        super().__init__(name, params)
        if self.params["snapshotter"] not in ("overlayfs", "native"):
            raise ArmError(f"arm {name!r} ({self.kind}): snapshotter must be 'overlayfs' or "
                           f"'native', not {self.params['snapshotter']!r}")
        self._daemon: ContainerdDaemon | None = None

    def start(self, targets: list[PullTarget]) -> None:
        super().start(targets)
        self.client_binary = find_binary(self.params["client"], package="containerd",
                                         what="ctr")
        self.client_version = run_checked([self.client_binary, "--version"],
                                          what="ctr --version").split()[-1]
        hosts = self.work / "hosts"
        for target in targets:
            folder = hosts / target.registry.replace("[", "").replace("]", "")
            folder.mkdir(parents=True, exist_ok=True)
            lines = [f"server = {_toml_str(target.url)}", "",
                     f"[host.{_toml_str(target.url)}]",
                     '  capabilities = ["pull", "resolve"]']
            if target.ca_bundle:
                lines.append(f"  ca = {_toml_str(target.ca_bundle)}")
            (folder / "hosts.toml").write_text("\n".join(lines) + "\n")
        self._daemon = ContainerdDaemon(self.params["binary"])
        self.daemon = self._daemon
        self._daemon.start()

    def close(self) -> None:
        self._daemon = None
        super().close()

    @property
    def _ctr(self) -> list[str]:
        assert self._daemon is not None
        return [self.client_binary, "--address", str(self._daemon.address), "--namespace",
                _NAMESPACE]

    def _lines(self, *args: str) -> list[str]:
        out = run_checked([*self._ctr, *args], what=f"ctr {' '.join(args)}")
        return [line for line in out.splitlines() if line.strip()]

    def state(self) -> dict[str, list[str]]:
        """What the namespace holds now: images, content, active ingests, snapshots."""
        assert self._daemon is not None
        snaps = self._lines("snapshots", "--snapshotter", self.params["snapshotter"], "ls")
        ingest = self._daemon.root / _INGEST
        return {
            "images": self._lines("images", "ls", "-q"),
            "content": [line.split()[0] for line in self._lines("content", "ls", "-q")],
            "active": self._lines("content", "active")[1:],  # the first line is a header
            "snapshots": [line.split()[0] for line in snaps[1:]],
            "ingest_files": [p.name for p in ingest.iterdir()] if ingest.exists() else [],
        }

    def prepare(self, target: PullTarget, dest: Path) -> float:
        images = self._lines("images", "ls", "-q")
        if images:
            run_checked([*self._ctr, "images", "rm", "--sync", *images], what="ctr images rm")
        content = [line.split()[0] for line in self._lines("content", "ls", "-q")]
        if content:
            run_checked([*self._ctr, "content", "rm", *content], what="ctr content rm")
        snaps = self._lines("snapshots", "--snapshotter", self.params["snapshotter"], "ls")
        for _ in range(len(snaps)):  # children before parents: retry until none is left
            keys = [line.split()[0] for line in snaps[1:]]
            if not keys:
                break
            run_checked([*self._ctr, "snapshots", "--snapshotter", self.params["snapshotter"],
                         "rm", *keys], what="ctr snapshots rm", ok_codes=(0, 1))
            snaps = self._lines("snapshots", "--snapshotter", self.params["snapshotter"], "ls")
        started = time.perf_counter()
        left = {k: v for k, v in self.state().items() if v}
        if left:
            raise ColdStateError(f"containerd is not cold before the run: {left}",
                                 kind="containerd")
        return time.perf_counter() - started

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        common = ["--hosts-dir", str(self.work / "hosts")]
        if target.plain_http:
            common.append("--plain-http")
        if self.mode == "fetch":
            return [*self._ctr, "content", "fetch", *common, target.reference]
        argv = [*self._ctr, "images", "pull", *common, "--snapshotter",
                self.params["snapshotter"]]
        if self.params["max_concurrent_downloads"]:
            argv += ["--max-concurrent-downloads", str(self.params["max_concurrent_downloads"])]
        return [*argv, target.reference]

    def verify(self, target: PullTarget, dest: Path) -> dict[str, Any]:
        content = self._lines("content", "ls")
        digests = {line.split()[0] for line in content[1:]}
        if target.digest and target.digest not in digests:
            raise ColdStateError(f"ctr exited 0 but the manifest {target.digest} is not in the "
                                 "content store", kind="containerd")
        stored = 0
        for line in content[1:]:
            words = line.split()
            stored += _parse_size(words[1]) if len(words) > 1 else 0
        extra: dict[str, Any] = {"stored_bytes": stored, "stored_blobs": len(digests)}
        if self.mode == "pull":
            snaps = self._lines("snapshots", "--snapshotter", self.params["snapshotter"], "ls")
            if len(snaps) < 2:
                raise ColdStateError("ctr images pull exited 0 but nothing was unpacked",
                                     kind="containerd")
            extra["snapshots"] = len(snaps) - 1
        return extra

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["mode"] = self.mode
        return out


_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024,
          "MiB": 1024**2, "GiB": 1024**3}


def _parse_size(text: str) -> int:
    """``ctr content ls`` sizes (go-units HumanSize: ``1.049MB``, ``528B``) -> bytes (approx)."""
    m = re.match(r"^([\d.]+)\s*([A-Za-z]*)$", text)
    if not m:
        return 0
    return int(float(m.group(1)) * _UNITS.get(m.group(2) or "B", 1))
