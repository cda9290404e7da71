"""Body access: the one module that touches private ``http.client`` and urllib3 internals.

``requests.Response.raw`` (urllib3) → ``_fp`` (``http.client.HTTPResponse``) → ``fp`` (the
``io.BufferedReader`` over the socket). Everything that reaches below the public API is here,
so a urllib3 or CPython upgrade that moves these attributes breaks one module.
"""

from __future__ import annotations

import http.client
import logging
import socket
from typing import Any

import requests

from ..._errors import StrategyError

__all__ = []

logger = logging.getLogger(__name__)




# ----------------------------------------------------------------------------- body access


def _http_response(response: requests.Response) -> http.client.HTTPResponse:
    """http.client's response under requests/urllib3 (``response.raw._fp``)."""
    fp = getattr(response.raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse):
        raise StrategyError(
            "this strategy needs a requests response backed by urllib3/http.client "
            "(response.raw._fp); got " + type(fp).__name__
        )
    return fp


def _content_length_body(hr: http.client.HTTPResponse, strategy: str) -> tuple[Any, int]:
    """The socket stream (BufferedReader) and remaining length of a Content-Length body."""
    if hr.chunked or hr.length is None or hr.fp is None:
        raise StrategyError(
            f"strategy {strategy!r} reads the socket directly and needs a Content-Length body; the "
            "registry sent a chunked or unbounded body (use go-iocopy with read_path=read1)"
        )
    return hr.fp, hr.length


def _finish_body(response: requests.Response, hr: http.client.HTTPResponse, consumed: int) -> None:
    """Tell http.client and urllib3 the body was consumed outside them, so the connection is reused.

    Mirrors what ``HTTPResponse.read`` does when its length reaches 0 (``_close_conn``), then hands
    the connection back to urllib3's pool. Only when the whole Content-Length was read.
    """
    if hr.length is None:
        return
    hr.length = max(hr.length - consumed, 0)
    if hr.length == 0:
        hr._close_conn()  # type: ignore[attr-defined]
        response.raw.release_conn()
        response._content_consumed = True  # type: ignore[attr-defined]


class _Reader:
    """One read path: ``read(view) -> n`` returning what one read gave (0 at end of body)."""

    def __init__(self, response: requests.Response, path: str, strategy: str) -> None:
        self.response = response
        self.hr = _http_response(response)
        self.path = path
        self.consumed = 0
        if path == "read1":
            self.read = self._read1
            return
        self.bio, self.remaining = _content_length_body(self.hr, strategy)
        self._drained = False
        if path == "readinto":
            self._readinto1 = self.bio.readinto1
            self.read = self._readinto
        elif path == "recv_into":
            self.sock = _socket_of(self.bio)
            self.read = self._recv_into
        else:  # pragma: no cover - validated before
            raise StrategyError(f"unknown read_path {path!r}")

    def _read1(self, view: memoryview) -> int:
        data = self.hr.read1(len(view))
        n = len(data)
        view[:n] = data
        return n

    def _drain_first(self, view: memoryview) -> int:
        """First read of a body: the bytes http.client buffered with the headers, alone.

        BufferedReader.readinto1 returns what it holds *plus* one raw read, and a raw socket read
        would skip what it holds; Go's bufio.Reader returns only what it holds. After this, every
        read is exactly one read of the socket (one TLS record under TLS).
        """
        self._drained = True
        pending = len(self.bio.peek(1))  # one raw read if nothing is buffered; b"" at EOF
        return int(self.bio.readinto1(view[:pending]))

    def _account(self, n: int) -> int:
        self.remaining -= n
        self.consumed += n
        return n

    def _readinto(self, view: memoryview) -> int:
        if self.remaining <= 0:
            return 0
        view = view[: self.remaining]
        return self._account(self._readinto1(view) if self._drained else self._drain_first(view))

    def _recv_into(self, view: memoryview) -> int:
        if self.remaining <= 0:
            return 0
        view = view[: self.remaining]
        return self._account(self.sock.recv_into(view) if self._drained
                             else self._drain_first(view))

    def finish(self) -> None:
        # read1 went through http.client, which already counted the bytes (consumed=0 here).
        _finish_body(self.response, self.hr, 0 if self.path == "read1" else self.consumed)


def _socket_of(bio: Any) -> socket.socket:
    raw = getattr(bio, "raw", None)
    sock = getattr(raw, "_sock", None)
    if not isinstance(sock, socket.socket):
        raise StrategyError("cannot reach the connection's socket under http.client's stream")
    return sock


