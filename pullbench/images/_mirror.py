"""Mirror an image from one registry to another through pullbench's own client and push code.

A report measured on a public image (``docker.io/library/debian:bookworm``) can then be replicated
on exactly that image from a local registry (``pullbench image mirror SRC DEST``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._errors import ImageBuildError

__all__ = ["MirrorResult", "mirror_image"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """What :func:`mirror_image` copied.

    Attributes
    ----------
    source : str
        The source reference.
    destination : str
        The destination reference.
    manifest_digest : str
        Digest of the (platform) manifest pulled from the source and pushed unchanged: pulling
        ``DEST@<manifest_digest>`` gives byte-identical content.
    pushed_digest : str
        Digest of the top manifest pushed (equals ``manifest_digest``: a multi-platform source
        index is mirrored as the one selected platform).
    total_bytes : int
        Bytes of config and layer blobs copied.
    """

    source: str
    destination: str
    manifest_digest: str
    pushed_digest: str
    total_bytes: int


def mirror_image(
    source: str,
    destination: str,
    *,
    platform: str | None = None,
    src_plain_http: bool = False,
    src_ca_bundle: str | Path | None = None,
    src_credentials: tuple[str, str] | None = None,
    dest_plain_http: bool = False,
    dest_ca_bundle: str | Path | None = None,
    dest_credentials: tuple[str, str] | None = None,
    work_dir: str | Path | None = None,
) -> MirrorResult:
    """Copy one image (one platform) from ``source`` to ``destination``.

    The pull goes through :func:`pullbench.pull` (its registry client: anonymous or Basic-backed
    tokens, redirects without forwarding Authorization, the CA bundle winning over
    ``REQUESTS_CA_BUNDLE``); the push through :func:`pullbench.push_image`. Blobs and the
    platform manifest are copied byte for byte, so digests are preserved. The temporary content
    store is always deleted.

    Parameters
    ----------
    source, destination : str
        ``registry/repo:tag`` references (``docker.io/library/debian:bookworm``,
        ``127.0.0.1:5000/mirror/debian:bookworm``).
    platform : str, optional
        ``os/arch[/variant]`` to select from an index (default: this host's).
    src_plain_http, dest_plain_http : bool
        Speak plain HTTP to that side.
    src_ca_bundle, dest_ca_bundle : path, optional
        CA bundle for that side's TLS.
    src_credentials, dest_credentials : (str, str), optional
        ``(user, password)``; never logged.
    work_dir : path, optional
        Where to put the temporary content store (default: the system temp directory).

    Returns
    -------
    MirrorResult

    Raises
    ------
    RegistryError
        Pulling failed (AuthenticationError names the realm, ImageNotFound the reference...).
    ImageBuildError, RegistryError
        Pushing failed.
    """
    from ..puller._pipeline import pull
    from ._oci import ImageLayout, push_image

    tmp = Path(tempfile.mkdtemp(prefix="pullbench-mirror-", dir=work_dir))
    try:
        store = tmp / "layout"
        result = pull(source, "containerd-1m", store, platform=platform,
                      plain_http=src_plain_http, ca_bundle=src_ca_bundle,
                      credentials=src_credentials, probes=False)
        layout = ImageLayout(store, source)
        if layout.is_index:  # only the selected platform was pulled: mirror that manifest
            doc = layout.read_json(result.manifest_digest)
            size = layout.blob_path(result.manifest_digest).stat().st_size
            media_type = doc.get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
            index = json.loads((store / "index.json").read_text())
            top = index["manifests"][0]
            top.update({"digest": result.manifest_digest, "size": size, "mediaType": media_type})
            index["manifests"] = [top]
            (store / "index.json").write_text(json.dumps(index, indent=2))
        auth = dest_credentials if dest_credentials else None
        pushed = push_image(layout, destination, plain_http=dest_plain_http,
                            ca_bundle=dest_ca_bundle, auth=auth)
        if pushed != result.manifest_digest:
            raise ImageBuildError(
                f"mirror of {source} to {destination}: pushed manifest {pushed} differs from the "
                f"pulled one {result.manifest_digest}; the destination rewrote it"
            )
        logger.info("mirrored %s → %s (%s, %d bytes)", source, destination, pushed,
                    result.total_bytes)
        return MirrorResult(source=source, destination=destination,
                            manifest_digest=result.manifest_digest, pushed_digest=pushed,
                            total_bytes=result.total_bytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
