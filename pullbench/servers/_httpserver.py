"""Threaded HTTP server plumbing shared by the embedded registry, blob host and token server.

Each of those serves ``http.server`` handlers from a :class:`ThreadedHTTPServer` (one daemon
thread per connection, TLS handshake in the connection's thread) run by ``serve_forever`` in a
background thread; :class:`ThreadedService` owns that thread and the start/close/``with``
lifecycle, so each server only adds what is its own (storage, signing keys, counters).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

from .._errors import ServerError

__all__ = ["QuietTLSHandler", "TLSHandler", "ThreadedHTTPServer", "ThreadedService"]

_S = TypeVar("_S", bound="ThreadedHTTPServer")


class ThreadedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` with daemon connection threads and an optional TLS context.

    ``ssl_context`` (set after construction) is applied by :class:`TLSHandler` per connection;
    so are ``idle_timeout_s`` and ``request_timeout_s`` when set (None: the handler's own
    ``timeout`` only, per socket operation).
    """

    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None
    idle_timeout_s: float | None = None
    request_timeout_s: float | None = None


class _DeadlineReader(io.RawIOBase):
    """The connection's raw reader: each ``recv`` waits at most the idle timeout and, while a
    request head (request line and headers) is being read, no longer than its deadline.

    The deadline starts with the head's first byte, so a keep-alive connection may idle between
    requests for the idle timeout, but a client trickling a head byte by byte (slowloris) is
    cut when the deadline passes. A timeout raises ``TimeoutError``; ``http.server`` then drops
    the connection.
    """

    def __init__(self, handler: TLSHandler) -> None:
        super().__init__()
        self._h = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        h = self._h
        sock = h.connection
        if h._head_pending:
            idle = h.idle_timeout()
            timeout = idle
            if h._head_deadline is not None:
                remaining = h._head_deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"request head not complete within "
                                       f"{h.server.request_timeout_s} s of its first byte")
                timeout = remaining if idle is None else min(idle, remaining)
            sock.settimeout(timeout)
            n = int(sock.recv_into(buffer))
            if n and h._head_deadline is None and h.server.request_timeout_s is not None:
                h._head_deadline = time.monotonic() + h.server.request_timeout_s
            return n
        return int(sock.recv_into(buffer))


class TLSHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler that wraps its connection in the server's ``ssl_context``, if any."""

    server: ThreadedHTTPServer
    protocol_version = "HTTP/1.1"
    #: Socket timeout during the TLS handshake, seconds (None: leave the socket as it is).
    handshake_timeout_s: ClassVar[float | None] = None
    _head_pending = False
    _head_deadline: float | None = None

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
        if self.server.idle_timeout_s is not None or self.server.request_timeout_s is not None:
            self.connection.settimeout(self.idle_timeout())
            plain, self.rfile = self.rfile, io.BufferedReader(_DeadlineReader(self))
            plain.close()  # drops its reference on the socket (which close() waits for)

    def idle_timeout(self) -> float | None:
        """Longest wait of one socket read or write, seconds: the server's ``idle_timeout_s``,
        else the handler's ``timeout``."""
        idle = self.server.idle_timeout_s
        return idle if idle is not None else self.timeout

    def handle_one_request(self) -> None:
        self._head_pending, self._head_deadline = True, None
        super().handle_one_request()

    def parse_request(self) -> bool:
        try:
            return super().parse_request()  # reads the headers
        finally:
            if self._head_pending:
                self._head_pending, self._head_deadline = False, None
                if self.server.idle_timeout_s is not None or \
                        self.server.request_timeout_s is not None:
                    self.connection.settimeout(self.idle_timeout())


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
