"""Registry client over ``requests``: ping, auth, manifests (with platform selection), blobs.

Behaviour follows the OCI distribution-spec (v1.1.1, and ``main`` for redirects) and the facts in
registry-protocol.md: the four manifest media types in ``Accept`` (as containerd's resolver,
containerd/containerd:remotes/docker/resolver.go), dispatch on ``Content-Type`` with a fallback to
the JSON's shape, manifest bytes verified against the digest asked for or ``Docker-Content-Digest``,
blobs fetched with ``Accept-Encoding: identity`` and redirects followed without forwarding
``Authorization`` to another host (requests' ``Session.rebuild_auth`` strips it on a host, port or
scheme change; psf/requests:src/requests/sessions.py).

Auth: challenges from ``WWW-Authenticate``. ``Bearer`` → the token flow (GET realm with
``service`` and ``scope``, Basic credentials to the realm when given, ``token`` or
``access_token`` in the answer, ``expires_in`` honoured, cached per scope, refreshed once on 401);
``Basic`` → the credentials; a user-supplied token is sent as ``Bearer``. Credentials never appear
in logs, ``repr``, errors or results.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import platform as _platform
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .._errors import (
    AuthenticationError,
    ClientConfigError,
    DigestMismatch,
    ImageNotFound,
    ManifestError,
    RegistryError,
    RegistryUnavailable,
    ResponseTooLarge,
)
from .._media import INDEX_MEDIA_TYPES, MANIFEST_ACCEPT, MANIFEST_MEDIA_TYPES, is_valid_digest
from .._reference import DOCKER_HUB, DOCKER_HUB_API_HOST
from ._transport import (
    BODY_CAPS,
    RETRY_STATUSES,
    RetryPolicy,
    TransferCounters,
    check_redirect,
    describe_wait,
    is_redirect,
    netloc,
    origin,
    read_capped,
    retry_after_of,
    status_text,
    transient_connection_error,
)

__all__ = [
    "ClientConfigError",
    "Descriptor",
    "FetchedManifest",
    "Manifest",
    "Platform",
    "RegistryClient",
]

logger = logging.getLogger(__name__)

_SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_GENERIC_JSON = frozenset({"", "application/json", "text/plain", "application/octet-stream"})
#: Digest algorithms pullbench verifies: the ones registered by the OCI image-spec
#: (descriptor.md "Registered algorithms"). Any other is refused, never hashed.
DIGEST_ALGORITHMS = frozenset({"sha256", "sha512"})
_DEFAULT_TOKEN_TTL_S = 60.0  # docker token spec: expires_in defaults to 60 s
_TOKEN_EARLY_S = 5.0


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform ``os/architecture[/variant]``, normalized as containerd does.

    Normalization mirrors containerd/containerd:platforms/database.go (v1.6): ``x86_64``→``amd64``,
    ``aarch64``→``arm64`` (variant ``v8``/``8``→none), ``armhf``→``arm/v7``, ``armel``→``arm/v6``,
    ``arm`` without variant→``v7``, ``i386``→``386``, amd64 ``v1``→none.
    """

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (e.g. ``linux/arm64``, ``linux/arm/v7``).

        Raises
        ------
        ManifestError
            When the text does not have two or three non-empty ``/``-separated parts.
        """
        parts = text.strip().split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(
                f"invalid platform {text!r}; expected os/architecture[/variant], e.g. linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None).normalized()

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine (``linux`` and the normalized machine architecture)."""
        return cls(
            _platform.system().lower() or "linux", _platform.machine() or "amd64"
        ).normalized()

    def normalized(self) -> Platform:
        """Return the containerd-normalized form of this platform."""
        os_ = self.os.lower()
        arch = self.architecture.lower()
        variant = self.variant.lower() if self.variant else None
        if arch in {"x86_64", "x86-64"}:
            arch = "amd64"
        elif arch in {"i386", "i686"}:
            arch = "386"
        elif arch == "aarch64":
            arch = "arm64"
        elif arch == "armhf":
            arch, variant = "arm", "v7"
        elif arch == "armel":
            arch, variant = "arm", "v6"
        if arch == "arm64" and variant in {"8", "v8"}:
            variant = None
        if arch == "arm":
            if variant in {None, "7"}:
                variant = "v7"
            elif variant in {"5", "6", "8"}:
                variant = "v" + variant
        if arch == "amd64" and variant == "v1":
            variant = None
        return Platform(os_, arch, variant)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` (an index entry's platform) satisfies this wanted platform.

        A wanted platform without a variant accepts any variant of its architecture.
        """
        want, have = self.normalized(), other.normalized()
        if want.os != have.os or want.architecture != have.architecture:
            return False
        return want.variant is None or want.variant == have.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (image-spec descriptor.md).

    Attributes
    ----------
    media_type : str
    digest : str
        ``algorithm:encoded``.
    size_bytes : int
    urls : tuple of str
    platform : Platform or None
        Only for index entries.
    annotations : Mapping[str, str]
    """

    media_type: str
    digest: str
    size_bytes: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        """Alias of :attr:`size_bytes` (the descriptor field's name in JSON)."""
        return self.size_bytes

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "descriptor") -> Descriptor:
        """Build a descriptor from JSON; raise ManifestError when a field is missing or wrong."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where} is not a JSON object: {_snippet(obj)}")
        digest, size, media_type = obj.get("digest"), obj.get("size"), obj.get("mediaType", "")
        if not isinstance(digest, str) or not is_valid_digest(digest):
            raise ManifestError(f"{where} has an invalid digest {str(digest)[:200]!r}")
        _check_algorithm(digest, where)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where} {digest} has an invalid size {size!r}")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where} {digest} has a non-string mediaType")
        plat = obj.get("platform")
        platform = None
        if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
            platform = Platform(
                str(plat["os"]), str(plat["architecture"]), plat.get("variant") or None
            )
        urls = obj.get("urls") or ()
        annotations = obj.get("annotations") or {}
        return cls(
            media_type, digest, size, tuple(str(u) for u in urls), platform, dict(annotations)
        )


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """One manifest or index as the registry sent it, verified against its digest.

    Attributes
    ----------
    digest : str
        Digest of ``data`` (verified against the reference or ``Docker-Content-Digest``).
    media_type : str
        The effective media type (``Content-Type``, or inferred from the JSON's shape).
    data : bytes
        The exact bytes received.
    document : dict
        The parsed JSON.
    """

    digest: str
    media_type: str
    data: bytes
    document: Mapping[str, Any] = field(compare=False, hash=False)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest resolved for one platform.

    Attributes
    ----------
    digest : str
        The image manifest's digest.
    media_type : str
    data : bytes
        Its exact bytes.
    config : Descriptor
    layers : tuple of Descriptor
        Base layer first.
    index : FetchedManifest or None
        The index the manifest was selected from, if the reference named an index.
    platform : Platform or None
        The platform selected from the index.
    """

    digest: str
    media_type: str
    data: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index: FetchedManifest | None = None
    platform: Platform | None = None

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers: every blob a pull fetches."""
        return (self.config, *self.layers)


# ----------------------------------------------------------------------------- helpers


class _Credentials:
    """Holds a secret; its repr never shows it."""

    __slots__ = ("_basic", "_token")

    def __init__(self, basic: tuple[str, str] | None, token: str | None) -> None:
        self._basic = basic
        self._token = token

    def __repr__(self) -> str:
        return "<credentials redacted>"

    def basic_header(self) -> str | None:
        if self._basic is None:
            return None
        raw = f"{self._basic[0]}:{self._basic[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def has_basic(self) -> bool:
        return self._basic is not None

    @property
    def token(self) -> str | None:
        return self._token


_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse a ``WWW-Authenticate`` header into ``(scheme, params)`` (scheme lower-cased)."""
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def _snippet(obj: Any, limit: int = 120) -> str:
    text = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else str(obj)
    text = text.replace("\n", " ")
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _json_snippet(data: bytes, pos: int | None, width: int = 60) -> str:
    """Start of a document and, when far from it, the text just before the parse error."""
    text = " ".join(data.decode("utf-8", "replace").split())
    if pos is None or pos <= 2 * width:
        return repr(text[: 2 * width] + ("…" if len(text) > 2 * width else ""))
    compact_pos = len(" ".join(data[:pos].decode("utf-8", "replace").split()))
    return (
        repr(text[:width]) + " … " + repr(text[max(width, compact_pos - width) : compact_pos + 10])
    )


def _registry_error_text(data: bytes) -> str:
    """The registry's JSON error codes/messages (distribution-spec error body), if any."""
    try:
        body = json.loads(data)
        errs = body.get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs]
        return _snippet("; ".join(p for p in parts if p), 300).strip("'\"")
    except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
        return ""


def _check_algorithm(digest: str, where: str) -> None:
    """Refuse a digest whose algorithm is not sha256 or sha512 (ManifestError naming it)."""
    algorithm = digest.partition(":")[0]
    if algorithm not in DIGEST_ALGORITHMS:
        raise ManifestError(
            f"{where} uses digest algorithm {algorithm[:40]!r} ({digest[:80]}); pullbench accepts "
            "only the OCI-registered algorithms sha256 and sha512 (image-spec descriptor.md)"
        )


def _hasher_for(digest: str, where: str = "manifest") -> Any:
    _check_algorithm(digest, where)
    return hashlib.new(digest.partition(":")[0])


# ----------------------------------------------------------------------------- client


class RegistryClient:
    """A client for one registry host.

    Parameters
    ----------
    registry : str
        ``host[:port]`` (``docker.io`` is mapped to ``registry-1.docker.io``).
    plain_http : bool
        Use ``http://`` (only when asked: the ``--plain-http`` / ``insecure`` switch).
    ca_bundle : str or Path, optional
        CA certificates to verify TLS with. It wins over ``REQUESTS_CA_BUNDLE``: pullbench passes
        ``verify=`` explicitly on every request, because requests'
        ``Session.merge_environment_settings`` lets that variable override ``Session.verify``.
        Without it, verification uses requests' default (``REQUESTS_CA_BUNDLE`` or certifi).
    credentials : (str, str), optional
        Username and password for Basic auth or for the token endpoint.
    token : str, optional
        A Bearer token sent as is.
    session : requests.Session, optional
        The HTTP seam (connection pools, adapters); a new one by default.
    timeout_s : float
        Connect and read timeout per request (seconds).
    retry : RetryPolicy, optional
        Retries, backoff, deadline, resume and low-speed limits (default ``RetryPolicy()``).

    Attributes
    ----------
    counters : TransferCounters
        Retries, resumes and backoff seconds this client needed so far.

    Raises
    ------
    ClientConfigError
        When ``ca_bundle`` does not exist or both ``credentials`` and ``token`` are given.
    """

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        ca_bundle: str | Path | None = None,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
        session: requests.Session | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not registry or "/" in registry:
            raise ClientConfigError(f"invalid registry {registry!r}; expected host[:port]")
        self.registry = registry
        self.api_host = (
            DOCKER_HUB_API_HOST if registry in {DOCKER_HUB, "index.docker.io"} else registry
        )
        self.plain_http = plain_http
        self.base_url = f"{'http' if plain_http else 'https'}://{self.api_host}"
        self._origin = origin(self.base_url)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ClientConfigError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.retry = retry if retry is not None else RetryPolicy()
        self.counters = TransferCounters()
        if ca_bundle is not None:
            path = Path(ca_bundle)
            if not path.is_file():
                raise ClientConfigError(
                    f"CA bundle {str(path)!r} does not exist or is not a file; pass a PEM file",
                    registry=registry,
                )
            self._verify: bool | str = str(path)
        else:
            self._verify = True
        if credentials is not None and token is not None:
            raise ClientConfigError(
                "give either credentials or a token, not both", registry=registry
            )
        if credentials is not None and (
            len(credentials) != 2 or not all(isinstance(c, str) for c in credentials)
        ):
            raise ClientConfigError(
                "credentials must be a (username, password) pair of strings", registry=registry
            )
        self._creds = _Credentials(credentials, token)
        self.session = session if session is not None else requests.Session()
        self._owns_session = session is None
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, plain_http={self.plain_http})"

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def verify(self) -> bool | str:
        """What is passed as ``verify=`` on every request."""
        return self._verify

    # -- auth -----------------------------------------------------------------

    def _auth_header(self, scope: str | None) -> str | None:
        if self._creds.token is not None:
            return f"Bearer {self._creds.token}"
        challenge = self._challenge
        if challenge is None:
            return None
        scheme, params = challenge
        if scheme == "basic":
            return self._creds.basic_header()
        if scheme == "bearer":
            key = scope or ""
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
            return f"Bearer {self._fetch_token(params, scope)}"
        return None

    def _fetch_token(self, params: dict[str, str], scope: str | None) -> str:
        """GET the realm the registry named in its own challenge (Basic credentials go there,
        and only there: a redirect to another host drops them)."""
        realm = params.get("realm", "")
        if urlsplit(realm).scheme.lower() not in ("http", "https") or not urlsplit(realm).netloc:
            raise AuthenticationError(
                f"{self.registry} sent a Bearer challenge without a usable realm ({realm[:200]!r});"
                " the realm must be an absolute http(s) URL", registry=self.registry
            )
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        if scope:
            query["scope"] = scope
        url = requests.Request("GET", realm, params=query).prepare().url or realm
        basic = self._creds.basic_header()
        what = f"token request to realm {realm}"
        resp = self._send_with_retries("GET", url, headers={}, auth=(origin(realm), basic),
                                       what=what, image_ref=None)
        if resp.status_code in (401, 403):
            detail = self._error_detail(resp)
            how = (
                "the credentials were refused"
                if basic
                else "anonymous access was refused; pass credentials"
            )
            raise AuthenticationError(
                f"token request to realm {realm} for scope {scope!r} failed "
                f"({resp.status_code}): {how}{detail}",
                registry=self.registry,
            )
        if resp.status_code != 200:
            detail = self._error_detail(resp)
            raise AuthenticationError(
                f"token request to realm {realm} answered {resp.status_code}{detail}",
                registry=self.registry,
            )
        data = self._read_body(resp, "token", f"token answer of realm {realm}", None)
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise AuthenticationError(
                f"token endpoint (realm {realm}) sent non-JSON: {_snippet(data)}",
                registry=self.registry,
            ) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(
                f"token endpoint (realm {realm}) sent no token or access_token",
                registry=self.registry,
            )
        try:
            ttl = float(body.get("expires_in") or _DEFAULT_TOKEN_TTL_S)
        except (TypeError, ValueError):
            ttl = _DEFAULT_TOKEN_TTL_S
        expiry = time.monotonic() + max(ttl - _TOKEN_EARLY_S, ttl / 2)
        with self._lock:
            self._tokens[scope or ""] = (token, expiry)
        logger.debug(
            "fetched token for scope %s from realm %s (expires_in %.0f s)", scope, realm, ttl
        )
        return token

    def _absorb_challenge(
        self, resp: requests.Response, scope: str | None, sent: str | None
    ) -> None:
        """Handle a 401: remember the challenge, or raise AuthenticationError naming the realm."""
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header)
        realm = params.get("realm", "(none)")
        if scheme == "basic":
            if not self._creds.has_basic or (sent or "").startswith("Basic "):
                raise AuthenticationError(
                    f"{self.registry} requires Basic credentials (realm {realm!r}); "
                    + ("they were refused" if sent else "pass credentials=(user, password)"),
                    registry=self.registry,
                )
        elif scheme == "bearer":
            if self._creds.token is not None:
                raise AuthenticationError(
                    f"{self.registry} refused the Bearer token given (realm {realm!r})",
                    registry=self.registry,
                )
            with self._lock:
                self._tokens.pop(scope or "", None)  # expired or revoked: refresh once
        else:
            raise AuthenticationError(
                f"{self.registry} answered 401 with an unusable challenge {scheme or '(none)'!r} "
                f"(realm {realm!r})",
                registry=self.registry,
            )
        self._challenge = (scheme, params)

    def _foreign_challenge(self, resp: requests.Response, chain: list[str], what: str,
                           image_ref: str | None) -> AuthenticationError:
        """The error for a 401 from a host the registry redirected to (a CDN): its challenge is
        never answered with the user's credentials."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        asked = scheme.capitalize() or "(no scheme)"
        realm = params.get("realm")
        resp.close()
        return AuthenticationError(
            f"{what}: {self.api_host} redirected to {netloc(resp.url)}, which answered 401 "
            f"asking for {asked} credentials"
            + (f" from realm {realm}" if realm else "")
            + f"; pullbench sends credentials only to {self.api_host} and to the token realm "
            f"{self.api_host} names itself, so it did not answer. Redirects: "
            + " → ".join(chain),
            registry=self.registry,
            image_ref=image_ref,
        )

    # -- transport ------------------------------------------------------------

    def _send(self, method: str, url: str, *, headers: Mapping[str, str],
              auth: tuple[tuple[str, str, int], str | None], what: str,
              image_ref: str | None, read_timeout_s: float | None = None,
              ) -> tuple[requests.Response, list[str]]:
        """One attempt: send, following redirects hop by hop (at most ``MAX_REDIRECTS``).

        ``auth`` is ``(origin, header)``: the ``Authorization`` header goes only to requests whose
        origin (scheme, host, port) is that one. Each hop is checked (:func:`check_redirect`).
        Bodies are always streamed; the caller reads them with a cap or a copy strategy.
        """
        chain = [url]
        auth_origin, auth_value = auth
        timeout = (self.timeout_s, read_timeout_s if read_timeout_s is not None
                   else self.timeout_s)
        while True:
            hdrs = dict(headers)
            if auth_value is not None and origin(url) == auth_origin:
                hdrs["Authorization"] = auth_value
            resp = self.session.request(
                method, url, headers=hdrs, stream=True, verify=self._verify,
                timeout=timeout, allow_redirects=False,
            )
            if not is_redirect(resp):
                return resp, chain
            target = urljoin(url, resp.headers["Location"])
            resp.close()
            check_redirect(chain, target, what=what, registry=self.registry,
                           image_ref=image_ref)
            if resp.status_code == 303 and method != "HEAD":
                method = "GET"
            chain.append(target)
            url = target

    def _connection_error(self, exc: requests.RequestException, url: str,
                          image_ref: str | None, attempts: int) -> RegistryUnavailable:
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryUnavailable(
                f"TLS verification with {netloc(url)} failed: {_tls_problem(exc)}; pass "
                "--ca-bundle (ca_bundle= in Python) with the registry's CA, or --plain-http "
                "(plain_http=True in Python) for a plain-HTTP registry",
                registry=self.registry,
                image_ref=image_ref,
            )
        cause = _root_cause(exc)
        if netloc(url) != self.api_host:
            hint = f"{netloc(url)} is where {self.api_host} sent the request"
        elif self.plain_http:
            hint = "is the registry running?" + (
                "" if isinstance(cause[0], ConnectionRefusedError) else
                " If it serves HTTPS, drop --plain-http (plain_http=False in Python)."
            )
        else:
            hint = ("is the registry running, and serving HTTPS? For a plain-HTTP "
                    "registry pass --plain-http (plain_http=True in Python).")
        return RegistryUnavailable(
            f"cannot reach {url}{tried}: {cause[1]}; {hint}",
            registry=self.registry,
            image_ref=image_ref,
        )

    def _send_with_retries(self, method: str, url: str, *, headers: Mapping[str, str],
                           auth: tuple[tuple[str, str, int], str | None], what: str,
                           image_ref: str | None, read_timeout_s: float | None = None,
                           on_attempt: Any = None) -> requests.Response:
        """:meth:`_send`, again after a transient status or connection error (the policy).

        ``on_attempt`` (optional) is called before each attempt and returns the ``auth`` to
        use (so a token can be refreshed between attempts).
        """
        policy = self.retry
        started = time.monotonic()
        failures = 0
        while True:
            if on_attempt is not None:
                auth = on_attempt()
            try:
                resp, chain = self._send(method, url, headers=headers, auth=auth, what=what,
                                         image_ref=image_ref, read_timeout_s=read_timeout_s)
            except RegistryError:
                raise
            except requests.RequestException as exc:
                if transient_connection_error(exc):
                    wait = self._retry_wait(policy, failures + 1, started, None)
                    if wait is not None:
                        failures += 1
                        self._pause(wait, f"{what}: {_root_cause(exc)[1]}", failures, policy,
                                    "backoff")
                        continue
                raise self._connection_error(exc, url, image_ref, failures + 1) from None
            if resp.status_code in RETRY_STATUSES:
                retry_after = retry_after_of(resp)
                wait = self._retry_wait(policy, failures + 1, started, retry_after)
                if wait is not None:
                    failures += 1
                    how = describe_wait(resp.headers)
                    resp.close()
                    self._pause(wait, f"{what}: {netloc(resp.url)} answered {status_text(resp)}",
                                failures, policy, how)
                    continue
                detail = self._error_detail(resp)
                elapsed = time.monotonic() - started
                tries = (f" {failures + 1} times in {elapsed:.1f} s (RetryPolicy attempts="
                         f"{policy.attempts}, deadline_s={policy.deadline_s:g})"
                         if failures else "")
                asked = ""
                if retry_after is not None and retry_after + elapsed > policy.deadline_s:
                    asked = (f"; it asked to wait {retry_after:.0f} s (Retry-After), past the "
                             "deadline")
                cls = RegistryError if resp.status_code == 429 else RegistryUnavailable
                raise cls(
                    f"{what}: {netloc(resp.url)} answered {resp.status_code}{tries}{detail}"
                    f"{asked}; try again later, or allow more attempts (--retries)",
                    registry=self.registry, image_ref=image_ref,
                )
            resp.redirect_chain = chain  # type: ignore[attr-defined]
            return resp

    def _retry_wait(self, policy: RetryPolicy, failures: int, started: float,
                    retry_after: float | None) -> float | None:
        """The wait before another attempt, or None when the policy says stop."""
        if failures >= policy.attempts:
            return None
        wait = policy.wait_s(failures, retry_after)
        if time.monotonic() - started + wait > policy.deadline_s:
            return None
        return wait

    def _pause(self, wait: float, why: str, failures: int, policy: RetryPolicy,
               how: str) -> None:
        logger.warning("%s; retrying in %.2f s (%s; attempt %d of %d)", why, wait, how,
                       failures + 1, policy.attempts)
        self.counters.add(retries=1, backoff_s=wait)
        time.sleep(wait)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = True,
        image_ref: str | None = None,
        what: str | None = None,
        read_timeout_s: float | None = None,
    ) -> requests.Response:
        """Send a request to ``base_url + path`` with auth; retry once after a 401 challenge.

        Transient answers (:data:`~pullbench._transport.RETRY_STATUSES`) and connection errors
        are retried under :attr:`retry`; redirects are followed hop by hop, ``Authorization``
        only ever going to the registry's own origin. The body is always streamed (``stream`` is
        kept for compatibility): read it with a cap or a copy strategy, or close the response.
        Returns the response whatever its status (other than those raised below).

        Raises
        ------
        RegistryUnavailable
            Connection or TLS failure, or a 5xx still there after the retries.
        RegistryError
            429 still there after the retries; a redirect pullbench refuses (scheme, loop,
            too many hops; the message shows the chain).
        AuthenticationError
            401 without usable credentials (names the realm), or a 401 from a host the
            registry redirected to (names both hosts).
        """
        url = self.base_url + path
        what = what or f"{method} {path}"
        sent: str | None = None

        def current_auth() -> tuple[tuple[str, str, int], str | None]:
            nonlocal sent
            sent = self._auth_header(scope)
            return self._origin, sent

        for attempt in range(2):
            resp = self._send_with_retries(
                method, url, headers=dict(headers or {}), auth=(self._origin, None), what=what,
                image_ref=image_ref, read_timeout_s=read_timeout_s, on_attempt=current_auth,
            )
            if resp.status_code != 401:
                return resp
            chain: list[str] = getattr(resp, "redirect_chain", [url])
            if origin(resp.url) != self._origin:
                raise self._foreign_challenge(resp, chain, what, image_ref)
            resp.close()
            if attempt == 1:
                _, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                raise AuthenticationError(
                    f"{self.registry} refused access to {image_ref or path} after authenticating "
                    f"(realm {params.get('realm', '(none)')!r}); check the credentials and their "
                    "scope",
                    registry=self.registry,
                    image_ref=image_ref,
                )
            self._absorb_challenge(resp, scope, sent)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_body(self, resp: requests.Response, kind: str, what: str,
                   image_ref: str | None) -> bytes:
        """:func:`read_capped`, a connection lost mid-body becoming RegistryUnavailable."""
        try:
            return read_capped(resp, kind, what, registry=self.registry, image_ref=image_ref)
        except (requests.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError) as exc:
            raise RegistryUnavailable(
                f"{what}: the connection to {netloc(resp.url)} failed while reading the body: "
                f"{_root_cause(exc)[1]}", registry=self.registry, image_ref=image_ref,
            ) from None

    def _error_detail(self, resp: requests.Response) -> str:
        """`` (CODE: message; ...)`` from a registry error body, read up to the error cap."""
        try:
            data = read_capped(resp, "error", "error body", registry=self.registry)
        except ResponseTooLarge:
            return (f" (its error body passed pullbench's {BODY_CAPS['error'] // 1024} KiB cap "
                    "and was not read)")
        except (requests.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError):
            return ""
        text = _registry_error_text(data)
        return f" ({text})" if text else ""

    def ping(self) -> dict[str, str]:
        """``GET /v2/``: check the registry speaks the distribution API; learn its challenge.

        Returns
        -------
        dict
            ``{"status": "200", "api_version": <Docker-Distribution-Api-Version or "">}``.

        Raises
        ------
        RegistryUnavailable, AuthenticationError, RegistryError
        """
        resp = self.request("GET", "/v2/", what=f"ping of {self.registry}")
        resp.close()
        if resp.status_code != 200:
            raise RegistryError(
                f"{self.base_url}/v2/ answered {resp.status_code}; not a distribution registry?",
                registry=self.registry,
            )
        return {
            "status": str(resp.status_code),
            "api_version": resp.headers.get("Docker-Distribution-Api-Version", ""),
        }

    def _check(self, resp: requests.Response, what: str, image_ref: str) -> None:
        if resp.status_code in (200, 206):
            return
        suffix = self._error_detail(resp)
        if resp.status_code == 404:
            raise ImageNotFound(
                f"{what} not found: {image_ref} on {self.registry} (404){suffix}",
                registry=self.registry,
                image_ref=image_ref,
            )
        if resp.status_code == 403:
            raise AuthenticationError(
                f"{what} {image_ref}: access denied by {self.registry} (403){suffix}",
                registry=self.registry,
                image_ref=image_ref,
            )
        if resp.status_code >= 500:
            raise RegistryUnavailable(
                f"{what} {image_ref}: {self.registry} answered {resp.status_code}{suffix}",
                registry=self.registry,
                image_ref=image_ref,
            )
        raise RegistryError(
            f"{what} {image_ref}: {self.registry} answered {resp.status_code}{suffix}",
            registry=self.registry,
            image_ref=image_ref,
        )

    # -- manifests ------------------------------------------------------------

    def fetch_manifest(self, repository: str, ref: str) -> FetchedManifest:
        """GET one manifest or index by tag or digest, verify it, and parse it.

        Raises
        ------
        ImageNotFound
            404; the message names the reference.
        DigestMismatch
            The bytes do not hash to the digest asked for or to ``Docker-Content-Digest``.
        ManifestError
            Malformed JSON (the message quotes a snippet), an unknown or unsupported media
            type, or a ``mediaType`` field contradicting ``Content-Type``.
        """
        image_ref = f"{self.registry}/{repository}{'@' if ':' in ref else ':'}{ref}"
        if ":" in ref:
            _check_algorithm(ref, f"reference {image_ref}")
        what = f"manifest {image_ref}"
        for attempt in range(1, self.retry.attempts + 1):
            resp = self.request(
                "GET",
                f"/v2/{repository}/manifests/{ref}",
                scope=f"repository:{repository}:pull",
                headers={"Accept": MANIFEST_ACCEPT},
                image_ref=image_ref,
                what=what,
            )
            self._check(resp, "manifest", image_ref)
            try:
                data = self._read_body(resp, "manifest", what, image_ref)
                break
            except RegistryUnavailable as exc:
                if attempt == self.retry.attempts:
                    raise
                wait = self.retry.backoff_s(attempt)
                self._pause(wait, str(exc), attempt, self.retry, "backoff")
        expected = (
            ref
            if is_valid_digest(ref) and ":" in ref
            else resp.headers.get("Docker-Content-Digest")
        )
        if expected and not is_valid_digest(expected):
            logger.warning(
                "ignoring invalid Docker-Content-Digest %r from %s", expected[:200], self.registry
            )
            expected = None
        algo_digest = expected or "sha256:"
        hasher = _hasher_for(algo_digest, f"{what} (Docker-Content-Digest)")
        hasher.update(data)
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        mismatch = bool(expected) and actual != expected
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            also = f" (and its bytes hash to {actual}, not {expected})" if mismatch else ""
            raise ManifestError(
                f"manifest {image_ref} is not valid JSON ({exc.__class__.__name__} at byte "
                f"{getattr(exc, 'pos', '?')} of {len(data)}): "
                f"{_json_snippet(data, getattr(exc, 'pos', None))}"
                f"{also}",
                registry=self.registry,
                image_ref=image_ref,
            ) from None
        if mismatch:
            raise DigestMismatch(
                f"manifest {image_ref}: received bytes hash to {actual}, expected {expected}",
                expected=str(expected),
                actual=actual,
                registry=self.registry,
                image_ref=image_ref,
            )
        if not isinstance(document, dict):
            raise ManifestError(
                f"manifest {image_ref} is not a JSON object: {_snippet(data)}",
                registry=self.registry,
                image_ref=image_ref,
            )
        media_type = self._dispatch(content_type, document, image_ref)
        return FetchedManifest(actual, media_type, data, document)

    def _dispatch(self, content_type: str, document: Mapping[str, Any], image_ref: str) -> str:
        declared = document.get("mediaType")
        known = INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES
        if content_type in _SCHEMA1 or declared in _SCHEMA1:
            raise ManifestError(
                f"manifest {image_ref} is Docker schema 1, which pullbench does not pull; "
                "push the image as schema 2 or OCI",
                registry=self.registry,
                image_ref=image_ref,
            )
        if content_type in known:
            if isinstance(declared, str) and declared and declared != content_type:
                raise ManifestError(
                    f"manifest {image_ref}: Content-Type {content_type!r} contradicts its "
                    "mediaType "
                    f"{declared!r}",
                    registry=self.registry,
                    image_ref=image_ref,
                )
            return content_type
        if content_type in _GENERIC_JSON:
            # Fall back to the JSON's shape (an index may lack a top-level mediaType).
            if isinstance(declared, str) and declared in known:
                return declared
            if isinstance(document.get("manifests"), list):
                return "application/vnd.oci.image.index.v1+json"
            if isinstance(document.get("layers"), list) and isinstance(
                document.get("config"), dict
            ):
                return "application/vnd.oci.image.manifest.v1+json"
        raise ManifestError(
            f"manifest {image_ref} has unknown media type {content_type or '(none)'!r}; "
            "pullbench understands " + ", ".join(sorted(known)),
            registry=self.registry,
            image_ref=image_ref,
        )

    def get_manifest(
        self, repository: str, ref: str, platform: str | Platform | None = None
    ) -> Manifest:
        """Resolve ``ref`` to an image manifest, selecting ``platform`` from an index.

        Parameters
        ----------
        repository : str
        ref : str
            Tag or digest.
        platform : str or Platform, optional
            ``os/arch[/variant]``; default: this host (:meth:`Platform.host`). Ignored when
            ``ref`` names a single-platform manifest. The first matching index entry wins
            (image-spec image-index.md).

        Raises
        ------
        ManifestError
            No entry of the index matches the platform (the message lists the available
            ones), or the manifest is malformed.
        ImageNotFound, DigestMismatch, AuthenticationError, RegistryUnavailable
        """
        want = (
            platform
            if isinstance(platform, Platform)
            else (Platform.parse(platform) if platform else Platform.host())
        )
        fetched = self.fetch_manifest(repository, ref)
        top_index: FetchedManifest | None = None
        chosen: Platform | None = None
        for _depth in range(4):
            if not fetched.is_index:
                break
            top_index = top_index or fetched
            entries = fetched.document.get("manifests")
            if not isinstance(entries, list):
                raise ManifestError(
                    f"index {fetched.digest} has no manifests list: {_snippet(fetched.data)}",
                    registry=self.registry,
                )
            descs = [
                Descriptor.from_json(e, where=f"index {fetched.digest} entry") for e in entries
            ]
            match = next(
                (d for d in descs if d.platform is not None and want.matches(d.platform)), None
            )
            if match is None:
                available = (
                    ", ".join(str(d.platform) for d in descs if d.platform) or "none declared"
                )
                raise ManifestError(
                    f"no manifest for platform {want} in index {fetched.digest} of "
                    f"{repository}:{ref}; "
                    f"available: {available} (choose one with platform=)",
                    registry=self.registry,
                )
            chosen = match.platform
            fetched = self.fetch_manifest(repository, match.digest)
        else:
            raise ManifestError(
                f"indexes nested deeper than 4 levels under {repository}:{ref}",
                registry=self.registry,
            )
        doc = fetched.document
        config = Descriptor.from_json(doc.get("config"), where=f"manifest {fetched.digest} config")
        layers_json = doc.get("layers")
        if not isinstance(layers_json, list):
            raise ManifestError(
                f"manifest {fetched.digest} has no layers list: {_snippet(fetched.data)}",
                registry=self.registry,
            )
        layers = tuple(
            Descriptor.from_json(layer, where=f"manifest {fetched.digest} layer")
            for layer in layers_json
        )
        return Manifest(
            fetched.digest, fetched.media_type, fetched.data, config, layers, top_index, chosen
        )

    # -- blobs ----------------------------------------------------------------

    def open_blob(
        self, repository: str, descriptor: Descriptor | Mapping[str, Any]
    ) -> requests.Response:
        """GET a blob as a streamed response (``stream=True``, ``Accept-Encoding: identity``).

        Redirects are followed hop by hop, ``Authorization`` going only to the registry itself.
        The read timeout is ``min(timeout_s, retry.speed_time_s)``. The caller reads the body (a
        copy strategy) and closes the response.

        Raises
        ------
        ImageNotFound
            404; names the blob digest and repository.
        ManifestError
            The digest's algorithm is not sha256 or sha512.
        AuthenticationError, RegistryUnavailable, RegistryError
        """
        return self.open_blob_range(repository, descriptor, 0)[0]

    def open_blob_range(
        self, repository: str, descriptor: Descriptor | Mapping[str, Any], offset: int
    ) -> tuple[requests.Response, int]:
        """GET a blob from byte ``offset`` on (a resume), as :meth:`open_blob` does.

        Sends the closed range ``Range: bytes=<offset>-<size-1>`` (in-memory ggcr registries
        parse only closed ranges; registry-protocol.md §1.3) and trusts only the answer's
        ``Content-Range``, not ``Accept-Ranges`` (containerd/containerd:remotes/docker/fetcher.go).

        Returns
        -------
        (response, start)
            ``start`` is ``offset`` for a 206 whose ``Content-Range`` starts there, or 0 when the
            registry sent the whole blob (200): the caller then restarts from zero.

        Raises
        ------
        RegistryError
            A 206 for another range than asked, or a 416 (the blob is shorter than its
            descriptor says).
        ImageNotFound, ManifestError, AuthenticationError, RegistryUnavailable
        """
        desc = (
            descriptor
            if isinstance(descriptor, Descriptor)
            else Descriptor.from_json(dict(descriptor))
        )
        _check_algorithm(desc.digest, f"blob {desc.digest[:80]}")
        image_ref = f"{self.registry}/{repository}@{desc.digest}"
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-{desc.size_bytes - 1}"
        resp = self.request(
            "GET",
            f"/v2/{repository}/blobs/{desc.digest}",
            scope=f"repository:{repository}:pull",
            headers=headers,
            image_ref=image_ref,
            what=f"blob {image_ref}" + (f" from byte {offset}" if offset else ""),
            read_timeout_s=min(self.timeout_s, self.retry.speed_time_s),
        )
        if offset > 0 and resp.status_code == 416:
            detail = self._error_detail(resp)
            raise RegistryError(
                f"blob {image_ref}: {netloc(resp.url)} refused the range from byte {offset} "
                f"(416){detail}: it holds fewer bytes than the descriptor's {desc.size_bytes}",
                registry=self.registry, image_ref=image_ref)
        self._check(resp, "blob", image_ref)
        start = 0
        if offset > 0 and resp.status_code == 206:
            got = resp.headers.get("Content-Range", "")
            want = f"bytes {offset}-{desc.size_bytes - 1}/"
            if not got.startswith(want) or got[len(want):] not in (str(desc.size_bytes), "*"):
                resp.close()
                raise RegistryError(
                    f"blob {image_ref}: asked for bytes {offset}-{desc.size_bytes - 1}, "
                    f"{netloc(resp.url)} answered 206 with Content-Range {got[:100]!r}",
                    registry=self.registry, image_ref=image_ref)
            start = offset
        elif resp.status_code == 206:
            resp.close()
            raise RegistryError(
                f"blob {image_ref}: {netloc(resp.url)} answered 206 to a request without Range",
                registry=self.registry, image_ref=image_ref)
        if urlsplit(resp.url).netloc != self.api_host:
            logger.debug(
                "blob %s served from %s after redirect", desc.digest, urlsplit(resp.url).netloc
            )
        return resp, start


def _tls_problem(exc: BaseException) -> str:
    """The certificate problem behind a requests SSLError (``certificate has expired``, ...).

    requests wraps urllib3's MaxRetryError, which wraps the ``ssl`` error; its text is long and
    the reason comes last, so a truncated ``str(exc)`` loses it. Walk the chain instead.
    """
    import ssl

    seen: set[int] = set()
    stack: list[object] = [exc]
    fallback = ""
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError) and item.verify_message:
            return f"certificate verify failed: {item.verify_message}"
        if isinstance(item, ssl.SSLError) and not fallback:
            fallback = f"{item.reason or item}"
        stack.extend([*item.args, getattr(item, "reason", None), item.__cause__,
                      item.__context__])
    return fallback or _short_exc(exc)


def _root_cause(exc: BaseException) -> tuple[BaseException, str]:
    """The innermost OS-level error behind a requests/urllib3 exception, and a short text.

    requests wraps urllib3's MaxRetryError, which wraps NewConnectionError, which wraps the
    socket's ``ConnectionRefusedError``; ``str(exc)`` is long and the reason comes last, so a
    truncated text loses it. Walks ``__cause__``, ``__context__``, ``args`` and urllib3's
    ``reason`` to the deepest :class:`OSError` with an ``strerror`` (e.g. ``ConnectionRefusedError:
    Connection refused``, ``gaierror: Name or service not known``); else the deepest timeout;
    else a shortened ``str(exc)``.
    """
    import socket

    seen: set[int] = set()
    best: tuple[int, OSError] | None = None
    timeout: BaseException | None = None
    stack: list[tuple[object, int]] = [(exc, 0)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror and (best is None or depth > best[0]):
            best = (depth, item)
        if isinstance(item, (TimeoutError, socket.timeout)) or "Timeout" in type(item).__name__:
            timeout = item
        stack.extend((child, depth + 1) for child in (
            *item.args, getattr(item, "reason", None), item.__cause__, item.__context__))
    if best is not None:
        inner = best[1]
        return inner, f"{type(inner).__name__}: {inner.strerror}"
    if timeout is not None:
        return timeout, f"timed out ({type(timeout).__name__})"
    return exc, _short_exc(exc)


def _short_exc(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text[:200]}" if text else "")
