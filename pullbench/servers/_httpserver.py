"""Threaded HTTP server plumbing shared by the embedded registry, blob host and token server.

Each of those serves ``http.server`` handlers from a :class:`ThreadedHTTPServer` (one daemon
thread per connection, TLS handshake in the connection's thread) run by ``serve_forever`` in a
background thread; :class:`ThreadedService` owns that thread and the start/close/``with``
lifecycle, so each server only adds what is its own (storage, signing keys, counters).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

from .._errors import ServerError

__all__ = ["QuietTLSHandler", "TLSHandler", "ThreadedHTTPServer", "ThreadedService"]

_S = TypeVar("_S", bound="ThreadedHTTPServer")


class ThreadedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` with daemon connection threads and an optional TLS context.

    ``ssl_context`` (set after construction) is applied by :class:`TLSHandler` per connection.
    """

    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None


class TLSHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler that wraps its connection in the server's ``ssl_context``, if any."""

    server: ThreadedHTTPServer
    protocol_version = "HTTP/1.1"
    #: Socket timeout during the TLS handshake, seconds (None: leave the socket as it is).
    handshake_timeout_s: ClassVar[float | None] = None

    def setup(self) -> None:
        # Answers leave as a header write and a body write: with Nagle's algorithm the body waits
        # for the client's (delayed, up to 40 ms) ACK of the headers. Measured on loopback: a
        # keep-alive manifest GET took 44 ms at the median with Nagle, under 2 ms without (as
        # Go's net package, which sets TCP_NODELAY on every TCP connection).
        with contextlib.suppress(OSError):  # not TCP (e.g. a Unix socket)
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.server.ssl_context
        if ctx is not None:
            if self.handshake_timeout_s is not None:
                self.request.settimeout(self.handshake_timeout_s)
            self.request = ctx.wrap_socket(self.request, server_side=True)
        super().setup()


class QuietTLSHandler(TLSHandler):
    """A :class:`TLSHandler` that logs requests at debug, method and path only (never the query
    string, which may carry credentials), and logs instead of printing when a client goes away.

    Subclasses set ``log`` (their module's logger) and ``label`` (e.g. ``"blob host"``).
    """

    log: ClassVar[logging.Logger]
    label: ClassVar[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.log.debug("%s: %s %s", self.label, self.command, urlsplit(self.path).path)

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            self.log.debug("%s: client went away: %s", self.label, exc)


class ThreadedService:
    """Start/close lifecycle of a :class:`ThreadedHTTPServer` served from a background thread.

    Subclasses set ``label`` (used in error messages), ``_bind`` ``(host, port)``, call
    :meth:`_init_service` in ``__init__``, and implement ``start`` (bind with :meth:`_listen`,
    then :meth:`_serve`) and ``close`` (:meth:`_stop_serving`, then their own cleanup).
    """

    label: ClassVar[str]
    _bind: tuple[str, int]
    _server: ThreadedHTTPServer | None
    _thread: threading.Thread | None

    def _init_service(self, host: str, port: int) -> None:
        self._bind = (host, port)
        self._server = None
        self._thread = None

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _listen(self, server_cls: type[_S], handler_cls: type[BaseHTTPRequestHandler], *,
                hint: str = "", on_error: Callable[[], None] | None = None) -> _S:
        """Bind ``server_cls`` to ``_bind``.

        Raises
        ------
        ServerError
            The address cannot be bound (``on_error`` runs first; ``hint`` ends the message).
        """
        try:
            return server_cls(self._bind, handler_cls)
        except OSError as exc:
            if on_error is not None:
                on_error()
            raise ServerError(f"{self.label} cannot listen on {self._bind[0]}:{self._bind[1]}: "
                              f"{exc}{hint}") from exc

    def _serve(self, server: ThreadedHTTPServer, thread_name: str) -> None:
        """Run ``server.serve_forever`` in a daemon thread named ``thread_name``."""
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name=thread_name)
        self._thread.start()

    def _stop_serving(self) -> None:
        """Shut the server down and close it, then wait (up to 5 s) for its thread."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises
        ------
        ServerError
            The server is not running.
        """
        if self._server is None:
            raise ServerError(f"{self.label} is not running; call start() first")
        return int(self._server.server_address[1])

    def _scheme_url(self, tls: bool) -> str:
        """``http[s]://HOST:PORT`` for the bound address."""
        return f"{'https' if tls else 'http'}://{self._bind[0]}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
