"""A CDN-like blob host: serves a registry's storage files on another address, refuses credentials.

Registries such as Docker Hub answer blob GETs with ``307`` to a CDN; clients must follow without
forwarding ``Authorization`` (spec.md@main "API"; psf/requests ``Session.rebuild_auth``). This
host makes that testable on loopback: it listens on another address (``127.0.0.2`` by default)
and **rejects any request that carries an Authorization header** with ``400`` (as S3 does for a
presigned URL plus a header), so a client that forwards credentials fails loudly.

Two layouts:

* Distribution's storage root (use with its ``redirect`` storage middleware, baseurl =
  :attr:`BlobHost.url`): ``/docker/registry/v2/blobs/sha256/<2hex>/<hex>/data``
  (distribution/distribution:registry/storage/driver/middleware/redirect/middleware.go@v2.8.2).
* The embedded registry's root: ``/blobs/sha256/<hex>``; :meth:`BlobHost.embedded_redirect`
  gives the ``blob_redirect`` callable for :class:`EmbeddedRegistry`.

Only paths made of safe characters under ``blobs`` directories are served; nothing outside the
root is reachable.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._errors import ServerError
from ._httpserver import QuietTLSHandler, ThreadedHTTPServer, ThreadedService
from ._tls import TLSMaterial

__all__ = ["BlobHost"]

logger = logging.getLogger(__name__)

_SAFE_PATH = re.compile(
    r"^/(?:docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data|blobs/sha256/[0-9a-f]{64})$"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(slots=True)
class BlobHostCounters:
    """What the blob host saw (for tests and reports)."""

    requests: int = 0
    served: int = 0
    rejected_authorization: int = 0
    not_found: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(QuietTLSHandler):
    server: _Server
    log = logger
    label = "blob host"

    def _plain(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        host = self.server.blob_host
        counters = host.counters
        with counters.lock:
            counters.requests += 1
        if "Authorization" in self.headers:
            with counters.lock:
                counters.rejected_authorization += 1
            logger.warning("blob host: rejected a request carrying an Authorization header "
                           "(the client forwarded credentials across hosts)")
            self._plain(400, "InvalidArgument: only one auth mechanism allowed; this blob host "
                             "refuses requests that carry an Authorization header\n")
            return
        path = urlsplit(self.path).path
        if not _SAFE_PATH.match(path):
            with counters.lock:
                counters.not_found += 1
            self._plain(404, "not found\n")
            return
        file = host.root / path.lstrip("/")
        try:
            f = file.open("rb")
        except OSError:
            with counters.lock:
                counters.not_found += 1
            self._plain(404, "not found\n")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            first, last, status = 0, size - 1, 200
            m = _RANGE.match(self.headers.get("Range", "").strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    first = int(m.group(1))
                    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    first = max(size - int(m.group(2)), 0)
                if first > last or first >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            length = last - first + 1
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(first)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
            with counters.lock:
                counters.served += 1
                counters.bytes_sent += length - remaining


class _Server(ThreadedHTTPServer):
    blob_host: BlobHost


class BlobHost(ThreadedService):
    """Serve a registry's blob files on another loopback address; reject Authorization.

    Parameters
    ----------
    root : str or Path
        The registry's storage root (Distribution's ``rootdirectory`` or the embedded
        registry's ``root``).
    host : str
        Listening address; ``127.0.0.2`` (another host name than the registry's ``127.0.0.1``,
        so clients treat the redirect as cross-host).
    port : int
        0 picks a free port.
    tls : TLSMaterial, optional
        Serve HTTPS with this certificate (it must list ``host``).

    Raises
    ------
    ServerError
        The root does not exist or the address cannot be bound.
    """

    def __init__(self, root: str | Path, *, host: str = "127.0.0.2", port: int = 0,
                 tls: TLSMaterial | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServerError(f"blob host root {self.root} is not a directory; pass the "
                              "registry's storage root")
        self.tls = tls
        self._init_service(host, port)
        self.counters = BlobHostCounters()

    def start(self) -> BlobHost:
        """Listen and serve in a background thread; return ``self``."""
        if self._server is not None:
            return self
        server = self._listen(_Server, _Handler)
        server.blob_host = self
        server.ssl_context = self.tls.server_context() if self.tls else None
        self._serve(server, "pullbench-blob-host")
        logger.info("blob host %s serving %s", self.url, self.root)
        return self

    def close(self) -> None:
        """Stop serving."""
        self._stop_serving()

    @property
    def url(self) -> str:
        """Base URL (``http[s]://127.0.0.2:PORT``): Distribution's redirect ``baseurl``."""
        return self._scheme_url(self.tls is not None)

    def distribution_config(self) -> dict[str, Any]:
        """``extra_config`` for Distribution: the redirect storage middleware pointing here.

        Also sets ``storage.redirect.disable: false``: the blob server only asks the storage
        driver for a URL when redirects are enabled (registry/storage/blobserver.go@v2.8.2).
        """
        return {"middleware": {"storage": [{"name": "redirect",
                                            "options": {"baseurl": self.url}}]},
                "storage": {"redirect": {"disable": False}}}

    def embedded_redirect(self) -> Callable[[str, str], str | None]:
        """A ``blob_redirect(name, digest)`` for :class:`EmbeddedRegistry` (storage ``root``)."""

        def redirect(name: str, digest: str) -> str | None:
            algorithm, _, hexdigest = digest.partition(":")
            if algorithm != "sha256":
                return None
            return f"{self.url}/blobs/sha256/{hexdigest}"

        return redirect

