"""The seam for deliberate misbehaviour of pullbench's own servers.

A :class:`Misbehavior` is handed to a server (the embedded registry) to make it break the protocol
on purpose, so tests inject faults with a real server rather than by patching the client.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Misbehavior"]


@dataclass(frozen=True, slots=True)
class Misbehavior:
    """Ways a server misbehaves on purpose. All off by default.

    Parameters
    ----------
    corrupt_blobs : bool
        Flip one byte in the middle of every blob body served (size unchanged).
    truncate_blobs_bytes : int
        Send this many bytes fewer than the blob's size while announcing the full
        ``Content-Length``, then close the connection (a short body).
    extra_blob_bytes : int
        Append this many extra bytes to every blob body (``Content-Length`` counts them:
        a long body).
    blob_content_encoding : str or None
        Serve blobs with this ``Content-Encoding`` header (e.g. ``"gzip"``) while sending the
        stored bytes unchanged; a puller must still hash the raw bytes.
    malformed_manifests : bool
        Serve manifests as truncated, invalid JSON.
    manifest_media_type : str or None
        Serve manifests with this ``Content-Type`` instead of the stored one.
    latency_s : float
        Sleep this long before answering every request (seconds).
    fail_status : int or None
        Answer every request under ``/v2/<name>/`` with this status (e.g. 500, 503).
    drop_after_bytes : int or None
        Close the connection after this many bytes of a blob body (registry going away mid-pull).
    """

    corrupt_blobs: bool = False
    truncate_blobs_bytes: int = 0
    extra_blob_bytes: int = 0
    blob_content_encoding: str | None = None
    malformed_manifests: bool = False
    manifest_media_type: str | None = None
    latency_s: float = 0.0
    fail_status: int | None = None
    drop_after_bytes: int | None = None
