"""OCI image layouts on disk, pushing them to a registry, importing docker-archive tarballs.

An OCI image layout (opencontainers/image-spec:image-layout.md) is a directory holding
``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``. :class:`ImageLayout` reads one;
:func:`push_image` uploads it through the distribution-spec push API (blobs first, then child
manifests by digest, then the top manifest or index by tag); :func:`import_image` brings an OCI
layout directory, an OCI layout tarball or a ``docker save`` / docker-archive tarball into the
pullbench image cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3

from .._errors import (
    ImageBuildError,
    ImageNotFound,
    InvalidReference,
    RegistryError,
    RegistryUnavailable,
)
from .._media import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    is_valid_digest,
)
from .._reference import ImageReference, parse_reference

__all__ = ["ImageLayout", "LayoutDescriptor", "import_image", "push_image", "write_layout"]

logger = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT_VERSION = '{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True, slots=True)
class LayoutDescriptor:
    """An OCI content descriptor (image-spec descriptor.md).

    Attributes
    ----------
    media_type : str
    digest : str
        ``sha256:<hex>``.
    size_bytes : int
    platform : str or None
        ``os/architecture[/variant]`` for index entries, else None.
    annotations : dict
    """

    media_type: str
    digest: str
    size_bytes: int
    platform: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LayoutDescriptor:
        plat = obj.get("platform")
        platform = None
        if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
            platform = f"{plat['os']}/{plat['architecture']}" + (
                f"/{plat['variant']}" if plat.get("variant") else "")
        return cls(str(obj["mediaType"]), str(obj["digest"]), int(obj["size"]), platform,
                   dict(obj.get("annotations") or {}))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size_bytes}
        if self.platform:
            parts = self.platform.split("/")
            out["platform"] = {"architecture": parts[1], "os": parts[0]}
            if len(parts) > 2:
                out["platform"]["variant"] = parts[2]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """An OCI image layout directory holding one image (a manifest or a multi-platform index).

    Attributes
    ----------
    path : Path
        The layout directory (``oci-layout``, ``index.json``, ``blobs/sha256/...``).
    name : str
        A label (catalog name, import source); not part of the content.
    """

    path: Path
    name: str = ""

    # --- reading -------------------------------------------------------------------------
    def _index_json(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.path / "index.json").read_text())
            return doc
        except (OSError, json.JSONDecodeError) as exc:
            raise ImageBuildError(f"{self.path} is not an OCI image layout (index.json: {exc}); "
                                  "build or import the image again") from exc

    @property
    def top(self) -> LayoutDescriptor:
        """The descriptor in ``index.json`` that names this image (its manifest or index)."""
        manifests = self._index_json().get("manifests") or []
        if not manifests:
            raise ImageBuildError(f"{self.path}/index.json lists no manifest")
        return LayoutDescriptor.from_json(manifests[0])

    @property
    def manifest_digest(self) -> str:
        """Digest of the top manifest or index: what a pull by digest asks for."""
        return self.top.digest

    @property
    def media_type(self) -> str:
        return self.top.media_type

    @property
    def is_index(self) -> bool:
        return self.top.media_type in INDEX_MEDIA_TYPES

    def blob_path(self, digest: str) -> Path:
        """Path of the blob ``digest`` inside the layout."""
        if not is_valid_digest(digest):
            raise ImageBuildError(f"invalid digest {digest!r} in {self.path}")
        alg, _, hexpart = digest.partition(":")
        return self.path / "blobs" / alg / hexpart

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def read_json(self, digest: str) -> dict[str, Any]:
        """Parse the JSON blob ``digest`` (a manifest, index or config)."""
        doc: dict[str, Any] = json.loads(self.read_blob(digest))
        return doc

    def manifests(self) -> list[LayoutDescriptor]:
        """Descriptors of the image manifests (one per platform for an index)."""
        top = self.top
        if top.media_type not in INDEX_MEDIA_TYPES:
            return [top]
        out = []
        for entry in self.read_json(top.digest).get("manifests") or []:
            d = LayoutDescriptor.from_json(entry)
            if d.media_type in MANIFEST_MEDIA_TYPES:
                out.append(d)
        return out

    @property
    def descriptors(self) -> tuple[LayoutDescriptor, ...]:
        """Every distinct blob of the image: index, manifests, configs, layers (top first)."""
        seen: dict[str, LayoutDescriptor] = {}
        top = self.top
        seen[top.digest] = top
        for m in self.manifests():
            seen.setdefault(m.digest, m)
            doc = self.read_json(m.digest)
            for obj in [doc["config"], *doc.get("layers", [])]:
                d = LayoutDescriptor.from_json(obj)
                seen.setdefault(d.digest, d)
        return tuple(seen.values())

    @property
    def layers(self) -> tuple[LayoutDescriptor, ...]:
        """Layer descriptors of every platform, base first, without repeats."""
        seen: dict[str, LayoutDescriptor] = {}
        for m in self.manifests():
            for obj in self.read_json(m.digest).get("layers", []):
                d = LayoutDescriptor.from_json(obj)
                seen.setdefault(d.digest, d)
        return tuple(seen.values())

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(m.platform for m in self.manifests() if m.platform)

    @property
    def total_size_bytes(self) -> int:
        """Sum of the sizes of every distinct blob (what a full pull of all platforms moves)."""
        return sum(d.size_bytes for d in self.descriptors)

    def verify(self) -> None:
        """Check that every blob exists with the size and digest its descriptor states.

        Raises
        ------
        ImageBuildError
            Naming the first missing or damaged blob.
        """
        for d in self.descriptors:
            p = self.blob_path(d.digest)
            if not p.is_file():
                raise ImageBuildError(f"{self.path}: blob {d.digest} is missing")
            if p.stat().st_size != d.size_bytes:
                raise ImageBuildError(f"{self.path}: blob {d.digest} has {p.stat().st_size} "
                                      f"bytes, descriptor says {d.size_bytes}")
            if _file_digest(p) != d.digest:
                raise ImageBuildError(f"{self.path}: blob {d.digest} does not hash to its digest")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_layout(path: Path, top: LayoutDescriptor, *, tag: str = "latest") -> ImageLayout:
    """Write ``oci-layout`` and ``index.json`` naming ``top`` (blobs must already be in place)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(_LAYOUT_VERSION)
    entry = top.to_json()
    entry.setdefault("annotations", {})[REF_NAME] = tag
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (path / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return ImageLayout(path)


def _put_blob(layout_dir: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = layout_dir / "blobs" / "sha256" / digest[7:]
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.write_bytes(data)
    return digest


# --- push ------------------------------------------------------------------------------------
def _parse_target(target: str) -> ImageReference:
    """A push target is an image reference that names its registry (no Docker Hub default)."""
    example = "example: 127.0.0.1:5000/demo:latest"
    try:
        ref = parse_reference(target)
    except InvalidReference as exc:
        raise ImageBuildError(f"push target {target!r} is not REGISTRY/REPO[:TAG]: {exc}; "
                              f"{example}") from None
    if not target.startswith(ref.registry + "/"):
        raise ImageBuildError(f"push target {target!r} is not REGISTRY/REPO[:TAG]: it names no "
                              f"registry; {example}")
    return ref


_ERROR_PREFIX = 4096  # bytes of a push's error body read for the message


class _Pusher:
    def __init__(self, layout: ImageLayout, target: ImageReference, base: str,
                 session: requests.Session, verify: bool | str, auth: Any) -> None:
        self.layout = layout
        self.t = target
        self.base = base
        self.s = session
        self.verify = verify
        self.auth = auth

    def _req(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One request; the answer's body is never read whole (streamed, then closed, or read
        up to ``_ERROR_PREFIX`` bytes by :meth:`_fail`), so a registry that streams an endless
        body into a push cannot grow this process's memory."""
        try:
            r = self.s.request(method, url, verify=self.verify, auth=self.auth,
                               timeout=(10, 300), stream=True, **kw)
        except requests.ConnectionError as exc:
            raise RegistryUnavailable(f"cannot reach registry {self.t.registry}: {exc}",
                                      registry=self.t.registry) from exc
        if r.status_code < 400:
            r.close()
        return r

    def _fail(self, what: str, r: requests.Response) -> RegistryError:
        try:
            head = r.raw.read(_ERROR_PREFIX, decode_content=True) or b""
        except (OSError, ValueError, requests.RequestException, urllib3.exceptions.HTTPError):
            head = b""
        finally:
            r.close()
        text = head.decode("utf-8", "replace")[:500]
        cls = ImageNotFound if r.status_code == 404 else RegistryError
        if r.status_code >= 500:
            cls = RegistryUnavailable
        where = f"{self.t.registry}/{self.t.repository}"
        return cls(f"push of {what} to {where} failed: HTTP {r.status_code} {text}",
                   registry=self.t.registry, image_ref=where)

    def blob(self, d: LayoutDescriptor) -> None:
        url = f"{self.base}/v2/{self.t.repository}/blobs/{d.digest}"
        r = self._req("HEAD", url)
        if r.status_code == 200:
            return
        r = self._req("POST", f"{self.base}/v2/{self.t.repository}/blobs/uploads/",
                      headers={"Content-Length": "0"})
        if r.status_code not in (201, 202):
            raise self._fail(f"blob {d.digest} (POST)", r)
        if r.status_code == 201:
            return
        if not r.headers.get("Location"):
            raise RegistryError(
                f"push of blob {d.digest} to {self.t.registry}/{self.t.repository}: the upload "
                "was accepted (HTTP 202) without a Location header to upload to; the registry "
                "does not follow the OCI distribution spec's push flow",
                registry=self.t.registry)
        location = urljoin(self.base + "/", r.headers["Location"])
        sep = "&" if "?" in location else "?"
        with self.layout.blob_path(d.digest).open("rb") as f:
            r = self._req("PUT", f"{location}{sep}digest={d.digest}", data=f,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Length": str(d.size_bytes)})
        if r.status_code != 201:
            raise self._fail(f"blob {d.digest} (PUT)", r)

    def manifest(self, d: LayoutDescriptor, reference: str) -> str:
        data = self.layout.read_blob(d.digest)
        r = self._req("PUT", f"{self.base}/v2/{self.t.repository}/manifests/{reference}", data=data,
                      headers={"Content-Type": d.media_type})
        if r.status_code not in (200, 201):
            raise self._fail(f"manifest {d.digest}", r)
        return r.headers.get("Docker-Content-Digest", d.digest)


def push_image(layout: ImageLayout, target: str, *, plain_http: bool = True,
               ca_bundle: str | os.PathLike[str] | None = None,
               session: requests.Session | None = None, auth: Any = None) -> str:
    """Push an image layout to a registry through the distribution-spec push API.

    Blobs go first (``HEAD`` to skip existing ones, then ``POST`` + monolithic
    ``PUT ?digest=``), then each platform manifest by digest, then the top manifest or index
    under the target's tag (or its digest when the target has none).

    Parameters
    ----------
    layout : ImageLayout
    target : str
        ``REGISTRY/REPO[:TAG]``, e.g. ``"127.0.0.1:5000/demo:latest"``.
    plain_http : bool
        Use ``http://`` (default) instead of ``https://``.
    ca_bundle : path or None
        CA bundle to verify the registry's certificate (HTTPS only).
    session : requests.Session or None
        Session to use (e.g. with auth adapters); a private one with ``trust_env=False``
        otherwise, so proxy variables and ``REQUESTS_CA_BUNDLE`` do not interfere.
    auth : requests auth or None
        Passed to every request (e.g. ``("user", "pass")``).

    Returns
    -------
    str
        The digest of the pushed top manifest or index.

    Raises
    ------
    ImageBuildError
        Malformed target.
    RegistryError, RegistryUnavailable, ImageNotFound
        The registry refused or could not be reached.
    """
    t = _parse_target(target)
    base = f"{'http' if plain_http else 'https'}://{t.api_host}"
    own = session is None
    s = session or requests.Session()
    if own:
        s.trust_env = False
    verify: bool | str = str(ca_bundle) if ca_bundle is not None else True
    try:
        p = _Pusher(layout, t, base, s, verify, auth)
        top = layout.top
        for m in layout.manifests():
            doc = layout.read_json(m.digest)
            for obj in [doc["config"], *doc.get("layers", [])]:
                p.blob(LayoutDescriptor.from_json(obj))
            if m.digest != top.digest:
                p.manifest(m, m.digest)
        reference = t.tag or t.ref  # the tag when given, else the digest
        digest = p.manifest(top, reference)
        logger.info("pushed %s (%s) to %s", layout.name or layout.path, digest, target)
        return digest
    finally:
        if own:
            s.close()


# --- import ----------------------------------------------------------------------------------
def _copy_layout(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=False)


def _gzip_file(src: Path, dst: Path) -> None:
    pigz = shutil.which("pigz")
    if pigz:
        with src.open("rb") as fin, dst.open("wb") as fout:
            subprocess.run([pigz, "-6", "-n", "-c"], stdin=fin, stdout=fout, check=True)
        return
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(comp.compress(chunk))
        fout.write(comp.flush())


def _import_docker_archive(tar: tarfile.TarFile, dst: Path, tmp: Path) -> LayoutDescriptor:
    """Convert a ``docker save`` tarball into an OCI layout with a Docker v2 schema 2 manifest."""
    if "manifest.json" not in tar.getnames():
        raise ImageBuildError("tarball has neither index.json (OCI layout) nor manifest.json "
                              "(docker save); pass an OCI layout or `docker save` output")
    try:
        manifest = json.load(_extract(tar, "manifest.json"))
        entry = manifest[0]
        config_name, layer_names = entry["Config"], list(entry["Layers"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ImageBuildError(f"docker-archive manifest.json is malformed ({exc!r}); expected "
                              '[{"Config": ..., "Layers": [...]}]') from None
    config = _extract(tar, config_name).read()
    config_digest = _put_blob(dst, config)
    layers = []
    for layer_name in layer_names:
        raw = tmp / "layer.tar"
        with _extract(tar, layer_name) as fin, raw.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        with raw.open("rb") as f:
            head = f.read(2)
        gz = tmp / "layer.tar.gz"
        if head == b"\x1f\x8b":
            shutil.move(raw, gz)
        else:
            _gzip_file(raw, gz)
            raw.unlink()
        digest = _file_digest(gz)
        size = gz.stat().st_size
        target = dst / "blobs" / "sha256" / digest[7:]
        shutil.move(gz, target)
        layers.append({"mediaType": DOCKER_LAYER_GZIP, "digest": digest, "size": size})
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
           "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
           "layers": layers}
    data = json.dumps(doc, indent=3).encode()
    return LayoutDescriptor(DOCKER_MANIFEST, _put_blob(dst, data), len(data))


def _extract(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    try:
        member = tar.getmember(name)
        for _ in range(16):  # docker save links repeated layers; bound the chain
            if not (member.issym() or member.islnk()):
                break
            target = member.linkname
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name),
                                                           target))
            member = tar.getmember(target)
    except KeyError:
        raise ImageBuildError(f"tarball lacks {name!r} (or the file it links to)") from None
    f = tar.extractfile(member)
    if f is None:
        raise ImageBuildError(f"{name} in the tarball is not a regular file")
    return f  # type: ignore[return-value]


def import_image(path: str | os.PathLike[str], *, name: str | None = None,
                 cache_dir: Path | None = None) -> ImageLayout:
    """Import an OCI image layout (directory or tarball) or a ``docker save`` tarball.

    The result is a fresh OCI layout in the pullbench image cache, under
    ``imported/<name>-<digest prefix>``; a docker-archive becomes a Docker v2 schema 2 manifest with
    gzip layers (what ``docker push`` would send; layers that were plain tar are compressed with
    pigz or zlib level 6). The source is not modified.

    Parameters
    ----------
    path : path
        OCI layout directory, OCI layout tarball, or docker-archive tarball.
    name : str or None
        Label for the image (default: the file name).
    cache_dir : Path or None
        Image cache (default ``$PULLBENCH_CACHE/images`` or ``~/.cache/pullbench/images``).

    Raises
    ------
    ImageBuildError
        The path does not exist or holds neither format; a blob is missing or damaged.
    """
    from ._cache import default_cache_dir

    src = Path(path)
    if not src.exists():
        raise ImageBuildError(f"cannot import {src}: no such file or directory")
    label = name or src.name.split(".")[0] or "imported"
    root = (cache_dir or default_cache_dir()) / "imported"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        layout_dir = work / "layout"
        if src.is_dir():
            if not (src / "index.json").is_file():
                raise ImageBuildError(f"{src} is a directory without index.json: not an OCI "
                                      "image layout (skopeo copy ... oci:DIR writes one)")
            _copy_layout(src, layout_dir)
        else:
            try:
                tar = tarfile.open(src)
            except tarfile.TarError as exc:
                raise ImageBuildError(f"{src} is neither a directory nor a tarball: {exc}") \
                    from exc
            with tar:
                names = set(tar.getnames())
                names |= {n.removeprefix("./") for n in names}
                if "index.json" in names and "oci-layout" in names:
                    _safe_extract(tar, layout_dir)
                else:
                    (layout_dir / "blobs" / "sha256").mkdir(parents=True)
                    top = _import_docker_archive(tar, layout_dir, work)
                    write_layout(layout_dir, top, tag=label)
        layout = ImageLayout(layout_dir, label)
        layout.verify()
        final = root / f"{label}-{layout.manifest_digest[7:19]}"
        if final.exists():
            shutil.rmtree(final)
        Path(layout_dir).replace(final)
        return ImageLayout(final, label)
    finally:
        shutil.rmtree(work, ignore_errors=True)


_LAYOUT_MEMBER_RE = re.compile(r"^(?:oci-layout|index\.json|blobs/[a-z0-9]+/[a-zA-Z0-9=_-]+)$")


def _safe_extract(tar: tarfile.TarFile, dst: Path) -> None:
    """Extract only the OCI layout's own files (regular files, known names) into ``dst``.

    Anything else in the tarball (``manifest.json`` and the ``<id>/layer.tar`` links that
    Docker >= 25 adds next to the OCI layout, or hostile ``../`` names) is ignored.
    """
    dst.mkdir(parents=True)
    for member in tar.getmembers():
        name = member.name.removeprefix("./")
        if not member.isfile() or not _LAYOUT_MEMBER_RE.match(name):
            continue
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(member)
        if src is None:
            continue
        with src, target.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
