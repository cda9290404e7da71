"""Arms from programs pullbench builds: ``go`` (the Go copy harness) and ``dockerd`` (a dockerd
variant built from source, pulled with ``docker pull`` as the ``docker`` arm does).

``go:<idiom>`` is the ``go`` kind with ``idiom=<idiom>``; ``dockerd:<variant>`` is the
``dockerd`` kind with ``variant=<variant>`` (:func:`shorthand_arm`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from ._base import ArmError, ExternalArm, PullTarget
from ._dockerd import DockerArm
from ._dockerd_build import DockerdBuild, build_dockerd, dockerd_variants
from ._goharness import GO_IDIOMS, go_harness_binary

__all__ = ["DockerdVariantArm", "GoArm", "shorthand_arm"]


class GoArm(ExternalArm):
    """The Go copy harness copying the image's config and layer blobs with one Go idiom.

    The blob URLs are resolved once per experiment (untimed, with pullbench's client); the
    timed command is the harness alone (blobs one after the other, Go's net/http client, one
    connection kept alive). Layers are written to ``DEST/.GetImageBlob*`` temp files and renamed
    to ``DEST/<hex digest>``, which ``trace=true`` counts.

    Parameters (``params``)
    -----------------------
    idiom : str
        A key of :data:`pullbench.arms._goharness.GO_IDIOMS` (default ``iocopy``).
    read_size, write_size : int
        Bytes, for the idioms that take them (0: the idiom's default).
    """

    kind = "go"
    parameters: ClassVar[dict[str, Any]] = {"idiom": "iocopy", "read_size": 0, "write_size": 0}
    trace_file_pattern = re.compile(r"/\.GetImageBlob[^/]*$")

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, params)
        idiom = GO_IDIOMS.get(self.params["idiom"])
        if idiom is None:
            raise ArmError(f"arm {name!r} (go): unknown idiom {self.params['idiom']!r}; "
                           f"choose one of: {', '.join(GO_IDIOMS)}")
        for key in ("read_size", "write_size"):
            value = self.params[key]
            if value < 0 or (value and key not in idiom.params):
                takes = ", ".join(idiom.params) or "no size"
                raise ArmError(f"arm {name!r} (go): idiom {idiom.name!r} takes {takes}, "
                               f"not {key}={value}")
        self._blobs: dict[str, list[tuple[str, str]]] = {}

    def start(self, targets: list[PullTarget]) -> None:
        from ..puller._client import RegistryClient

        super().start(targets)
        self.client_binary = str(go_harness_binary())
        out = subprocess.run([self.client_binary, "-idiom", self.params["idiom"]],
                             capture_output=True, text=True, check=False, timeout=60)
        m = re.search(r'"go_version":"([^"]+)"', out.stdout)
        self.client_version = m.group(1) if m else "unknown"
        for target in targets:
            client = RegistryClient(target.registry, plain_http=target.plain_http,
                                    ca_bundle=target.ca_bundle)
            try:
                manifest = client.get_manifest(target.repository,
                                               target.digest or target.tag or "latest")
                base = client.base_url
            finally:
                client.close()
            self._blobs[target.reference] = [
                (f"{base}/v2/{target.repository}/blobs/{d.digest}", d.digest)
                for d in (manifest.config, *manifest.layers)]

    def prepare(self, target: PullTarget, dest: Path) -> float:
        if dest.exists() and any(dest.iterdir()):
            raise ArmError(f"go harness destination {dest} is not empty before the run")
        return 0.0

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        argv = [self.client_binary, "-idiom", self.params["idiom"], "-dir", str(dest),
                "-count", "none"]
        if self.params["read_size"]:
            argv += ["-read-size", str(self.params["read_size"])]
        if self.params["write_size"]:
            argv += ["-write-size", str(self.params["write_size"])]
        if target.ca_bundle:
            argv += ["-ca", target.ca_bundle]
        for url, digest in self._blobs[target.reference]:
            argv += ["-blob", f"{digest}={url}"]
        return argv

    def verify(self, target: PullTarget, dest: Path) -> dict[str, Any]:
        missing = [d for _u, d in self._blobs[target.reference]
                   if not (dest / d.removeprefix("sha256:")).is_file()]
        if missing:
            raise ArmError(f"go harness exited 0 but blobs are missing in {dest}: {missing}")
        return {"stored_bytes": sum(p.stat().st_size for p in dest.iterdir() if p.is_file())}

    def cleanup(self, target: PullTarget, dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["idiom_mirrors"] = GO_IDIOMS[self.params["idiom"]].mirrors
        return out


class DockerdVariantArm(DockerArm):
    """The ``docker`` arm with a dockerd built by :func:`build_dockerd` (built, or taken from
    the cache, when the experiment starts).

    Parameters (``params``)
    -----------------------
    variant : str
        ``stock``, ``pr48602``, ``pools-bufio32k`` or ``bufio`` (default ``stock``).
    read_size, write_size : int
        The ``bufio`` variant's sizes (0: its defaults).
    source : str
        ``debian`` or a moby 20.10 tree (see :func:`build_dockerd`).
    client, storage_driver, max_concurrent_downloads, literal_pr_form
        As the ``docker`` arm.
    """

    kind = "dockerd"
    parameters: ClassVar[dict[str, Any]] = {
        **{k: v for k, v in DockerArm.parameters.items() if k != "binary"},
        "variant": "stock", "read_size": 0, "write_size": 0, "source": "debian",
    }

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, params)
        variants = dockerd_variants()
        variant = variants.get(self.params["variant"])
        if variant is None:
            raise ArmError(f"arm {name!r} (dockerd): unknown variant {self.params['variant']!r}; "
                           f"choose one of: {', '.join(variants)}")
        self.variant_params = {k: self.params[k] for k in ("read_size", "write_size")
                               if self.params[k]}
        unknown = sorted(set(self.variant_params) - set(variant.params))
        if unknown:
            raise ArmError(f"arm {name!r} (dockerd): variant {variant.name!r} takes "
                           f"{', '.join(variant.params) or 'no parameter'}, not {unknown}")
        self.build: DockerdBuild | None = None

    def start(self, targets: list[PullTarget]) -> None:
        self.build = build_dockerd(self.params["variant"], self.variant_params,
                                   source=self.params["source"])
        self.params["binary"] = str(self.build.binary)
        super().start(targets)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.build is not None:
            out["build"] = {"variant": self.build.variant, "params": self.build.params,
                            "source_version": self.build.source_version,
                            "go_version": self.build.go_version, "key": self.build.key,
                            "version_string": self.build.version_string}
        return out


def shorthand_arm(text: str, name: str | None = None) -> ExternalArm:
    """``go:<idiom>`` or ``dockerd:<variant>`` as an arm (not started).

    Raises
    ------
    ArmError
        Another prefix, or an unknown idiom or variant.
    """
    kind, sep, what = text.partition(":")
    if not sep or kind not in ("go", "dockerd") or not what:
        raise ArmError(f"{text!r} is not go:<idiom> or dockerd:<variant>")
    if kind == "go":
        return GoArm(name or text, {"idiom": what})
    return DockerdVariantArm(name or text, {"variant": what})
