"""The seam for deliberate misbehaviour of pullbench's own servers.

A :class:`Misbehavior` is handed to a server (the embedded registry) to make it break the protocol
on purpose, so tests inject faults with a real server rather than by patching the client. Faults
that happen a limited number of times (``fail_times``, ``body_fault_times``) are counted by the
:class:`Misbehavior` object itself: assign a new one to start counting again. What the server
did is recorded in :attr:`Misbehavior.seen` (:class:`FaultRecord`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultRecord", "Misbehavior"]

_SHAKE = {"shake_128": hashlib.shake_128, "shake_256": hashlib.shake_256}  # variable length


@dataclass(slots=True)
class FaultRecord:
    """What a misbehaving server did (thread-safe counters, for tests and reports).

    Attributes
    ----------
    failed : int
        Requests answered with ``fail_status``.
    body_faults : int
        Blob bodies cut, stalled or trickled.
    filler_bytes : int
        Bytes of the endless error bodies sent before the client hung up.
    stalls_started : int
        Blob bodies that went into a stall (or trickle).
    stalls_ended_by_client : int
        Stalled bodies that ended because the client closed the connection (not ``stall_s``).
    stalls_timed_out : int
        Stalled bodies that ended because ``stall_s`` passed.
    range_requests : list of str
        ``Range`` headers of blob requests, in order.
    """

    failed: int = 0
    body_faults: int = 0
    filler_bytes: int = 0
    stalls_started: int = 0
    stalls_ended_by_client: int = 0
    stalls_timed_out: int = 0
    range_requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, name: str, limit: int | None) -> bool:
        """Count one use of fault ``name``; False once ``limit`` uses were made (None: no limit)."""
        with self.lock:
            used = int(getattr(self, name))
            if limit is not None and used >= limit:
                return False
            setattr(self, name, used + 1)
            return True

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, int(getattr(self, name)) + amount)


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
        Answer requests under ``/v2/<name>/`` with this status (e.g. 429, 500, 503).
    fail_times : int or None
        Only the first this-many such requests fail (None: all of them); a flaky registry.
    fail_on : str or None
        Fail only requests of this kind: ``"manifests"``, ``"blobs"``, ``"tags"``,
        ``"blobs/uploads"``, optionally after a method (``"GET blobs"``: blob downloads only, not
        the HEADs of a push). None: every request.
    retry_after : str or None
        ``Retry-After`` value sent with ``fail_status`` (seconds, or an HTTP-date); ``""`` sends
        none. None sends ``0`` with 429 and 503, and nothing with other statuses.
    fail_by_closing : bool
        Instead of answering ``fail_status``, close the connection without any response (a
        connection error before the body starts).
    fail_plain_body : bool
        The failure's body is plain text (``Too Many Requests``), not a JSON error.
    error_body_bytes : int
        Every error answer (404, 401, ``fail_status`` ...) sends a JSON error body this many
        bytes long, without ``Content-Length``, as fast as the client takes it: a client that
        reads error bodies without a bound runs out of memory.
    drop_after_bytes : int or None
        Close the connection after this many bytes of a blob body (registry going away mid-pull;
        each response, also a resumed one, is cut after this many of *its* bytes).
    drop_reset : bool
        Cut with a TCP reset (``SO_LINGER`` 0) instead of a FIN.
    stall_after_bytes : int or None
        After this many bytes of a blob body, stop sending and hold the connection open until
        the client hangs up or ``stall_s`` passes.
    stall_s : float
        Longest stall (seconds); then the connection is closed.
    trickle_bytes_s : float or None
        During the stall, send one byte every ``1/trickle_bytes_s`` seconds instead of nothing
        (a slow trickle that never trips a read timeout).
    body_fault_times : int or None
        Only the first this-many blob bodies are cut, stalled or trickled (None: all).
    ignore_range : bool
        Answer blob requests with ``Range`` with ``200`` and the whole blob.
    digest_algorithm : str or None
        Serve image manifests whose layer digests use this ``hashlib`` algorithm (e.g.
        ``"md5"``, ``"shake_128"``), computed over the real layer bytes;
        ``Docker-Content-Digest`` is the sha256 of the bytes served.
    content_digest : str or None
        Send this ``Docker-Content-Digest`` with every manifest instead of the real one.

    Attributes
    ----------
    seen : FaultRecord
        What the server did with this misbehaviour (counters are per object).
    """

    corrupt_blobs: bool = False
    truncate_blobs_bytes: int = 0
    extra_blob_bytes: int = 0
    blob_content_encoding: str | None = None
    malformed_manifests: bool = False
    manifest_media_type: str | None = None
    latency_s: float = 0.0
    fail_status: int | None = None
    fail_times: int | None = None
    fail_on: str | None = None
    retry_after: str | None = None
    fail_plain_body: bool = False
    fail_by_closing: bool = False
    error_body_bytes: int = 0
    drop_after_bytes: int | None = None
    drop_reset: bool = False
    stall_after_bytes: int | None = None
    stall_s: float = 60.0
    trickle_bytes_s: float | None = None
    body_fault_times: int | None = None
    ignore_range: bool = False
    digest_algorithm: str | None = None
    content_digest: str | None = None
    seen: FaultRecord = field(default_factory=FaultRecord, compare=False, repr=False)

    def should_fail(self, kind: str, method: str = "GET") -> bool:
        """True when a ``method`` request of ``kind`` (``"manifests"``, ``"blobs"``, ...) gets
        ``fail_status`` now (counts it)."""
        if self.fail_status is None:
            return False
        if self.fail_on is not None and self.fail_on not in (kind, f"{method} {kind}"):
            return False
        return self.seen.take("failed", self.fail_times)

    def failure_headers(self) -> dict[str, str]:
        """Extra headers of a ``fail_status`` answer."""
        if self.retry_after is not None:
            return {"Retry-After": self.retry_after} if self.retry_after else {}
        return {"Retry-After": "0"} if self.fail_status in (429, 503) else {}

    @property
    def has_body_fault(self) -> bool:
        return self.drop_after_bytes is not None or self.stall_after_bytes is not None

    def take_body_fault(self, length: int) -> int | None:
        """Where a blob body of ``length`` bytes is cut or stalled, or None (counts a use)."""
        at = self.drop_after_bytes if self.drop_after_bytes is not None else self.stall_after_bytes
        if at is None or at >= length or not self.seen.take("body_faults", self.body_fault_times):
            return None
        return max(0, at)

    def rewrite_manifest(self, data: bytes, read_blob: Callable[[str], bytes]) -> bytes:
        """The manifest bytes to serve under ``digest_algorithm`` (unchanged when off).

        Layer descriptors (not the config) get ``<algorithm>:<hex of the layer's bytes>``;
        ``read_blob(sha256_digest)`` returns a stored blob.
        """
        if not self.digest_algorithm:
            return data
        try:
            doc: Any = json.loads(data)
        except ValueError:
            return data
        if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
            return data
        for layer in doc["layers"]:
            blob = read_blob(layer["digest"])
            shake = _SHAKE.get(self.digest_algorithm)
            hexdigest = (shake(blob).hexdigest(32) if shake is not None
                         else hashlib.new(self.digest_algorithm, blob).hexdigest())
            layer["digest"] = f"{self.digest_algorithm}:{hexdigest}"
        return json.dumps(doc).encode()
