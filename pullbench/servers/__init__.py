"""Servers pullbench pulls FROM: never imported by the puller.

EmbeddedRegistry, DistributionRegistry, Misbehavior (fault seam); later the shaping proxy,
TLS material, token server and blob host.
"""

from __future__ import annotations

from ._faults import Misbehavior

# --- section: registries (issue 2) ---
# (``X as X``: explicit re-exports, visible to type checkers despite the computed __all__)
from ._distribution import DistributionRegistry as DistributionRegistry  # noqa: I001
from ._embedded import EmbeddedRegistry as EmbeddedRegistry

# --- end section: registries ---

# --- section: remote (issue 6) ---
from ._blobhost import BlobHost
from ._htpasswd import htpasswd_config, write_htpasswd
from ._proxy import (
    PROFILES,
    NetworkProfile,
    NetworkProfileError,
    SelftestRow,
    ShapingProxy,
    get_profile,
    profile_names,
    selftest,
)
from ._tls import TLSMaterial, make_tls_material
from ._token import IssuedToken, TokenServer

# --- end section: remote ---

__all__ = sorted(name for name in dir() if not name.startswith("_") and name != "annotations")
