"""HTTP plumbing of the registry client: body caps, retry policy, Retry-After, redirect checks.

Bodies read into memory (tokens, error bodies, manifests) are read incrementally up to a cap and
refused past it (:func:`read_capped`); the caps are :data:`BODY_CAPS`. Transient answers
(:data:`RETRY_STATUSES`) and connection errors before a body starts are retried under a
:class:`RetryPolicy`: capped exponential backoff with jitter, ``Retry-After`` honoured (seconds or
an HTTP-date, RFC 9110 §10.2.3) up to a cap, a number of attempts and a deadline per request.
Redirects are followed hop by hop by the client itself (:func:`check_redirect`), so that it
decides per hop whether credentials go along and can say why it stopped.

What other clients do (registry-protocol.md §5): containers/image retries 429 up to 5 times
honouring ``Retry-After`` with a 2 s doubling backoff capped at 60 s
(containers/image:docker/docker_client.go); regclient backs off 0.1 s → 30 s and honours
``Retry-After`` (regclient/regclient:internal/reghttp/http.go); ggcr retries
408/429/500/502/503/504 (google/go-containerregistry:pkg/v1/remote/options.go). Go's
``http.Client`` stops after 10 redirects (golang/go:src/net/http/client.go), as we do.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from .._errors import ClientConfigError, RegistryError, ResponseTooLarge

__all__ = [
    "BODY_CAPS",
    "MAX_REDIRECTS",
    "RETRY_STATUSES",
    "RetryPolicy",
    "TransferCounters",
    "check_redirect",
    "origin",
    "parse_retry_after",
    "read_capped",
]

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB

#: The most pullbench reads into memory from one response, by kind (bytes). Manifests: the
#: distribution-spec says registries SHOULD accept manifests of at least 4 MiB; tokens: 1 MiB,
#: where skopeo 1.9 stops reading a token answer (measured against a token endpoint streaming
#: without end); error bodies are small JSON documents (distribution-spec "Error Codes"); tag
#: and catalogue lists get the manifest's cap.
BODY_CAPS: Mapping[str, int] = {
    "manifest": 4 * MiB,
    "token": 1 * MiB,
    "error": 64 * KiB,
    "list": 4 * MiB,
}
#: Statuses worth another attempt (as ggcr's default retry set; containerd retries 408/429).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Redirect hops followed before giving up (Go's net/http stops after 10).
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_PIECE = 64 * KiB


def _human(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // KiB} KiB"


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, the port defaulted (80/443): what "host" means for
    credentials (RFC 6454 origin; requests' ``should_strip_auth`` compares the same parts)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def netloc(url: str) -> str:
    """``host[:port]`` of a URL, as a message names it."""
    return urlsplit(url).netloc


def read_capped(resp: requests.Response, kind: str, what: str, *,
                registry: str | None = None, image_ref: str | None = None) -> bytes:
    """Read a streamed response's body into memory, at most ``BODY_CAPS[kind]`` bytes.

    Reads 64 KiB pieces (urllib3 ``stream``, content decoding on; urllib3 ≥ 2.6 bounds each
    decoded piece too) and stops as soon as the cap is passed; a ``Content-Length`` above the cap
    is refused before reading. The response is closed.

    Parameters
    ----------
    resp : requests.Response
        Opened with ``stream=True``.
    kind : {"manifest", "token", "error", "list"}
    what : str
        Names the body in the error (e.g. ``"manifest 127.0.0.1:5000/app:v1"``).

    Returns
    -------
    bytes

    Raises
    ------
    ResponseTooLarge
        The body is (or declares itself) larger than the cap; the message names the cap.
    """
    cap = BODY_CAPS[kind]
    where = netloc(resp.url) if resp.url else (registry or "?")
    try:
        declared = int(resp.headers.get("Content-Length", ""))
    except ValueError:
        declared = -1
    if declared > cap:
        resp.close()
        raise ResponseTooLarge(
            f"{what}: {where} declares a {declared}-byte body, over pullbench's {_human(cap)} "
            f"cap for a {kind} body; nothing was read",
            cap_bytes=cap, registry=registry, image_ref=image_ref)
    parts: list[bytes] = []
    total = 0
    try:
        for piece in resp.raw.stream(_READ_PIECE, decode_content=True):
            total += len(piece)
            if total > cap:
                raise ResponseTooLarge(
                    f"{what}: {where} sent more than pullbench's {_human(cap)} cap for a {kind} "
                    f"body; stopped reading at {total} bytes",
                    cap_bytes=cap, registry=registry, image_ref=image_ref)
            parts.append(piece)
    finally:
        resp.close()
    return b"".join(parts)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date (RFC 9110
    §10.2.3). A date in the past gives 0; an unparsable value, None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before a fault becomes an error.

    Parameters
    ----------
    attempts : int
        Tries per request, the first included (1 disables retries and resumes). A blob body cut
        off after progress resumes without using one up.
    deadline_s : float
        No new attempt of a request starts once this many seconds have passed since its first
        attempt, and no wait may end past it (seconds).
    backoff_initial_s, backoff_max_s : float
        Wait before retry *n* (*n* ≥ 1): ``min(backoff_max_s, backoff_initial_s · 2^(n-1))``
        scaled by a random factor in [0.5, 1) ("equal jitter"), seconds.
    retry_after_max_s : float
        A ``Retry-After`` longer than this is capped to it (seconds).
    speed_limit_bytes_s : int
        Low-speed limit of a blob body (bytes per second): a transfer averaging fewer bytes per
        second than this over ``speed_time_s`` is cut and resumed (curl's ``--speed-limit``).
        0 turns the check off.
    speed_time_s : float
        The window of that check, seconds (curl's ``--speed-time``). Also the socket read timeout
        for a blob body, so a body that stops dead is caught in the same time.
    max_resumes : int
        Range requests allowed per blob (a server that cuts every response after a few bytes
        cannot keep the client busy forever).
    seed : int or None
        Seed of the jitter's random generator (None: from the OS).

    Raises
    ------
    ClientConfigError
        A value out of range (the message names it).
    """

    attempts: int = 4
    deadline_s: float = 120.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    speed_limit_bytes_s: int = 1024
    speed_time_s: float = 30.0
    max_resumes: int = 16
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        checks = [
            ("attempts", isinstance(self.attempts, int) and self.attempts >= 1, "an integer ≥ 1"),
            ("deadline_s", self.deadline_s > 0, "> 0 seconds"),
            ("backoff_initial_s", self.backoff_initial_s >= 0, "≥ 0 seconds"),
            ("backoff_max_s", self.backoff_max_s >= self.backoff_initial_s,
             "≥ backoff_initial_s"),
            ("retry_after_max_s", self.retry_after_max_s >= 0, "≥ 0 seconds"),
            ("speed_limit_bytes_s", isinstance(self.speed_limit_bytes_s, int)
             and self.speed_limit_bytes_s >= 0, "an integer ≥ 0 bytes per second"),
            ("speed_time_s", self.speed_time_s > 0, "> 0 seconds"),
            ("max_resumes", isinstance(self.max_resumes, int) and self.max_resumes >= 0,
             "an integer ≥ 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ClientConfigError(
                    f"RetryPolicy {name}={getattr(self, name)!r} must be {expected}")
        object.__setattr__(self, "_rng", random.Random(self.seed))

    def backoff_s(self, failures: int) -> float:
        """The jittered wait before retry number ``failures`` (≥ 1), seconds."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(failures - 1, 0))
        return float(base * (0.5 + self._rng.random() / 2))

    def wait_s(self, failures: int, retry_after: float | None) -> float:
        """The wait before the next attempt: ``Retry-After`` (capped) if given, else backoff."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        return self.backoff_s(failures)


@dataclass(slots=True)
class TransferCounters:
    """What the client had to do beyond the plain protocol (thread-safe; for results columns).

    Attributes
    ----------
    retries : int
        Requests sent again after a transient status or a connection error.
    resumes : int
        Range requests that continued an interrupted blob body (or restarted it from zero).
    backoff_s : float
        Seconds spent waiting before retries and resumes.
    """

    retries: int = 0
    resumes: int = 0
    backoff_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, retries: int = 0, resumes: int = 0, backoff_s: float = 0.0) -> None:
        with self._lock:
            self.retries += retries
            self.resumes += resumes
            self.backoff_s += backoff_s

    def snapshot(self) -> tuple[int, int, float]:
        """``(retries, resumes, backoff_s)`` now."""
        with self._lock:
            return self.retries, self.resumes, self.backoff_s


def is_redirect(resp: requests.Response) -> bool:
    return resp.status_code in _REDIRECT_STATUSES and "Location" in resp.headers


def check_redirect(chain: list[str], target: str, *, what: str, registry: str | None,
                   image_ref: str | None) -> None:
    """Refuse a redirect hop pullbench will not follow; ``chain`` is the URLs so far.

    Raises
    ------
    RegistryError
        A scheme other than http/https (``file:``, ``ftp:``, ...), a downgrade from https to
        http, a loop (a URL seen before) or more than :data:`MAX_REDIRECTS` hops; the message
        names the cause and shows the chain.
    """
    shown = " → ".join([*chain, target])
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise RegistryError(
            f"{what}: {netloc(chain[-1])} redirected to a {scheme or 'relative'}: URL "
            f"({target[:200]}); pullbench follows only http and https redirects. Chain: {shown}",
            registry=registry, image_ref=image_ref)
    if urlsplit(chain[-1]).scheme.lower() == "https" and scheme == "http":
        raise RegistryError(
            f"{what}: {netloc(chain[-1])} redirected from https to plain http ({target[:200]}); "
            f"pullbench does not downgrade a TLS connection. Chain: {shown}",
            registry=registry, image_ref=image_ref)
    if target in chain:
        raise RegistryError(
            f"{what}: redirect loop after {len(chain) - 1} redirects: {shown}",
            registry=registry, image_ref=image_ref)
    if len(chain) > MAX_REDIRECTS:
        raise RegistryError(
            f"{what}: too many redirects (more than {MAX_REDIRECTS}): {shown}",
            registry=registry, image_ref=image_ref)


def transient_connection_error(exc: BaseException) -> bool:
    """A connection failure worth retrying (refused, reset, timed out before the headers);
    not a TLS verification failure or a malformed URL."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return False
    return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            urllib3.exceptions.ProtocolError))


def status_text(resp: requests.Response) -> str:
    reason = getattr(resp, "reason", "") or ""
    return f"{resp.status_code}{' ' + reason if reason else ''}"


def retry_after_of(resp: requests.Response) -> float | None:
    return parse_retry_after(resp.headers.get("Retry-After"))


def describe_wait(headers: Mapping[str, Any]) -> str:
    value = headers.get("Retry-After")
    return f"Retry-After: {value}" if value is not None else "backoff"
