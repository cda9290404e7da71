"""The ``skopeo`` arm: ``skopeo copy docker://REF dir:DEST`` (or ``oci:DEST``), fresh per run.

Nothing of the machine's configuration is read or written: a private trust policy
(``--policy``, accept anything: the images are pullbench's own), an empty registries.conf
(``CONTAINERS_REGISTRIES_CONF``) and registries.d (``--registries.d``), anonymous access
(``--src-no-creds``), temporary files under the arm's folder (``--tmpdir``). TLS trusts
pullbench's CA through a private certificate folder (``--src-cert-dir`` holding ``ca.crt``;
containers/image: docker/docker_client.go, pkg/tlsclientconfig); plain HTTP needs
``--src-tls-verify=false``. Layers are written to ``DEST/dir-put-blob*`` temp files then renamed
(containers/image: directory/directory_dest.go), which ``--trace`` counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from ._base import ArmError, ExternalArm, PullTarget
from ._daemons import DaemonError, find_binary

__all__ = ["SkopeoArm"]


class SkopeoArm(ExternalArm):
    """skopeo copy into a fresh folder per run.

    Parameters (``params``)
    -----------------------
    binary : str
        skopeo executable (default ``/usr/bin/skopeo``, Debian's ``skopeo``).
    format : {"dir", "oci"}
        Destination transport.
    """

    kind = "skopeo"
    parameters: ClassVar[dict[str, Any]] = {"binary": "/usr/bin/skopeo", "format": "dir"}
    trace_file_pattern = re.compile(r"/(dir-put-blob|oci-put-blob)[^/]*$")

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, params)
        if self.params["format"] not in ("dir", "oci"):
            raise ArmError(f"arm {name!r} (skopeo): format must be 'dir' or 'oci', "
                           f"not {self.params['format']!r}")

    def start(self, targets: list[PullTarget]) -> None:
        super().start(targets)
        self.client_binary = find_binary(self.params["binary"], package="skopeo", what="skopeo")
        out = subprocess.run([self.client_binary, "--version"], capture_output=True, text=True,
                             check=False, timeout=30)
        self.client_version = out.stdout.strip().rpartition(" ")[2] or "unknown"
        work = self.work
        (work / "policy.json").write_text(json.dumps(
            {"default": [{"type": "insecureAcceptAnything"}]}))
        (work / "registries.conf").write_text("")
        (work / "registries.d").mkdir()
        (work / "tmp").mkdir()
        certs = work / "certs"
        certs.mkdir()
        for target in targets:
            if target.ca_bundle:
                shutil.copyfile(target.ca_bundle, certs / "ca.crt")

    def client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH"))}
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.work / "registries.conf")
        env["TMPDIR"] = str(self.work / "tmp")
        return env

    def prepare(self, target: PullTarget, dest: Path) -> float:
        if dest.exists() and any(dest.iterdir()):
            raise DaemonError(f"skopeo destination {dest} is not empty before the run")
        return 0.0

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        work = self.work
        argv = [self.client_binary, "--policy", str(work / "policy.json"),
                "--registries.d", str(work / "registries.d"), "--tmpdir", str(work / "tmp"),
                "copy", "--quiet", "--src-no-creds"]
        if target.plain_http:
            argv.append("--src-tls-verify=false")
        else:
            argv += ["--src-tls-verify=true", "--src-cert-dir", str(work / "certs")]
        return [*argv, f"docker://{target.reference}", f"{self.params['format']}:{dest}"]

    def verify(self, target: PullTarget, dest: Path) -> dict[str, Any]:
        files = [p for p in dest.rglob("*") if p.is_file()]
        if self.params["format"] == "dir" and not (dest / "manifest.json").exists():
            raise DaemonError(f"skopeo exited 0 but {dest}/manifest.json is missing")
        if any("put-blob" in p.name for p in files):
            raise DaemonError(f"skopeo left temp files in {dest}")
        return {"stored_bytes": sum(p.stat().st_size for p in files)}

    def cleanup(self, target: PullTarget, dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
