"""An embedded OCI Distribution registry in pure Python (no install, starts in-process).

Pull side (complete): ``GET /v2/``, ``GET``/``HEAD`` manifests by tag or digest with ``Accept``
negotiation, ``GET``/``HEAD`` blobs with ``Range`` (closed, open-ended, suffix), tags list with
``n``/``last`` pagination, ``/v2/_catalog``, the referrers API (``GET
/v2/<name>/referrers/<digest>`` with the ``artifactType`` filter; see
:mod:`pullbench.servers._referrers`). Blob bodies leave through a 256 KiB ``pread``/``sendall``
loop (``blob_send="sendfile"``: ``sendfile(2)`` on plain HTTP; see ``_Handler._sendfile`` for why
the copy is the default).

Push side (enough to load fixtures and be a ``skopeo copy`` destination): ``POST`` upload
(optionally monolithic with ``?digest=``, or a cross-repository mount), ``PATCH`` chunks (with or
without ``Content-Range``; out-of-order → 416), ``PUT ?digest=``, upload status/cancel, manifest
``PUT``, ``DELETE`` of manifests, tags and blob links.

Storage under ``root`` (content-addressed; an upload becomes visible only after its digest was
verified, by temp file + ``os.replace``)::

    blobs/sha256/<hex>                       every blob and manifest, by content
    uploads/<uuid>                           upload sessions in progress
    repositories/<name>/_layers/<hex>        empty marker: blob linked into the repository
    repositories/<name>/_manifests/revisions/<hex>   the manifest's media type (text)
    repositories/<name>/_manifests/tags/<tag>        the tagged manifest digest (text)

Every path component that reaches the filesystem was first validated against the
distribution-spec grammar (repository name, tag, sha256 digest, upload UUID), so no request can
reach outside ``root``.

Behaviour mirrors opencontainers/distribution-spec:spec.md@v1.1.1 where the spec is explicit, and
distribution/distribution@v2.8.2 (registry/handlers/*.go) where it is silent, except where 2.8.2
is wrong (its 416 carries a stale ``Content-Length``; ours is correct).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import select
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .._errors import ImageBuildError, ServerError
from .._media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    is_valid_digest,
)
from ._faults import Misbehavior
from ._httpserver import ThreadedHTTPServer, ThreadedService, TLSHandler
from ._referrers import (
    ARTIFACT_TYPE_FILTER,
    REFERRERS_MEDIA_TYPE,
    ReferrersStore,
    parse_manifest,
    referrer_descriptor,
    subject_digest,
)

if TYPE_CHECKING:
    from ..images._oci import ImageLayout

__all__ = ["Authorizer", "BlobRedirect", "EmbeddedRegistry"]

logger = logging.getLogger(__name__)

#: ``(method, path, headers) -> None`` (allow) or ``(status, extra_headers)`` (deny).
#: ``path`` is the URL path without the query string, as sent (not percent-decoded).
Authorizer = Callable[[str, str, Mapping[str, str]], "tuple[int, dict[str, str]] | None"]
#: ``(repository_name, digest) -> URL or None``; a URL makes blob GET/HEAD answer 307 to it.
BlobRedirect = Callable[[str, str], "str | None"]

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_UUID_RE = re.compile(r"^[0-9a-f]{32}$")
_ROUTE_RE = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests|tags)(?:/(?P<rest>.*))?$"
)
_REFERRERS_RE = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")

_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_COPY_CHUNK = 1 << 20
#: Piece size of the blob send loop (bytes): ``pread`` into one buffer, then ``sendall``.
_SEND_PIECE = 256 * 1024
_API_VERSION = "registry/2.0"
_MANIFEST_TYPES = MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES


class _HeaderView(Mapping[str, str]):
    """Case-insensitive read-only mapping over the request's ``email.message.Message``."""

    def __init__(self, message: Any) -> None:
        self._m = message

    def __getitem__(self, key: str) -> str:
        value = self._m.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def get(self, key: str, default: Any = None) -> Any:
        value = self._m.get(key)
        return default if value is None else str(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._m.keys())

    def __len__(self) -> int:
        return len(self._m.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._m.get(key) is not None


class _RegistryHTTPError(Exception):
    """Internal: an error answer (status, spec error code, message, detail, extra headers)."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}


@dataclass(slots=True)
class _Upload:
    name: str
    path: Path
    offset: int
    hasher: Any
    lock: threading.Lock


class _Storage:
    """Content-addressed storage below ``root``; all inputs already validated by the caller."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.uploads_dir = root / "uploads"
        self.repos = root / "repositories"
        for d in (self.blobs, self.uploads_dir, self.repos):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.uploads_dir.iterdir():  # sessions live in memory: files are orphans
            with contextlib.suppress(OSError):
                stale.unlink()
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self.referrers = ReferrersStore(self.repos)

    # --- blobs ---------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[len("sha256:"):]

    def has_blob(self, digest: str) -> bool:
        return digest.startswith("sha256:") and self.blob_path(digest).is_file()

    def repo_dir(self, name: str) -> Path:
        return self.repos / name

    def repo_exists(self, name: str) -> bool:
        return (self.repo_dir(name) / "_manifests").is_dir() or (
            self.repo_dir(name) / "_layers").is_dir()

    def blob_linked(self, name: str, digest: str) -> bool:
        if not self.has_blob(digest):
            return False
        hexpart = digest[len("sha256:"):]
        return ((self.repo_dir(name) / "_layers" / hexpart).exists()
                or (self.repo_dir(name) / "_manifests" / "revisions" / hexpart).exists())

    def link_blob(self, name: str, digest: str) -> None:
        d = self.repo_dir(name) / "_layers"
        d.mkdir(parents=True, exist_ok=True)
        (d / digest[len("sha256:"):]).touch()

    def unlink_blob(self, name: str, digest: str) -> bool:
        p = self.repo_dir(name) / "_layers" / digest[len("sha256:"):]
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        return True

    def store_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blob_path(digest)
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=self.uploads_dir, prefix="put-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                Path(tmp).replace(target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    Path(tmp).unlink()
                raise
        return digest

    def ingest_file(self, source: Path, digest: str) -> None:
        """Add a file already known to hash to ``digest`` (hard link, else copy + rename)."""
        target = self.blob_path(digest)
        if target.exists():
            return
        if not source.is_file():
            raise ImageBuildError(f"blob {digest} missing from the image layout ({source})")
        tmp = self.uploads_dir / f"load-{uuid.uuid4().hex}"
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            Path(tmp).replace(target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    # --- manifests -----------------------------------------------------------------------
    def resolve(self, name: str, reference: str) -> str | None:
        """Return the manifest digest for a tag or digest reference in ``name``, or None."""
        mdir = self.repo_dir(name) / "_manifests"
        if ":" in reference:
            if not reference.startswith("sha256:"):
                return None  # only sha256 content is stored
            return reference if (mdir / "revisions" / reference[7:]).is_file() else None
        try:
            digest = (mdir / "tags" / reference).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return digest if self.has_blob(digest) else None

    def manifest_media_type(self, name: str, digest: str) -> str:
        return (self.repo_dir(name) / "_manifests" / "revisions" / digest[7:]).read_text().strip()

    def put_manifest(self, name: str, data: bytes, media_type: str, tag: str | None,
                     subject: str | None = None) -> str:
        digest = self.store_bytes(data)
        rev = self.repo_dir(name) / "_manifests" / "revisions"
        rev.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(rev / digest[7:], media_type)
        if subject is not None:
            self.referrers.link(name, subject, digest)
        if tag is not None:
            tags = self.repo_dir(name) / "_manifests" / "tags"
            tags.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(tags / tag, digest)
        return digest

    def tags(self, name: str) -> list[str]:
        tdir = self.repo_dir(name) / "_manifests" / "tags"
        if not tdir.is_dir():
            return []
        return sorted(p.name for p in tdir.iterdir() if not p.name.startswith("."))

    def delete_manifest(self, name: str, reference: str) -> bool:
        mdir = self.repo_dir(name) / "_manifests"
        if not reference.startswith("sha256:"):
            try:
                (mdir / "tags" / reference).unlink()
            except FileNotFoundError:
                return False
            return True
        rev = mdir / "revisions" / reference[7:]
        if not rev.exists():
            return False
        doc = parse_manifest(self.blob_path(reference).read_bytes()) \
            if self.has_blob(reference) else None
        rev.unlink()
        if doc is not None:
            with contextlib.suppress(ValueError):
                subject = subject_digest(doc)
                if subject is not None:
                    self.referrers.unlink(name, subject, reference)
        for tag in self.tags(name):
            with contextlib.suppress(FileNotFoundError):
                if (mdir / "tags" / tag).read_text().strip() == reference:
                    (mdir / "tags" / tag).unlink()
        return True

    def catalog(self) -> list[str]:
        names = []
        for mdir in self.repos.rglob("_manifests"):
            names.append(mdir.parent.relative_to(self.repos).as_posix())
        return sorted(names)

    # --- uploads -------------------------------------------------------------------------
    def new_upload(self, name: str) -> _Upload:
        upload_id = uuid.uuid4().hex
        path = self.uploads_dir / upload_id
        path.touch()
        up = _Upload(name, path, 0, hashlib.sha256(), threading.Lock())
        with self._lock:
            self._uploads[upload_id] = up
        return up

    def get_upload(self, name: str, upload_id: str) -> _Upload | None:
        with self._lock:
            up = self._uploads.get(upload_id)
        if up is None or up.name != name:
            return None
        return up

    def drop_upload(self, upload_id: str) -> None:
        with self._lock:
            up = self._uploads.pop(upload_id, None)
        if up is not None:
            with contextlib.suppress(FileNotFoundError):
                up.path.unlink()

    def commit_upload(self, upload_id: str, digest: str) -> None:
        """Move a verified upload into the blob store (atomic rename)."""
        with self._lock:
            up = self._uploads.pop(upload_id)
        target = self.blob_path(digest)
        if target.exists():
            up.path.unlink()
        else:
            Path(up.path).replace(target)
        self.link_blob(up.name, digest)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    Path(tmp).replace(path)


def _unsupported_algorithm(algorithm: str) -> str:
    return (f"digest algorithm {algorithm[:40]!r} is not supported by this registry "
            "(it stores sha256 content only)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Parse a single-range ``Range`` header against a blob of ``size`` bytes (RFC 9110 §14).

    Returns
    -------
    tuple of (first, last) inclusive byte positions; ``None`` when the header is absent, invalid
    or asks for several ranges (then the whole blob is served with 200, as RFC 9110 allows);
    the string ``"unsatisfiable"`` when the range lies outside the blob (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if first_s == "":
        if not last_s.isdigit():
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    if not first_s.isdigit() or (last_s and not last_s.isdigit()):
        return None
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class _Handler(TLSHandler):
    server_version = "pullbench-embedded"
    timeout = 300.0
    handshake_timeout_s = 30.0
    server: _Server

    # quiet: http.server logs every request to stderr by default
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    # --- plumbing ------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False
        self._body_started = False
        self._must_close = False
        reg = self.server.registry
        self.misbehavior = reg.misbehavior or Misbehavior()
        try:
            if self.misbehavior.latency_s > 0:
                time.sleep(self.misbehavior.latency_s)
            split = urlsplit(self.path)
            raw_path = split.path
            self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            if reg.authorizer is not None:
                headers_map: Mapping[str, str] = _HeaderView(self.headers)
                denied = reg.authorizer(method, raw_path, headers_map)
                if denied is not None:
                    status, headers = denied
                    code = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}.get(
                        status, "UNAUTHORIZED")
                    raise _RegistryHTTPError(status, code, "authentication required"
                                             if status == 401 else "access denied",
                                             headers=headers)
            self._route(method, unquote(raw_path))
        except _RegistryHTTPError as exc:
            self._send_error(method, exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("client went away: %s", exc)
            self.close_connection = True
        except Exception as exc:  # a bug: answer 500 rather than dropping the client
            logger.exception("embedded registry: unhandled error for %s %s", method, self.path)
            with contextlib.suppress(OSError):
                self._send_error(method, _RegistryHTTPError(500, "UNKNOWN", str(exc)))
        finally:
            if not self._body_consumed and self._has_body():
                self.close_connection = True

    def _has_body(self) -> bool:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return True
        try:
            return int(self.headers.get("Content-Length") or 0) > 0
        except ValueError:
            return True

    def _settle_body(self) -> None:
        """Before answering: drain a small unread request body, or announce ``Connection: close``.

        Keeps keep-alive connections in sync after an early (error) answer.
        """
        if getattr(self, "_body_consumed", True) or not self._has_body():
            return
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if (not chunked and not self._body_started and length is not None and length.isdigit()
                and int(length) <= _COPY_CHUNK):
            with contextlib.suppress(OSError, _RegistryHTTPError, ConnectionResetError):
                for _ in self._read_body():
                    pass
            if self._body_consumed:
                return
        self._body_consumed = True  # not read: the connection cannot be reused
        self.close_connection = True
        self._must_close = True

    def send_response(self, code: int, message: str | None = None) -> None:
        self._settle_body()
        super().send_response(code, message)
        # A connection this answer ends (unread body, a 416 chunk, HTTP/1.0 ...) says so: a
        # client that is not told may reuse it for its next request and meet EOF, which Go's
        # client does not retry for a POST (seen with the OCI conformance suite under load).
        if getattr(self, "_must_close", False) or self.close_connection:
            self.send_header("Connection", "close")

    def _send_json(self, method: str, status: int, obj: Any,
                   headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", _API_VERSION)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _send_empty(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("Docker-Distribution-API-Version", _API_VERSION)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send_error(self, method: str, exc: _RegistryHTTPError) -> None:
        mis = getattr(self, "misbehavior", None)
        if mis is not None and (mis.error_body_bytes or (
                mis.fail_plain_body and exc.message.startswith("misbehaving on purpose"))):
            self._send_hostile_error(method, exc, mis)
            return
        err: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.detail is not None:
            err["detail"] = exc.detail
        self._send_json(method, exc.status, {"errors": [err]}, exc.headers)

    def _send_hostile_error(self, method: str, exc: _RegistryHTTPError,
                            mis: Misbehavior) -> None:
        """An error answer with a plain-text body, or an endless JSON one (Misbehavior)."""
        self.send_response(exc.status)
        for k, v in exc.headers.items():
            self.send_header(k, v)
        if not mis.error_body_bytes:
            body = b"Too Many Requests\n" if exc.status == 429 else b"Service Unavailable\n"
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if method == "HEAD":
            return
        head = json.dumps({"errors": [{"code": exc.code, "message": ""}]}).encode()[:-4]
        filler = b"x" * _COPY_CHUNK
        left = mis.error_body_bytes - len(head)
        self.wfile.write(head)
        try:
            while left > 0:
                piece = filler[:min(left, len(filler))]
                self.wfile.write(piece)
                left -= len(piece)
                mis.seen.add("filler_bytes", len(piece))
            self.wfile.write(b'"}]}')
        except OSError:  # the client hung up: what a bounded client does
            pass

    def _read_body(self) -> Iterator[bytes]:
        """Yield the request body in pieces (Content-Length or chunked transfer coding)."""
        if self._body_started:
            raise RuntimeError("request body read twice")
        self._body_started = True
        rfile = self.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = rfile.readline(65537)
                if not line:
                    raise ConnectionResetError("client closed during chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    self._must_close = True
                    raise _RegistryHTTPError(400, "BLOB_UPLOAD_INVALID",
                                             "malformed chunked transfer coding") from None
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                remaining = size
                while remaining:
                    piece = rfile.read(min(remaining, _COPY_CHUNK))
                    if not piece:
                        raise ConnectionResetError("client closed during chunked body")
                    remaining -= len(piece)
                    yield piece
                rfile.readline(3)
        else:
            try:
                remaining = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _RegistryHTTPError(400, "SIZE_INVALID", "invalid Content-Length") from None
            while remaining > 0:
                piece = rfile.read(min(remaining, _COPY_CHUNK))
                if not piece:
                    raise ConnectionResetError("client closed before the whole body arrived")
                remaining -= len(piece)
                yield piece
        self._body_consumed = True

    def _read_small_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        for piece in self._read_body():
            total += len(piece)
            if total > limit:
                self.close_connection = True
                raise _RegistryHTTPError(413, "SIZE_INVALID",
                                         f"manifest larger than {limit} bytes")
            parts.append(piece)
        return b"".join(parts)

    # --- routing -------------------------------------------------------------------------
    def _route(self, method: str, path: str) -> None:
        if path in ("/v2", "/v2/"):
            if method not in ("GET", "HEAD"):
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")
            self._send_json(method, 200, {})
            return
        if path == "/v2/_catalog":
            self._catalog(method)
            return
        ref = _REFERRERS_RE.match(path)
        if ref and NAME_RE.match(ref["name"]):
            name, kind, rest = ref["name"], "referrers", ref["digest"]
        else:
            m = _ROUTE_RE.match(path)
            if not m or not path.startswith("/v2/"):
                raise _RegistryHTTPError(404, "UNSUPPORTED", f"no such endpoint: {path}")
            name, kind, rest = m["name"], m["kind"], m["rest"] if m["rest"] is not None else None
        if not NAME_RE.match(name) or len(name) > 255:
            raise _RegistryHTTPError(400, "NAME_INVALID", "invalid repository name",
                                     {"name": name[:300]})
        fail = self.misbehavior.fail_status
        if fail is not None and self.misbehavior.should_fail(kind, method):
            if self.misbehavior.fail_by_closing:  # no answer at all: a connection error
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            raise _RegistryHTTPError(fail, "TOOMANYREQUESTS" if fail == 429 else "UNAVAILABLE"
                                     if fail == 503 else "UNKNOWN",
                                     f"misbehaving on purpose: status {fail}",
                                     headers=self.misbehavior.failure_headers())
        storage = self.server.registry._storage
        if kind == "blobs/uploads":
            self._uploads(method, storage, name, rest or "")
        elif kind == "blobs":
            if rest is None or rest == "":
                raise _RegistryHTTPError(404, "UNSUPPORTED", f"no such endpoint: {path}")
            if method in ("GET", "HEAD"):
                self._get_blob(method, storage, name, rest)
            elif method == "DELETE":
                digest = self._stored_digest_arg(rest)
                if not storage.unlink_blob(name, digest):
                    raise _RegistryHTTPError(404, "BLOB_UNKNOWN", "blob unknown to registry",
                                             digest)
                self._send_empty(202)
            else:
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")
        elif kind == "manifests":
            if not rest:
                raise _RegistryHTTPError(404, "UNSUPPORTED", f"no such endpoint: {path}")
            reference = self._reference_arg(rest, method)
            if method in ("GET", "HEAD"):
                self._get_manifest(method, storage, name, reference)
            elif method == "PUT":
                self._put_manifest(storage, name, reference)
            elif method == "DELETE":
                if not storage.delete_manifest(name, reference):
                    raise _RegistryHTTPError(404, "MANIFEST_UNKNOWN", "manifest unknown",
                                             {"Reference": reference})
                self._send_empty(202)
            else:
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")
        elif kind == "referrers":
            if method not in ("GET", "HEAD"):
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")
            self._referrers(method, storage, name, self._digest_arg(rest or ""))
        else:  # tags
            if rest != "list" or method not in ("GET", "HEAD"):
                raise _RegistryHTTPError(404, "UNSUPPORTED", f"no such endpoint: {path}")
            self._tags(method, storage, name)

    @staticmethod
    def _digest_arg(text: str) -> str:
        if not is_valid_digest(text):
            raise _RegistryHTTPError(400, "DIGEST_INVALID", "invalid digest", text[:200])
        return text

    @classmethod
    def _stored_digest_arg(cls, text: str) -> str:
        """A digest naming stored content: grammatical, and of the one algorithm stored (sha256).

        A grammatical digest of another algorithm (``md5:…``, ``sha512:…``) is 400, not 404:
        distribution-spec (main) says registries SHOULD answer 400 on unsupported algorithms.
        The code is DIGEST_INVALID, as Distribution 2.8.2 answers ``/v2/<n>/blobs/md5:…`` (and
        as it answers a digest it cannot parse): the request is supported, its digest is not.
        """
        digest = cls._digest_arg(text)
        algorithm = digest.partition(":")[0]
        if algorithm != "sha256":
            raise _RegistryHTTPError(400, "DIGEST_INVALID", _unsupported_algorithm(algorithm),
                                     digest[:200])
        return digest

    def _reference_arg(self, text: str, method: str) -> str:
        """A manifest reference: a stored-algorithm digest, or a tag of the tag grammar.

        A tag outside the grammar is 400 TAG_INVALID on ``PUT``; on ``GET``/``HEAD``/``DELETE``
        it names no manifest, so 404 MANIFEST_UNKNOWN, as the distribution-spec conformance
        suite expects (its ``.INVALID_MANIFEST_NAME`` probe) and Distribution answers (its
        route does not match such a tag). No such tag ever reaches the filesystem.
        """
        if ":" in text:
            return self._stored_digest_arg(text)
        if not TAG_RE.match(text):
            if method == "PUT":
                raise _RegistryHTTPError(400, "TAG_INVALID", "invalid tag", text[:200])
            raise _RegistryHTTPError(404, "MANIFEST_UNKNOWN",
                                     "manifest unknown (not a valid tag)", {"Tag": text[:200]})
        return text

    # --- pull side -----------------------------------------------------------------------
    def _catalog(self, method: str) -> None:
        names = self.server.registry._storage.catalog()
        self._send_json(method, 200, {"repositories": self._paginate(names)[0]})

    def _paginate(self, items: list[str]) -> tuple[list[str], bool]:
        last = self.query.get("last")
        if last:
            items = [i for i in items if i > last]
        n_text = self.query.get("n")
        if n_text is not None:
            if not n_text.isdigit():
                raise _RegistryHTTPError(400, "PAGINATION_NUMBER_INVALID", "invalid n", n_text)
            n = int(n_text)
            return items[:n], len(items) > n
        return items, False

    def _tags(self, method: str, storage: _Storage, name: str) -> None:
        if not storage.repo_exists(name):
            raise _RegistryHTTPError(404, "NAME_UNKNOWN", "repository name not known to registry",
                                     {"name": name})
        tags, more = self._paginate(storage.tags(name))
        headers = {}
        if more and tags:
            headers["Link"] = (f'</v2/{name}/tags/list?n={self.query["n"]}&last='
                               f'{quote(tags[-1])}>; rel="next"')
        self._send_json(method, 200, {"name": name, "tags": tags}, headers)

    def _referrers(self, method: str, storage: _Storage, name: str, subject: str) -> None:
        """``GET /v2/<name>/referrers/<digest>[?artifactType=…]``: an OCI image index of the
        manifests whose ``subject`` is ``<digest>`` (empty for an unknown subject)."""
        wanted = self.query.get("artifactType")
        descriptors = []
        for digest in storage.referrers.referrers(name, subject):
            if storage.resolve(name, digest) is None:
                continue  # deleted meanwhile
            path = storage.blob_path(digest)
            data = path.read_bytes()
            doc = parse_manifest(data)
            if doc is None:
                continue
            desc = referrer_descriptor(doc, storage.manifest_media_type(name, digest), digest,
                                       len(data))
            if wanted is None or desc.get("artifactType") == wanted:
                descriptors.append(desc)
        body = json.dumps({"schemaVersion": 2, "mediaType": REFERRERS_MEDIA_TYPE,
                           "manifests": descriptors}).encode()
        self.send_response(200)
        self.send_header("Content-Type", REFERRERS_MEDIA_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", _API_VERSION)
        if wanted is not None:
            self.send_header("OCI-Filters-Applied", ARTIFACT_TYPE_FILTER)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _get_manifest(self, method: str, storage: _Storage, name: str, reference: str) -> None:
        digest = storage.resolve(name, reference)
        if digest is None:
            detail = {"Tag": reference} if ":" not in reference else {"Digest": reference}
            raise _RegistryHTTPError(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)
        media_type = storage.manifest_media_type(name, digest)
        accept = [a.split(";", 1)[0].strip() for a in
                  ",".join(self.headers.get_all("Accept") or []).split(",") if a.strip()]
        if accept and "*/*" not in accept and media_type not in accept:
            # distribution 2.8.2 answers 404 when the stored type is not acceptable
            raise _RegistryHTTPError(
                404, "MANIFEST_UNKNOWN",
                f"manifest found, but its media type {media_type} is not in the Accept header",
                {"Accept": accept, "mediaType": media_type})
        data = storage.blob_path(digest).read_bytes()
        mis = self.misbehavior
        if mis.digest_algorithm and media_type in MANIFEST_MEDIA_TYPES:
            data = mis.rewrite_manifest(data, lambda d: storage.blob_path(d).read_bytes())
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        digest = mis.content_digest or digest
        if mis.malformed_manifests:
            data = data[: max(1, len(data) // 2)]
        content_type = mis.manifest_media_type or media_type
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", digest)
        self.send_header("Docker-Distribution-API-Version", _API_VERSION)
        self.send_header("Etag", f'"{digest}"')
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _get_blob(self, method: str, storage: _Storage, name: str, digest_text: str) -> None:
        digest = self._stored_digest_arg(digest_text)
        if not storage.blob_linked(name, digest):
            raise _RegistryHTTPError(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        redirect = self.server.registry.blob_redirect
        if redirect is not None:
            location = redirect(name, digest)
            if location:
                self._send_empty(307, {"Location": location, "Docker-Content-Digest": digest})
                return
        path = storage.blob_path(digest)
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            mis = self.misbehavior
            if self.headers.get("Range"):
                with mis.seen.lock:
                    mis.seen.range_requests.append(str(self.headers.get("Range")))
            rng = None if mis.ignore_range else parse_range(self.headers.get("Range"), size)
            if rng == "unsatisfiable":
                raise _RegistryHTTPError(416, "SIZE_INVALID",
                                         "requested range not satisfiable",
                                         {"size": size},
                                         headers={"Content-Range": f"bytes */{size}"})
            if rng is None:
                first, last, status = 0, size - 1, 200
            else:
                assert isinstance(rng, tuple)
                first, last = rng
                status = 206
            length = last - first + 1
            announced = length + mis.extra_blob_bytes
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(announced))
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("Docker-Distribution-API-Version", _API_VERSION)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Etag", f'"{digest}"')
            self.send_header("Cache-Control", "max-age=31536000")
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            if mis.blob_content_encoding:
                self.send_header("Content-Encoding", mis.blob_content_encoding)
            self.end_headers()
            if method == "HEAD":
                return
            self._send_blob_body(f, first, length, mis)

    def _sendfile(self, f: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``f`` from ``offset``.

        By default (``blob_send="copy"``) a loop of ``pread`` into one 256 KiB buffer and
        ``sendall``: over loopback and veth this is what lets a client receive fastest.
        ``sendfile(2)`` (``blob_send="sendfile"``) costs the server less CPU but hands the
        kernel 4 KiB page-cache pages, and the receiving client then spends ~1.7x the CPU per
        byte copying them out (curl: 0.67 vs 0.38 s/GB, measured side by side on this machine
        kind); a single-threaded client is then the bottleneck, which is why this registry
        served a blob at 0.81x Distribution's rate with sendfile. Distribution itself copies
        32 KiB at a time. Under TLS the ``ssl`` module cannot use sendfile at all; 256 KiB
        pieces make OpenSSL emit full 16 KiB records, as Go's and nginx's TLS servers do.
        """
        sock = self.connection
        if self.server.registry.blob_send == "sendfile" and not isinstance(sock, ssl.SSLSocket):
            sock.sendfile(f, offset, count)
            return
        buf = bytearray(min(count, _SEND_PIECE))
        view = memoryview(buf)
        fd = f.fileno()
        while count > 0:
            n = os.preadv(fd, [view[: min(count, _SEND_PIECE)]], offset)
            if n <= 0:
                raise ConnectionResetError("blob file shorter than expected")
            sock.sendall(view[:n])
            offset += n
            count -= n

    def _send_blob_body(self, f: BinaryIO, first: int, length: int, mis: Misbehavior) -> None:
        sock: socket.socket = self.connection
        stop = length  # bytes of the stored range we send
        cut = False
        stall = False
        if mis.truncate_blobs_bytes > 0:
            stop = max(0, length - mis.truncate_blobs_bytes)
            cut = True
        at = mis.take_body_fault(stop) if mis.has_body_fault else None
        if at is not None:
            stop, cut = at, True
            stall = mis.drop_after_bytes is None
        if mis.corrupt_blobs and length > 0 and length // 2 < stop:
            middle = length // 2
            if middle:
                self._sendfile(f, first, middle)
            sock.sendall(bytes([os.pread(f.fileno(), 1, first + middle)[0] ^ 0xFF]))
            if stop - middle - 1 > 0:
                self._sendfile(f, first + middle + 1, stop - middle - 1)
        elif stop > 0:
            self._sendfile(f, first, stop)
        if stall:
            self._stall(sock, f, first + stop, length - stop, mis)
        if cut:
            self.close_connection = True
            if mis.drop_reset:  # RST: SO_LINGER on, 0 s
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    sock.close()
                return
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return
        if mis.extra_blob_bytes > 0:
            sock.sendall(b"\0" * mis.extra_blob_bytes)

    def _stall(self, sock: socket.socket, f: BinaryIO, offset: int, left: int,
               mis: Misbehavior) -> None:
        """Hold the body (or trickle it) until the client hangs up or ``stall_s`` passes."""
        mis.seen.add("stalls_started")
        deadline = time.monotonic() + mis.stall_s
        step = 1.0 / mis.trickle_bytes_s if mis.trickle_bytes_s else 0.2
        while time.monotonic() < deadline:
            # the client hanging up shows as a readable socket with nothing to read
            readable, _, _ = select.select([sock], [], [], step)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        mis.seen.add("stalls_ended_by_client")
                        return
                except OSError:
                    mis.seen.add("stalls_ended_by_client")
                    return
            if mis.trickle_bytes_s and left > 0:
                try:
                    sock.sendall(os.pread(f.fileno(), 1, offset))
                except OSError:
                    mis.seen.add("stalls_ended_by_client")
                    return
                offset += 1
                left -= 1
        mis.seen.add("stalls_timed_out")

    # --- push side -----------------------------------------------------------------------
    def _uploads(self, method: str, storage: _Storage, name: str, rest: str) -> None:
        if rest == "":
            if method != "POST":
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")
            self._start_upload(storage, name)
            return
        if not _UUID_RE.match(rest):
            raise _RegistryHTTPError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown", rest[:100])
        up = storage.get_upload(name, rest)
        if up is None:
            raise _RegistryHTTPError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown", rest)
        with up.lock:
            if method == "PATCH":
                self._patch_upload(up, name, rest)
            elif method == "PUT":
                self._finish_upload(storage, up, name, rest)
            elif method == "GET":
                self._send_empty(204, self._upload_headers(name, rest, up.offset))
            elif method == "DELETE":
                storage.drop_upload(rest)
                self._send_empty(204)
            else:
                raise _RegistryHTTPError(405, "UNSUPPORTED", "method not allowed")

    @staticmethod
    def _upload_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
        return {"Location": f"/v2/{name}/blobs/uploads/{upload_id}",
                "Range": f"0-{max(offset - 1, 0)}",
                "Docker-Upload-UUID": upload_id}

    def _start_upload(self, storage: _Storage, name: str) -> None:
        mount, source = self.query.get("mount"), self.query.get("from")
        if mount is not None:
            digest = self._digest_arg(mount)
            if source and NAME_RE.match(source) and storage.blob_linked(source, digest):
                storage.link_blob(name, digest)
                self._send_empty(201, {"Location": f"/v2/{name}/blobs/{digest}",
                                       "Docker-Content-Digest": digest})
                return
        digest_text = self.query.get("digest")
        if digest_text is not None:
            self._digest_arg(digest_text)
            up = storage.new_upload(name)
            upload_id = up.path.name
            with up.lock:
                self._finish_upload(storage, up, name, upload_id)
            return
        up = storage.new_upload(name)
        # drain a (normally empty) body so the connection stays usable
        for _ in self._read_body():
            pass
        self._send_empty(202, self._upload_headers(name, up.path.name, 0))

    def _append(self, up: _Upload) -> int:
        """Append the request body to the upload; return the number of bytes written."""
        written = 0
        with up.path.open("ab") as f:
            for piece in self._read_body():
                f.write(piece)
                up.hasher.update(piece)
                written += len(piece)
        up.offset += written
        return written

    def _patch_upload(self, up: _Upload, name: str, upload_id: str) -> None:
        crange = self.headers.get("Content-Range")
        if crange:
            m = _CONTENT_RANGE_RE.match(crange.strip())
            if not m or int(m[1]) != up.offset or int(m[2]) < int(m[1]):
                self.close_connection = True
                raise _RegistryHTTPError(
                    416, "BLOB_UPLOAD_INVALID",
                    f"chunk {crange!r} does not start at the upload's offset {up.offset}",
                    headers=self._upload_headers(name, upload_id, up.offset))
        try:
            self._append(up)
        except BaseException:
            self.server.registry._storage.drop_upload(upload_id)
            raise
        self._send_empty(202, self._upload_headers(name, upload_id, up.offset))

    def _finish_upload(self, storage: _Storage, up: _Upload, name: str, upload_id: str) -> None:
        digest_text = self.query.get("digest")
        if digest_text is None:
            raise _RegistryHTTPError(400, "DIGEST_INVALID", "PUT needs ?digest=<digest>")
        digest = self._digest_arg(digest_text)
        try:
            self._append(up)
        except BaseException:
            storage.drop_upload(upload_id)
            raise
        if not digest.startswith("sha256:"):
            storage.drop_upload(upload_id)
            raise _RegistryHTTPError(400, "DIGEST_INVALID",
                                     _unsupported_algorithm(digest.partition(":")[0]), digest)
        actual = "sha256:" + up.hasher.hexdigest()
        if actual != digest:
            storage.drop_upload(upload_id)
            raise _RegistryHTTPError(400, "DIGEST_INVALID",
                                     "provided digest did not match uploaded content",
                                     {"expected": digest, "actual": actual})
        storage.commit_upload(upload_id, digest)
        self._send_empty(201, {"Location": f"/v2/{name}/blobs/{digest}",
                               "Docker-Content-Digest": digest})

    def _put_manifest(self, storage: _Storage, name: str, reference: str) -> None:
        data = self._read_small_body(_MAX_MANIFEST_BYTES)
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RegistryHTTPError(400, "MANIFEST_INVALID",
                                     f"manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _RegistryHTTPError(400, "MANIFEST_INVALID", "manifest is not a JSON object")
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        media_type = content_type if content_type in _MANIFEST_TYPES else doc.get("mediaType")
        if media_type not in _MANIFEST_TYPES:
            if "manifests" in doc:
                media_type = OCI_INDEX
            elif "layers" in doc:
                media_type = OCI_MANIFEST
            else:
                raise _RegistryHTTPError(400, "MANIFEST_INVALID",
                                         f"unsupported manifest media type {content_type!r}")
        if doc.get("mediaType") not in (None, media_type):
            raise _RegistryHTTPError(400, "MANIFEST_INVALID",
                                     f"mediaType {doc.get('mediaType')!r} differs from "
                                     f"Content-Type {media_type!r}")
        if reference.startswith("sha256:") or ":" in reference:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != reference:
                raise _RegistryHTTPError(400, "DIGEST_INVALID",
                                         "manifest digest does not match the reference",
                                         {"expected": reference, "actual": actual})
        missing = self._missing_references(storage, name, doc, media_type)
        if missing:
            raise _RegistryHTTPError(400, "MANIFEST_BLOB_UNKNOWN",
                                     "manifest references blobs unknown to the repository",
                                     missing[0] if len(missing) == 1 else missing)
        try:
            subject = subject_digest(doc)
        except ValueError as exc:
            raise _RegistryHTTPError(400, "MANIFEST_INVALID", str(exc)) from None
        tag = None if reference.startswith("sha256:") else reference
        digest = storage.put_manifest(name, data, media_type, tag, subject)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if subject is not None:  # the registry keeps the subject's referrers list itself
            headers["OCI-Subject"] = subject
        self._send_empty(201, headers)

    @staticmethod
    def _missing_references(storage: _Storage, name: str, doc: dict[str, Any],
                            media_type: str) -> list[str]:
        try:
            index = media_type in INDEX_MEDIA_TYPES
            if index:
                descs = list(doc.get("manifests") or [])
            else:
                descs = [doc["config"], *(doc.get("layers") or [])]
            digests = [d["digest"] for d in descs]
        except (KeyError, TypeError) as exc:
            raise _RegistryHTTPError(400, "MANIFEST_INVALID",
                                     f"manifest lacks a required field: {exc}") from None
        for d in digests:
            if not isinstance(d, str) or not is_valid_digest(d):
                raise _RegistryHTTPError(400, "MANIFEST_INVALID", "invalid digest in manifest",
                                         str(d)[:200])
        if index:
            return [d for d in digests if storage.resolve(name, d) is None]
        return [d for d in digests if not storage.blob_linked(name, d)]


class _Server(ThreadedHTTPServer):
    request_queue_size = 128
    registry: EmbeddedRegistry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # e.g. a failed TLS handshake or a client vanishing: log, do not print a traceback
        logger.debug("embedded registry: connection from %s failed", client_address,
                     exc_info=True)

    def server_close(self) -> None:
        """Close the listening socket, then cut the open client connections."""
        super().server_close()
        self.close_connections()

    def close_connections(self) -> None:
        """Cut every open client connection (keep-alive ones included)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class EmbeddedRegistry(ThreadedService):
    """An OCI Distribution registry served from this process (threads; one per connection).

    Parameters
    ----------
    root : Path or None
        Storage directory; created if missing and kept after :meth:`close`. ``None`` uses a
        temporary directory that :meth:`close` deletes.
    host : str
        Address to listen on (loopback by default).
    port : int
        TCP port; 0 picks a free ephemeral port.
    ssl_context : ssl.SSLContext or None
        Serve HTTPS with this server-side context (handshake runs in the connection's thread).
    misbehavior : Misbehavior or None
        Deliberate protocol faults (see :class:`pullbench.servers.Misbehavior`); may be
        reassigned at any time, it is read at the start of every request.
    authorizer : callable or None
        ``(method, path, headers) -> None | (status, extra_headers)``; a tuple denies the request
        with that status, those headers and a JSON ``UNAUTHORIZED``/``DENIED`` error body.
    blob_redirect : callable or None
        ``(name, digest) -> URL | None``; a URL makes blob GET/HEAD answer ``307`` to it.
    blob_send : {"copy", "sendfile"}
        How blob bodies leave: ``"copy"`` (default) reads 256 KiB pieces and sends them, the
        fastest for the client over loopback; ``"sendfile"`` uses ``sendfile(2)`` on plain
        TCP (less server CPU, more client CPU; see ``benchmarks/bench_registry_serving.py``).
    idle_timeout_s : float
        Longest wait of any one read or write on a connection, seconds (default 60): a
        keep-alive connection idle between requests, an upload body that stops arriving, a
        client that stops reading a blob. Past it the connection is dropped (and an unfinished
        upload discarded). Each connection has its own thread, so a stalled client never
        delays the others; this bounds how long it holds its thread.
    request_timeout_s : float
        A request's line and headers must be complete within this many seconds of their first
        byte (default 30): a client trickling its head (slowloris) is dropped then, however
        often it sends a byte. A body is bounded per read by ``idle_timeout_s``. Go's
        ``http.Server`` has the same pair (``IdleTimeout``, ``ReadHeaderTimeout``).

    Raises
    ------
    ServerError
        ``blob_send`` is neither ``"copy"`` nor ``"sendfile"``; a timeout is not a positive
        number.

    Examples
    --------
    >>> with EmbeddedRegistry() as reg:  # doctest: +SKIP
    ...     push_image(build_image("synthetic-small"), f"{reg.host}/demo:latest")
    """

    kind = "embedded"
    label = "embedded registry"

    def __init__(self, root: Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None,
                 misbehavior: Misbehavior | None = None,
                 authorizer: Authorizer | None = None,
                 blob_redirect: BlobRedirect | None = None,
                 blob_send: str = "copy", idle_timeout_s: float = 60.0,
                 request_timeout_s: float = 30.0) -> None:
        from .._version import __version__

        if blob_send not in ("copy", "sendfile"):
            raise ServerError(f"blob_send must be 'copy' or 'sendfile', not {blob_send!r}")
        for label, value in (("idle_timeout_s", idle_timeout_s),
                             ("request_timeout_s", request_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0 < value < float("inf"):
                raise ServerError(f"{label} must be a positive number of seconds, not {value!r}")

        self.version = __version__
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="pullbench-registry-")) if root is None \
            else Path(root)
        self._init_service(host, port)
        self.ssl_context = ssl_context
        self.misbehavior = misbehavior
        self.authorizer = authorizer
        self.blob_redirect = blob_redirect
        self.blob_send = blob_send
        self.idle_timeout_s = float(idle_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self._storage = _Storage(self.root)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> EmbeddedRegistry:
        """Bind and serve in a background thread; return ``self``.

        Raises
        ------
        ServerError
            When the address cannot be bound (e.g. the port is in use). A temporary root this
            registry made is removed first, as :meth:`close` does; ``start()`` may be called
            again.
        """
        if self._server is not None:
            return self
        if self._owns_root and not self.root.is_dir():  # again after a failed start or close
            self.root.mkdir(parents=True)
            self._storage = _Storage(self.root)
        server = self._listen(_Server, _Handler, on_error=self.close,
                              hint="; choose another --port (0 picks a free one)")
        server.registry = self
        server.ssl_context = self.ssl_context
        server.idle_timeout_s = self.idle_timeout_s
        server.request_timeout_s = self.request_timeout_s
        self._serve(server, f"pullbench-registry:{server.server_address[1]}")
        logger.info("embedded registry serving %s from %s", self.url, self.root)
        return self

    def close(self) -> None:
        """Stop serving and, for a temporary root, delete the storage."""
        self._stop_serving()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def load_image(self, layout: ImageLayout, repository: str, tag: str = "latest") -> str:
        """Put an image layout straight into storage (no HTTP): hard links when possible.

        Much faster than :func:`pullbench.push_image` for big fixtures; the result is the same
        as pushing (blobs linked into ``repository``, child manifests by digest, the top
        manifest or index tagged ``tag``). Works whether or not the server is running.

        Parameters
        ----------
        layout : ImageLayout
        repository : str
            Repository name (distribution-spec grammar), e.g. ``"bench/synthetic-256m"``.
        tag : str

        Returns
        -------
        str
            The top manifest digest.

        Raises
        ------
        ServerError
            Invalid repository name or tag.
        pullbench.ImageBuildError
            A blob of the layout is missing.
        """
        if not NAME_RE.match(repository) or len(repository) > 255:
            raise ServerError(f"invalid repository name {repository!r} (lowercase "
                              "a-z0-9 components separated by '/', '.', '_', '-')")
        if not TAG_RE.match(tag):
            raise ServerError(f"invalid tag {tag!r} (up to 128 of [A-Za-z0-9_.-], not "
                              "starting with '.' or '-')")
        storage = self._storage
        top = layout.top
        for m in layout.manifests():
            doc = layout.read_json(m.digest)
            for obj in [doc["config"], *doc.get("layers", [])]:
                digest = obj["digest"]
                storage.ingest_file(layout.blob_path(digest), digest)
                storage.link_blob(repository, digest)
            if m.digest != top.digest:
                storage.put_manifest(repository, layout.read_blob(m.digest), m.media_type, None)
        return storage.put_manifest(repository, layout.read_blob(top.digest), top.media_type,
                                    tag)

    def serve_forever(self) -> None:
        """Serve in the calling thread until KeyboardInterrupt (used by the CLI)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.close()

    # --- addresses -----------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``: the registry part of an image reference."""
        return f"{self._bind[0]}:{self.port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"`` (``https://`` with an ``ssl_context``)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}"

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"EmbeddedRegistry({state}, root={str(self.root)!r})"


# media types accepted on manifest PUT, exported for tests
SUPPORTED_MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
