"""A small scripted HTTP host for faults that need a second host: foreign realms, CDNs that
challenge, redirect loops, endless token answers.

A :class:`HostileHost` listens on another loopback address than the registry (``127.0.0.2`` or
``127.0.0.3``, so a client sees another host) and answers each path with a scripted
:class:`HostileReply`. It records every request it got (:class:`SeenRequest`: method, path, and the
*scheme* of any ``Authorization`` header, never its value), so a test can assert that credentials
never reached it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._httpserver import QuietTLSHandler, ThreadedHTTPServer, ThreadedService
from ._tls import TLSMaterial

__all__ = ["HostileHost", "HostileReply", "SeenRequest"]

logger = logging.getLogger(__name__)

_FILLER = b"a" * (1 << 20)


@dataclass(frozen=True, slots=True)
class HostileReply:
    """One scripted answer.

    Parameters
    ----------
    status : int
    headers : mapping
        Sent as given (``Content-Length`` is added for a finite body).
    body : bytes
        Sent first.
    endless_bytes : int
        Then this many filler bytes (``a``), without ``Content-Length``, as fast as the client
        reads (0: none). The host counts what it managed to send in
        :attr:`HostileHost.filler_bytes`.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    endless_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """A request the host received.

    Attributes
    ----------
    method, path : str
        ``path`` without the query string.
    authorization : str or None
        The scheme of the ``Authorization`` header (``"Basic"``, ``"Bearer"``), or None.
    """

    method: str
    path: str
    authorization: str | None


class _Handler(QuietTLSHandler):
    server: _Server
    log = logger
    label = "hostile host"

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._drain_request_body()
        self._answer()

    def do_PUT(self) -> None:
        self._drain_request_body()
        self._answer()

    def do_PATCH(self) -> None:
        self._drain_request_body()
        self._answer()

    def _drain_request_body(self) -> None:
        """Read and drop the request's body (``Content-Length`` bytes, in 1 MiB pieces)."""
        try:
            left = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            left = 0
        while left > 0:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                break
            left -= len(piece)

    def _answer(self) -> None:
        host = self.server.hostile
        path = urlsplit(self.path).path
        auth = self.headers.get("Authorization")
        seen = SeenRequest(self.command, path, auth.split(" ", 1)[0] if auth else None)
        with host.lock:
            host.requests.append(seen)
        reply = host.reply_for(path)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.endless_bytes:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            self.wfile.write(reply.body)
            left = reply.endless_bytes
            while left > 0:
                piece = _FILLER[: min(left, len(_FILLER))]
                self.wfile.write(piece)
                left -= len(piece)
                with host.lock:
                    host.filler_bytes += len(piece)
        except OSError:
            logger.debug("hostile host: client hung up on %s", path)


class _Server(ThreadedHTTPServer):
    hostile: HostileHost


class HostileHost(ThreadedService):
    """Answer scripted replies per path on another loopback address; record what came in.

    Parameters
    ----------
    routes : mapping of str to HostileReply
        Path → reply. A key ending in ``*`` matches every path starting with what precedes it
        (the longest such key wins); unmatched paths get 404.
    host : str
        Listening address (``127.0.0.2`` by default; ``127.0.0.3`` for a third host).
    port : int
        0 picks a free port.
    tls : TLSMaterial, optional
        Serve HTTPS with this certificate (it must list ``host``).

    Attributes
    ----------
    requests : list of SeenRequest
    filler_bytes : int
        Endless-body bytes sent so far.

    Raises
    ------
    ServerError
        The address cannot be bound.
    """

    label = "hostile host"

    def __init__(self, routes: Mapping[str, HostileReply] | None = None, *, host: str = "127.0.0.2",
                 port: int = 0, tls: TLSMaterial | None = None) -> None:
        self.routes: dict[str, HostileReply] = dict(routes or {})
        self.tls = tls
        self.requests: list[SeenRequest] = []
        self.filler_bytes = 0
        self.lock = threading.Lock()
        self._init_service(host, port)
        self._bound: tuple[str, int] | None = None

    def reply_for(self, path: str) -> HostileReply:
        """The scripted reply for ``path`` (404 when none matches)."""
        if path in self.routes:
            return self.routes[path]
        prefixes = [k for k in self.routes if k.endswith("*") and path.startswith(k[:-1])]
        if prefixes:
            return self.routes[max(prefixes, key=len)]
        return HostileReply(404, {"Content-Type": "text/plain"}, b"not found\n")

    def start(self) -> HostileHost:
        """Listen and serve in a background thread; return ``self``."""
        if self._server is not None:
            return self
        server = self._listen(_Server, _Handler)
        server.hostile = self
        server.ssl_context = self.tls.server_context() if self.tls else None
        self._serve(server, "pullbench-hostile-host")
        self._bound = (self._bind[0], int(server.server_address[1]))
        return self

    def close(self) -> None:
        """Stop serving."""
        self._stop_serving()

    @property
    def url(self) -> str:
        """``http[s]://HOST:PORT`` (still known after :meth:`close`)."""
        return f"{'https' if self.tls is not None else 'http'}://{self.netloc}"

    @property
    def netloc(self) -> str:
        """``HOST:PORT`` (still known after :meth:`close`)."""
        if self._bound is None:
            return f"{self._bind[0]}:{self.port}"  # raises: not started
        return f"{self._bound[0]}:{self._bound[1]}"

    def credentials_seen(self) -> list[SeenRequest]:
        """The requests that carried an ``Authorization`` header."""
        with self.lock:
            return [r for r in self.requests if r.authorization is not None]
