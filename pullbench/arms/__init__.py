"""Pullers pullbench does not own, run as arms beside its copy strategies.

Kinds (``kind`` of an arm in a spec; ``params`` as listed by each class):

==============  ================================================================================
``command``     any shell command, hyperfine's setup/prepare/cleanup (:class:`CommandArm`)
``skopeo``      ``skopeo copy docker://REF dir:DEST`` (:class:`SkopeoArm`)
``ctr-fetch``   ``ctr content fetch`` against a private containerd (:class:`CtrArm`)
``ctr-pull``    ``ctr images pull`` (fetch and unpack) against a private containerd
``docker``      ``docker pull`` against a private dockerd (:class:`DockerArm`)
``dockerd``     ``docker`` with a dockerd built from source: ``variant`` stock, pr48602,
                pools-bufio32k, bufio (:class:`DockerdVariantArm`; ``dockerd:<variant>``)
``go``          the Go copy harness with one Go idiom (:class:`GoArm`; ``go:<idiom>``)
==============  ================================================================================

dockerd variants are built from source by :func:`build_dockerd` (``pullbench dockerd build``);
the Go copy harness (:func:`go_copy`, :func:`go_pull`) copies registry blobs with the exact Go
idioms of :data:`GO_IDIOMS`.

Daemons (containerd, dockerd) are started once per experiment in private temporary folders,
die with the process that started them (``setpriv --pdeathsig``), and leave no mounts, sockets
or folders (:mod:`pullbench.arms._daemons`). Probes: :mod:`pullbench.arms._probes`; opt-in
tracing (``trace=true``): :mod:`pullbench.arms._trace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import ArmError, ColdStateError, ExternalArm, PullTarget
from ._built import DockerdVariantArm, GoArm, shorthand_arm
from ._command import CommandArm
from ._containerd import ContainerdDaemon, CtrArm
from ._daemons import DaemonDied, DaemonError, ManagedDaemon
from ._dockerd import DockerArm, DockerDaemon
from ._dockerd_build import (
    DockerdBuild,
    DockerdVariant,
    build_dockerd,
    deb_src_entries,
    dockerd_build_requirements,
    dockerd_variants,
    install_dockerd_build_requirements,
)
from ._goharness import GO_IDIOMS, GoBlobResult, GoCopyResult, GoIdiom, go_copy, go_pull
from ._skopeo import SkopeoArm

__all__ = [
    "ARM_KINDS",
    "ARM_SHORTHAND",
    "GO_IDIOMS",
    "ArmError",
    "ColdStateError",
    "CommandArm",
    "ContainerdDaemon",
    "CtrArm",
    "DaemonDied",
    "DaemonError",
    "DockerArm",
    "DockerDaemon",
    "DockerdBuild",
    "DockerdVariant",
    "DockerdVariantArm",
    "ExternalArm",
    "GoArm",
    "GoBlobResult",
    "GoCopyResult",
    "GoIdiom",
    "ManagedDaemon",
    "PullTarget",
    "SkopeoArm",
    "build_dockerd",
    "deb_src_entries",
    "dockerd_build_requirements",
    "dockerd_variants",
    "go_copy",
    "go_pull",
    "install_dockerd_build_requirements",
    "make_arm",
    "shorthand_arm",
]

#: ``kind:VALUE`` in an arm list sets this parameter (``dockerd:pr48602``, ``go:iocopy``).
ARM_SHORTHAND: dict[str, str] = {"dockerd": "variant", "go": "idiom"}

#: Arm kinds and their classes (``ctr-fetch`` and ``ctr-pull`` share :class:`CtrArm`).
ARM_KINDS: dict[str, type[ExternalArm]] = {
    "command": CommandArm,
    "skopeo": SkopeoArm,
    "ctr-fetch": CtrArm,
    "ctr-pull": CtrArm,
    "docker": DockerArm,
    "dockerd": DockerdVariantArm,
    "go": GoArm,
}


def make_arm(kind: str, name: str, params: Mapping[str, Any] | None = None) -> ExternalArm:
    """Build the external arm of ``kind`` (not started).

    Parameters
    ----------
    kind : str
        One of :data:`ARM_KINDS`.
    name : str
        The arm's name in the experiment.
    params : Mapping, optional
        The kind's parameters.

    Raises
    ------
    ArmError
        Unknown kind or parameter.
    """
    cls = ARM_KINDS.get(kind)
    if cls is None:
        raise ArmError(f"arm {name!r}: unknown kind {kind!r}; choose one of: strategy, "
                       f"{', '.join(ARM_KINDS)}")
    if cls is CtrArm:
        return CtrArm(name, dict(params or {}), mode=kind.removeprefix("ctr-"))
    return cls(name, dict(params or {}))
