"""Servers pullbench pulls FROM: never imported by the puller.

EmbeddedRegistry, DistributionRegistry, Misbehavior (fault seam) and HostileHost (a scripted
second host for foreign realms, challenging CDNs, redirect loops); the shaping proxy, TLS
material, token server and blob host.
"""

from __future__ import annotations

# (``X as X``: explicit re-exports, visible to type checkers despite the computed __all__)
# (``# isort: split``: each section keeps its own sorted import block)
from ._faults import FaultRecord as FaultRecord
from ._faults import Misbehavior as Misbehavior
from ._hostile import HostileHost as HostileHost
from ._hostile import HostileReply as HostileReply
from ._hostile import SeenRequest as SeenRequest

# isort: split

# --- section: registries ---
from ._distribution import DistributionRegistry as DistributionRegistry
from ._embedded import EmbeddedRegistry as EmbeddedRegistry

# --- end section: registries ---
# isort: split

# --- section: remote ---
from ._blobhost import BlobHost as BlobHost
from ._htpasswd import htpasswd_config as htpasswd_config
from ._htpasswd import write_htpasswd as write_htpasswd
from ._netns import KernelLink as KernelLink
from ._netns import kernel_mode_available as kernel_mode_available
from ._netns import shaped_distribution_registry as shaped_distribution_registry
from ._netns import shaped_embedded_registry as shaped_embedded_registry
from ._proxy import PROFILES as PROFILES
from ._proxy import NetworkProfile as NetworkProfile
from ._proxy import NetworkProfileError as NetworkProfileError
from ._proxy import SelftestRow as SelftestRow
from ._proxy import ShapingProxy as ShapingProxy
from ._proxy import get_profile as get_profile
from ._proxy import profile_names as profile_names
from ._proxy import selftest as selftest
from ._tls import TLSMaterial as TLSMaterial
from ._tls import make_tls_material as make_tls_material
from ._token import IssuedToken as IssuedToken
from ._token import TokenServer as TokenServer

# --- end section: remote ---

__all__ = sorted(name for name in dir() if not name.startswith("_") and name != "annotations")
