"""Media types and digests (OCI image-spec v1.1, Docker manifest v2 schema 2)."""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_TAR",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "digest_hex",
    "is_valid_digest",
    "sha256_digest",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: The ``Accept`` header a puller sends for manifests: the four types containerd's resolver sends.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

# descriptor.md: algorithm ":" encoded; sha256 must be 64 lowercase hex, sha512 128.
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_REGISTERED = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}


def is_valid_digest(digest: str) -> bool:
    """Return True when ``digest`` follows the OCI digest grammar.

    For sha256 and sha512 the hex part must also have the algorithm's length.
    """
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        return False
    algorithm, _, encoded = digest.partition(":")
    pattern = _REGISTERED.get(algorithm)
    return pattern is None or bool(pattern.match(encoded))


def digest_hex(digest: str) -> str:
    """Return the encoded part of a ``sha256:<hex>`` digest; raise ValueError if it is not one."""
    if not is_valid_digest(digest) or not digest.startswith("sha256:"):
        raise ValueError(f"not a sha256 digest: {digest!r} (expected 'sha256:' + 64 lowercase hex)")
    return digest[7:]


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
