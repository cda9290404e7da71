"""A Docker token-spec authorization server, and an authorizer for the embedded registry.

Flow (distribution/distribution:docs/spec/auth/token.md@v2.8.2):

1. The registry answers ``401`` with ``WWW-Authenticate: Bearer realm="<realm>",service="<svc>",
   scope="repository:<name>:pull"`` (:meth:`TokenServer.authorizer` does this for the embedded
   registry; Distribution does it itself, configured by :meth:`TokenServer.distribution_config`).
2. The client asks ``GET <realm>?service=<svc>&scope=<scope>[&scope=...]``, anonymously or with
   Basic credentials. Wrong credentials → ``401`` (naming the realm); otherwise the *intersection*
   of the requested and granted actions (a subset is not an error).
3. The answer is ``{"token", "access_token", "expires_in", "issued_at"}``; the token is a JWT
   (ES256) whose header carries ``x5c`` = the signing certificate, which chains to the CA file
   given to Distribution as ``rootcertbundle``. Claims ``iss``, ``sub``, ``aud`` (= service),
   ``exp``, ``nbf``, ``iat``, ``jti``, ``access`` as distribution 2.8.2 validates them
   (registry/auth/token/token.go).

Challenge styles: ``"distribution"`` (Distribution 2.8.2: ``error="invalid_token"`` when a token
is bad or expired), ``"dockerhub"`` (Docker Hub: run the realm on another address, e.g.
``host="127.0.0.2"``; ``/v2/`` is challenged without a scope; private repositories answer
``401 insufficient_scope`` to anonymous tokens instead of 404; anonymous pull tokens for
everything public) and ``"ghcr"`` (the token answer has only
``token``, no ``expires_in``: clients must assume the spec's 60 s default).

No token or password is ever logged; the server records what it issued (subject, scopes,
lifetime) for tests in :attr:`TokenServer.issued`.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import bcrypt
import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._errors import ServerError
from ._httpserver import QuietTLSHandler, ThreadedHTTPServer, ThreadedService
from ._tls import TLSMaterial

__all__ = ["IssuedToken", "TokenServer", "parse_scope"]

logger = logging.getLogger(__name__)

_REPO_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?:blobs/uploads|blobs|manifests|tags)(?:/.*)?$")
STYLES = ("distribution", "dockerhub", "ghcr")


def parse_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """Split ``type[(class)]:name:actions`` into its parts.

    The resource name may itself contain ``:`` (a registry host with a port), so the type is
    everything before the first ``:`` and the actions everything after the last one
    (distribution/distribution:docs/spec/auth/scope.md@v2.8.2).

    Returns
    -------
    tuple (type, name, actions) or None
        None for a malformed scope. ``type`` has any ``(class)`` suffix removed.
    """
    first = scope.find(":")
    last = scope.rfind(":")
    if first <= 0 or last == first:
        return None
    rtype = scope[:first].split("(", 1)[0]
    name = scope[first + 1:last]
    actions = tuple(a for a in scope[last + 1:].split(",") if a)
    if not name or not actions:
        return None
    return rtype, name, actions


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token the server handed out (the token itself is not kept).

    Attributes
    ----------
    subject : str
        User name, or ``""`` for an anonymous token.
    access : tuple of (type, name, actions)
        What the token grants.
    issued_at : float
        Unix time, seconds.
    expires_in_s : int
        Lifetime, seconds.
    """

    subject: str
    access: tuple[tuple[str, str, tuple[str, ...]], ...]
    issued_at: float
    expires_in_s: int


@dataclass(slots=True)
class _Counters:
    token_requests: int = 0
    bad_credentials: int = 0
    challenges: int = 0
    expired_rejections: int = 0
    invalid_rejections: int = 0
    insufficient_rejections: int = 0
    authorized: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(QuietTLSHandler):  # never logs query strings verbatim
    server: _Server
    log = logger
    label = "token server"

    def _send(self, status: int, body: dict[str, Any],
              headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.token_server._handle_token(self)

    def do_POST(self) -> None:
        # OAuth2 "password" grant (containerd tries POST first); answer 404 so clients fall back
        # to GET, as the token spec's basic flow is GET.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(404, {"errors": [{"code": "UNSUPPORTED", "message": "use GET"}]})


class _Server(ThreadedHTTPServer):
    token_server: TokenServer


class TokenServer(ThreadedService):
    """A token server (Docker token spec) with users, anonymous pulls and JWTs Distribution accepts.

    Parameters
    ----------
    users : mapping of str to str, optional
        User name → password. Passwords are kept only as bcrypt hashes.
    anonymous_pull : bool or iterable of str
        ``True``: anonymous tokens grant ``pull`` on every repository; an iterable: only on
        those repository names; ``False``: anonymous tokens grant nothing.
    service : str
        The ``service`` (``aud`` claim) the registry expects.
    issuer : str
        The ``iss`` claim (Distribution's ``auth.token.issuer``).
    expires_in_s : int
        Token lifetime. The spec says tokens should live at least 60 s; tests use less to force
        a refresh mid-pull (the authorizer enforces ``exp`` exactly, without leeway).
    style : {"distribution", "dockerhub", "ghcr"}
        Shape of challenges and token answers (see module docstring).
    host, port : str, int
        Where to listen (loopback; 0 picks a free port).
    tls : TLSMaterial, optional
        Serve the realm over HTTPS with this certificate.
    directory : str or Path, optional
        Where to write the signing CA bundle (``rootcertbundle``); a temporary directory if
        omitted, deleted by :meth:`close` (or when the server is garbage-collected or Python
        exits): the bundle is useless without this server's in-memory signing key. A directory
        you give is kept.
    push_users : iterable of str, optional
        Users that may also push (default: every user).

    Examples
    --------
    >>> tokens = TokenServer(users={"alice": "s3cret"}).start()          # doctest: +SKIP
    >>> reg = EmbeddedRegistry(authorizer=tokens.authorizer()).start()   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool | Iterable[str] = True,
        service: str = "pullbench-registry",
        issuer: str = "pullbench-token-server",
        expires_in_s: int = 300,
        style: str = "distribution",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSMaterial | None = None,
        directory: str | Path | None = None,
        push_users: Iterable[str] | None = None,
    ) -> None:
        if style not in STYLES:
            raise ServerError(f"unknown token server style {style!r}; choose one of {STYLES}")
        if expires_in_s < 1:
            raise ServerError(f"expires_in_s must be >= 1, got {expires_in_s}")
        self._hashes = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4))
                        for u, p in (users or {}).items()}
        self.anonymous_pull: bool | frozenset[str] = (
            anonymous_pull if isinstance(anonymous_pull, bool) else frozenset(anonymous_pull))
        self.push_users = frozenset(push_users) if push_users is not None else frozenset(
            self._hashes)
        self.service = service
        self.issuer = issuer
        self.expires_in_s = expires_in_s
        self.style = style
        self.tls = tls
        self._init_service(host, port)
        self._owns_directory = directory is None
        self.directory = Path(directory) if directory is not None else Path(
            tempfile.mkdtemp(prefix="pullbench-token-"))
        if self._owns_directory:
            weakref.finalize(self, shutil.rmtree, str(self.directory), ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.issued: list[IssuedToken] = []
        self.counters = _Counters()
        self._make_signing_material()

    # --- signing material ----------------------------------------------------------------
    def _make_signing_material(self) -> None:
        ca = trustme.CA(organization_name="pullbench token CA")
        leaf = ca.issue_cert("pullbench-token-signer", organization_name="pullbench token signer")
        self.rootcertbundle = self.directory / "token-ca.pem"
        self._ca_pem = ca.cert_pem.bytes()
        self.rootcertbundle.write_bytes(self._ca_pem)
        self._signing_key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        self._public_key = self._signing_key.public_key()
        ders = [x509.load_pem_x509_certificate(b.bytes()).public_bytes(serialization.Encoding.DER)
                for b in leaf.cert_chain_pems]
        # x5c: standard (not URL-safe) base64 DER, leaf first (RFC 7515 §4.1.6)
        self._x5c = [base64.b64encode(d).decode() for d in ders]

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> TokenServer:
        """Listen and serve in a background thread; return ``self``.

        Raises
        ------
        ServerError
            The address cannot be bound.
        """
        if self._server is not None:
            return self
        if not self.rootcertbundle.is_file():  # start() again after close() removed it
            self.directory.mkdir(parents=True, exist_ok=True)
            self.rootcertbundle.write_bytes(self._ca_pem)
        server = self._listen(_Server, _Handler)
        server.token_server = self
        server.ssl_context = self.tls.server_context() if self.tls else None
        self._serve(server, "pullbench-token-server")
        logger.info("token server at %s (service %s, style %s)", self.realm, self.service,
                    self.style)
        return self

    def close(self) -> None:
        """Stop serving; delete the temporary ``directory`` if this server made it."""
        self._stop_serving()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def realm(self) -> str:
        """The realm URL clients get tokens from."""
        return f"{self._scheme_url(self.tls is not None)}/token"

    # --- configuration for Distribution ------------------------------------------------------
    def distribution_config(self) -> dict[str, Any]:
        """The ``extra_config`` that makes Distribution 2.8.2 trust this server's tokens."""
        return {"auth": {"token": {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": str(self.rootcertbundle),
        }}}

    # --- the realm -----------------------------------------------------------------------
    def _check_basic(self, header: str | None) -> tuple[str | None, bool]:
        """Return (subject, ok). No header → anonymous (None, True)."""
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        hashed = self._hashes.get(user)
        if hashed is None or not bcrypt.checkpw(password.encode(), hashed):
            return user, False
        return user, True

    def _grant(self, subject: str | None, rtype: str, name: str,
               actions: tuple[str, ...]) -> tuple[str, ...]:
        if rtype != "repository":
            return ()
        granted: set[str] = set()
        if subject is not None:
            granted.add("pull")
            if subject in self.push_users:
                granted.update({"push", "delete", "*"})
        elif self.anonymous_pull is True or (
                isinstance(self.anonymous_pull, frozenset) and name in self.anonymous_pull):
            granted.add("pull")
        return tuple(a for a in actions if a in granted)

    def _handle_token(self, req: _Handler) -> None:
        split = urlsplit(req.path)
        if split.path != "/token":
            req._send(404, {"details": "not found"})
            return
        with self.counters.lock:
            self.counters.token_requests += 1
        query = parse_qs(split.query)
        service = query.get("service", [""])[-1]
        if service and service != self.service:
            req._send(400, {"details": f"unknown service {service!r}; this realm serves "
                                       f"{self.service!r}"})
            return
        subject, ok = self._check_basic(req.headers.get("Authorization"))
        if not ok:
            with self.counters.lock:
                self.counters.bad_credentials += 1
            logger.info("token server: refused credentials for user %r", subject or "")
            req._send(401, {"details": "incorrect username or password"},
                      {"WWW-Authenticate": f'Basic realm="{self.realm}"'})
            return
        access: list[tuple[str, str, tuple[str, ...]]] = []
        for raw in query.get("scope", []):
            for scope in raw.split(" "):
                parsed = parse_scope(scope)
                if parsed is None:
                    continue
                granted = self._grant(subject, *parsed)
                access.append((parsed[0], parsed[1], granted))
        now_f = time.time()
        now = int(now_f)
        claims = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            # rounded up: a token never lives shorter than expires_in promises
            "exp": math.ceil(now_f + self.expires_in_s),
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [{"type": t, "name": n, "actions": list(a)} for t, n, a in access],
        }
        token = jwt.encode(claims, self._signing_key, algorithm="ES256",  # type: ignore[arg-type]
                           headers={"typ": "JWT", "x5c": self._x5c})
        self.issued.append(IssuedToken(subject=subject or "", access=tuple(access),
                                       issued_at=float(now), expires_in_s=self.expires_in_s))
        logger.info("token server: issued token for %s, access %s, %d s",
                    subject or "anonymous", [f"{t}:{n}:{','.join(a)}" for t, n, a in access],
                    self.expires_in_s)
        body: dict[str, Any] = {"token": token}
        if self.style != "ghcr":
            body["access_token"] = token
            body["expires_in"] = self.expires_in_s
            body["issued_at"] = datetime.datetime.fromtimestamp(
                now, datetime.UTC).isoformat().replace("+00:00", "Z")
        req._send(200, body)

    # --- verification (for the embedded registry) ----------------------------------------
    def challenge(self, scope: str | None = None, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value for a 401 (RFC 6750 §3 quoting)."""
        parts = [f'realm="{self.realm}"', f'service="{self.service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def verify(self, token: str) -> dict[str, Any]:
        """Decode and validate a token this server issued (signature, iss, aud, exp, nbf).

        Raises
        ------
        jwt.ExpiredSignatureError, jwt.InvalidTokenError
        """
        claims: dict[str, Any] = jwt.decode(
            token, self._public_key, algorithms=["ES256"],  # type: ignore[arg-type]
            audience=self.service, issuer=self.issuer, leeway=0,
            options={"require": ["exp", "iss", "aud", "nbf"]},
        )
        return claims

    def authorizer(self) -> Any:
        """An ``authorizer(method, path, headers)`` for :class:`EmbeddedRegistry`.

        Requests without a valid token get ``401`` with a challenge naming the scope they need
        (``pull`` for GET/HEAD, ``pull,push`` otherwise); expired tokens get
        ``error="invalid_token"`` (expiry is enforced exactly); tokens without the needed action
        get ``error="insufficient_scope"``.
        """
        return _Authorizer(self)


class _Authorizer:
    """Callable seam for the embedded registry (see :meth:`TokenServer.authorizer`)."""

    def __init__(self, server: TokenServer) -> None:
        self.server = server

    def _needed(self, method: str, path: str) -> tuple[str | None, str | None, tuple[str, ...]]:
        path = unquote(path)
        if path in ("/v2/", "/v2"):
            return None, None, ()
        if path.startswith("/v2/_catalog"):
            return "registry", "catalog", ("*",)
        m = _REPO_ROUTE.match(path)
        if not m:
            return None, None, ()
        actions = ("pull",) if method in ("GET", "HEAD") else ("pull", "push")
        return "repository", m.group("name"), actions

    def __call__(self, method: str, path: str,
                 headers: Mapping[str, str]) -> tuple[int, dict[str, str]] | None:
        srv = self.server
        rtype, name, actions = self._needed(method, path)
        scope = f"{rtype}:{name}:{','.join(actions)}" if rtype else None
        if srv.style == "dockerhub" and rtype is None:
            scope = None  # Hub challenges /v2/ without a scope
        auth = headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            with srv.counters.lock:
                srv.counters.challenges += 1
            return 401, {"WWW-Authenticate": srv.challenge(scope)}
        try:
            claims = srv.verify(token.strip())
        except jwt.ExpiredSignatureError:
            with srv.counters.lock:
                srv.counters.expired_rejections += 1
            logger.info("embedded registry: expired token for %s %s", method, path)
            return 401, {"WWW-Authenticate": srv.challenge(scope, "invalid_token")}
        except jwt.InvalidTokenError as exc:
            with srv.counters.lock:
                srv.counters.invalid_rejections += 1
            logger.info("embedded registry: invalid token (%s) for %s %s",
                        type(exc).__name__, method, path)
            return 401, {"WWW-Authenticate": srv.challenge(scope, "invalid_token")}
        if rtype is not None:
            have: set[str] = set()
            for entry in claims.get("access") or []:
                if entry.get("type") == rtype and entry.get("name") == name:
                    have.update(entry.get("actions") or [])
            if not (set(actions) <= have or "*" in have):
                with srv.counters.lock:
                    srv.counters.insufficient_rejections += 1
                return 401, {"WWW-Authenticate": srv.challenge(scope, "insufficient_scope")}
        with srv.counters.lock:
            srv.counters.authorized += 1
        return None
