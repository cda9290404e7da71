"""The ``docker`` arm: ``docker pull`` against a private dockerd that pullbench starts.

dockerd runs without systemd, every path in its temporary work folder::

    dockerd --config-file W/daemon.json --data-root W/data --exec-root W/exec
            --pidfile W/dockerd.pid -H unix://W/docker.sock --storage-driver overlay2|vfs
            --iptables=false --ip6tables=false --bridge=none

``daemon.json`` sets ``deprecated-key-path`` (otherwise dockerd 20.10 writes
``/etc/docker/key.json``) and ``max-concurrent-downloads``. dockerd starts its own containerd
child (kept in the process tree that the probes measure). The binary is a plain path, so a
dockerd built from source can be measured the same way.

Registries on 127.0.0.0/8 are insecure for dockerd by default (moby/moby:registry/config.go,
``InsecureRegistries`` always contains 127.0.0.0/8): it tries HTTPS without verifying the
certificate, then plain HTTP. Over TLS to a loopback registry the bytes are still TLS records
(16 KiB reads), but nothing is verified -- rows say so (``tls_verified=False``,
``registry_insecure=True``). For a registry on another address, dockerd only trusts the system
store or ``/etc/docker/certs.d/<host:port>/ca.crt`` (moby/moby:registry/registry.go, ``CertsDir``);
pullbench does not write there: put pullbench's CA there yourself, or add the address to
``insecure-registries``.

Layers are written to ``<data-root>/tmp/GetImageBlob*`` temp files (moby/moby:distribution/
pull_v2.go, ``ioutil.TempFile("", "GetImageBlob")`` with ``TMPDIR`` = data-root/tmp), which
``--trace`` counts. Management (cold state, checks) uses the Engine API over the socket; the
timed pull is Debian's ``/usr/bin/docker`` (another docker CLI may come first on ``PATH``).

Cold state before every run: every image removed (``DELETE /images/{id}?force=1``, as
``docker rmi -f``), then verified: no image, an empty layer database
(``image/<driver>/layerdb/sha256``), no ``GetImageBlob*`` temp file, no layer directory of the
storage driver. ``system prune -f`` adds nothing for images; ``literal_pr_form=true`` times the
PR's whole command instead (``docker rmi -f REF && docker system prune -f && docker pull REF``,
the image present before it, as in hyperfine's repeated runs).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from ._base import ArmError, ColdStateError, ExternalArm, PullTarget
from ._daemons import DaemonError, ManagedDaemon, find_binary, run_checked

__all__ = ["DockerArm", "DockerDaemon", "engine_request"]

#: The storage drivers dockerd 20.10 has on Linux; which ones work depends on the filesystem
#: (dockerd refuses the others at start, with a message in its log).
STORAGE_DRIVERS = ("overlay2", "vfs", "fuse-overlayfs", "btrfs", "zfs", "devicemapper", "aufs")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine_request(sock: Path, method: str, path: str, *,
                   timeout_s: float = 120.0) -> tuple[int, Any]:
    """One Docker Engine API call over a unix socket: ``(status, decoded JSON or text)``."""
    conn = _UnixHTTPConnection(str(sock), timeout_s)
    try:
        conn.request(method, path, headers={"Host": "docker"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonError(f"dockerd did not answer {method} {path} on {sock}: {exc}",
                          kind="dockerd") from exc
    finally:
        conn.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, body


class DockerDaemon(ManagedDaemon):
    """A private dockerd (default Debian's ``/usr/sbin/dockerd``, package ``docker.io``).

    Parameters
    ----------
    binary : str
        dockerd executable: a plain path (a built variant works the same way).
    storage_driver : str
        ``overlay2`` (default) or ``vfs`` work on ext4/xfs; see :data:`STORAGE_DRIVERS`.
    max_concurrent_downloads : int
        ``max-concurrent-downloads`` (dockerd's default 3).

    Raises
    ------
    ArmError
        Not a storage driver of dockerd.
    ServerError
        The binary is missing.
    """

    kind = "dockerd"

    def __init__(self, binary: str = "/usr/sbin/dockerd", *, storage_driver: str = "overlay2",
                 max_concurrent_downloads: int = 3, **kw: Any) -> None:
        if storage_driver not in STORAGE_DRIVERS:
            raise ArmError(f"dockerd storage driver must be one of {', '.join(STORAGE_DRIVERS)}, "
                           f"not {storage_driver!r}")
        super().__init__(binary, package="docker.io", **kw)
        self.storage_driver = storage_driver
        self.max_concurrent_downloads = max_concurrent_downloads

    @property
    def socket_path(self) -> Path:
        return self._dir / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self._dir / "data"

    def prepare_workdir(self, workdir: Path) -> None:
        (workdir / "daemon.json").write_text(json.dumps({
            "deprecated-key-path": str(workdir / "key.json"),
            "max-concurrent-downloads": self.max_concurrent_downloads,
        }))

    def command(self) -> list[str]:
        w = self._dir
        return [self.binary, "--config-file", str(w / "daemon.json"),
                "--data-root", str(w / "data"), "--exec-root", str(w / "exec"),
                "--pidfile", str(w / "dockerd.pid"), "-H", f"unix://{w / 'docker.sock'}",
                "--storage-driver", self.storage_driver, "--iptables=false",
                "--ip6tables=false", "--bridge=none"]

    def failure_hint(self, log_tail: str) -> str:
        if "graphdriver" not in log_tail and "storage driver" not in log_tail:
            return ""
        return (f"(storage driver {self.storage_driver!r}: overlay2 and vfs work on ext4 and "
                "xfs; pick another with storage_driver=...)")

    def ready(self) -> bool:
        try:
            status, body = engine_request(self.socket_path, "GET", "/_ping", timeout_s=2)
        except DaemonError:
            return False
        return status == 200 and body == "OK"

    def restart(self) -> None:
        """Start again after a death on an empty data root, first removing pid files of
        processes that are gone.

        A dockerd killed mid-way (e.g. inside ``DELETE /images``) can leave a layer no image
        references, which the Engine API cannot remove: every later cold-state check would
        fail. The data root is this private daemon's own, and every run starts cold anyway, so
        it is unmounted (overlay2 leaves mounts) and removed before the restart.

        dockerd checks ``exec-root/containerd/containerd.pid`` with ``kill(pid, 0)``, which
        succeeds on a zombie; when the killed dockerd's containerd was reparented to a pid 1
        that does not reap orphans, the new dockerd would wait for that zombie forever.
        """
        from ._daemons import _pid_alive, _remove_folder

        self._stop_process()
        _remove_folder(self.data_root)  # unmounts first; never removes through a mount
        for pidfile in (self._dir / "exec" / "containerd" / "containerd.pid",
                        self._dir / "dockerd.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if not _pid_alive(pid):
                pidfile.unlink(missing_ok=True)
        super().restart()

    def api(self, method: str, path: str, *, timeout_s: float = 120.0) -> tuple[int, Any]:
        """An Engine API call to this daemon."""
        return engine_request(self.socket_path, method, path, timeout_s=timeout_s)

    @property
    def version(self) -> str:
        """``20.10.24+dfsg1`` (from ``dockerd --version``: ``Docker version X, build Y``)."""
        line = super().version
        m = re.search(r"version\s+([^\s,]+)", line)
        return m.group(1) if m else line

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["storage_driver"] = self.storage_driver
        out["max_concurrent_downloads"] = self.max_concurrent_downloads
        return out


class DockerArm(ExternalArm):
    """``docker pull`` against a private dockerd (see the module docstring).

    Parameters (``params``)
    -----------------------
    binary : str
        dockerd executable, a plain path (default ``/usr/sbin/dockerd``).
    client : str
        docker CLI (default Debian's ``/usr/bin/docker``).
    storage_driver : str
        ``overlay2`` (default) or ``vfs``; others as the filesystem allows.
    max_concurrent_downloads : int
        dockerd's ``max-concurrent-downloads`` (default 3).
    literal_pr_form : bool
        Time ``docker rmi -f && docker system prune -f && docker pull`` as the PR did.
    """

    kind = "docker"
    parameters: ClassVar[dict[str, Any]] = {
        "binary": "/usr/sbin/dockerd", "client": "/usr/bin/docker", "storage_driver": "overlay2",
        "max_concurrent_downloads": 3, "literal_pr_form": False,
    }
    trace_file_pattern = re.compile(r"/GetImageBlob[^/]*$")
    trace_client = False  # the daemon reads from the registry and writes the files

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, params)
        if self.params["storage_driver"] not in STORAGE_DRIVERS:
            raise ArmError(f"arm {name!r} (docker): storage_driver must be one of "
                           f"{', '.join(STORAGE_DRIVERS)}, not {self.params['storage_driver']!r}")
        if self.params["max_concurrent_downloads"] < 1:
            raise ArmError(f"arm {name!r} (docker): max_concurrent_downloads must be >= 1")
        self._daemon: DockerDaemon | None = None

    def start(self, targets: list[PullTarget]) -> None:
        for target in targets:
            if not target.plain_http and not target.is_loopback:
                raise ArmError(
                    f"arm {self.name!r} (docker): {target.registry} serves TLS with pullbench's "
                    "CA, which dockerd cannot be told to trust without /etc: put the CA in "
                    f"/etc/docker/certs.d/{target.registry}/ca.crt, or pull from a 127.0.0.0/8 "
                    "address (insecure for dockerd by default)")
        super().start(targets)
        self.client_binary = find_binary(self.params["client"], package="docker.io",
                                         what="the docker client")
        (self.work / "client-config").mkdir()
        out = run_checked([self.client_binary, "--version"], what="docker --version",
                          env=self.client_env())
        m = re.search(r"version\s+([^\s,]+)", out)
        self.client_version = m.group(1) if m else out.strip()
        self._daemon = DockerDaemon(self.params["binary"],
                                    storage_driver=self.params["storage_driver"],
                                    max_concurrent_downloads=self.params[
                                        "max_concurrent_downloads"])
        self.daemon = self._daemon
        self._daemon.start()

    def close(self) -> None:
        self._daemon = None
        super().close()

    def client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.work / "client-config")
        return env

    @property
    def _docker(self) -> list[str]:
        assert self._daemon is not None
        return [self.client_binary, "-H", f"unix://{self._daemon.socket_path}"]

    def _api(self, method: str, path: str) -> tuple[int, Any]:
        assert self._daemon is not None
        return self._daemon.api(method, path)

    def state(self) -> dict[str, list[str]]:
        """What the daemon holds now: images, layers, temp files, driver directories."""
        assert self._daemon is not None
        status, images = self._api("GET", "/images/json?all=1")
        if status != 200:
            raise DaemonError(f"dockerd GET /images/json answered {status}: {images}")
        root = self._daemon.data_root
        driver = self._daemon.storage_driver
        layerdb = root / "image" / driver / "layerdb" / "sha256"
        layer_dirs = root / driver / ("dir" if driver == "vfs" else "")
        return {
            "images": [str(i.get("Id")) for i in images or []],
            "layers": sorted(p.name for p in layerdb.iterdir()) if layerdb.exists() else [],
            "temp_files": sorted(p.name for p in (root / "tmp").glob("GetImageBlob*")),
            "driver_dirs": sorted(p.name for p in layer_dirs.iterdir()
                                  if p.name != "l") if layer_dirs.exists() else [],
        }

    def _remove_images(self) -> None:
        status, images = self._api("GET", "/images/json?all=1")
        for image in images or []:
            status, body = self._api("DELETE", f"/images/{image['Id']}?force=1")
            if status not in (200, 404):
                raise DaemonError(f"dockerd could not remove image {image['Id']}: {body}")

    def prepare(self, target: PullTarget, dest: Path) -> float:
        if self.params["literal_pr_form"]:
            return self._prepare_present(target)
        self._remove_images()
        started = time.perf_counter()
        left = {k: v for k, v in self.state().items() if v}
        if left:
            raise ColdStateError(f"dockerd is not cold before the run: {left}", kind="dockerd")
        return time.perf_counter() - started

    def _prepare_present(self, target: PullTarget) -> float:
        """The PR's form starts with the image present (hyperfine's earlier run pulled it)."""
        ref = urllib.parse.quote(target.reference, safe="")
        if self._api("GET", f"/images/{ref}/json")[0] != 200:
            run_checked([*self._docker, "pull", "-q", target.reference],
                        what="docker pull (untimed, before the PR's command)",
                        env=self.client_env(), timeout_s=900)
        started = time.perf_counter()
        if self._api("GET", f"/images/{ref}/json")[0] != 200:
            raise ColdStateError(f"{target.reference} is not present before the PR's command",
                                 kind="dockerd")
        return time.perf_counter() - started

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        if not self.params["literal_pr_form"]:
            return [*self._docker, "pull", target.reference]
        docker = shlex.join(self._docker)
        ref = shlex.quote(target.reference)
        line = (f"{docker} rmi -f {ref} && {docker} system prune -f && "
                f"{docker} pull {ref}")
        return ["/bin/sh", "-c", line]

    def verify(self, target: PullTarget, dest: Path) -> dict[str, Any]:
        ref = urllib.parse.quote(target.reference, safe="")
        status, body = self._api("GET", f"/images/{ref}/json")
        if status != 200 or not isinstance(body, dict):
            raise ColdStateError(f"docker pull exited 0 but {target.reference} is not in dockerd: "
                                 f"{body}", kind="dockerd")
        return {"stored_bytes": body.get("Size"),
                "stored_layers": len((body.get("RootFS") or {}).get("Layers") or [])}

    def columns(self, target: PullTarget) -> dict[str, Any]:
        insecure = target.is_loopback
        return {"registry_insecure": insecure,
                "tls_verified": (not target.plain_http) and not insecure,
                "storage_driver": self.params["storage_driver"],
                "literal_pr_form": self.params["literal_pr_form"]}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["tls_note"] = ("dockerd treats 127.0.0.0/8 registries as insecure: TLS to them is "
                           "not verified")
        return out
