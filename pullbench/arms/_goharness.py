"""The Go copy harness: registry blobs copied into files by the exact Go idioms of real pullers.

pullbench's Python strategies imitate Go's copy loops (``go-iocopy``, ``pr48602``,
``pools-bufio32k``, ``containerd-1m``). This module builds a small Go program (standard library
only; ``pullbench/arms/go/harness/main.go``) with the machine's Go toolchain on first use, caches
it under ``$PULLBENCH_CACHE/go-harness/``, and runs it: it GETs blobs (plain HTTP, or TLS with a
CA file) and copies each body with one idiom, counting every read and write itself. The
write-size histograms of the two can then be compared on the same blobs
(tests/test_go_harness.py), and the Go idioms can be raced as arms ``go:<idiom>``.

Idioms (see :data:`GO_IDIOMS` and the Go source for each one's origin): ``iocopy``,
``copybuffer``, ``copybuffer-hidden``, ``bufio``, ``bufio-hidden``, ``pr48602``,
``pools-bufio32k``, ``containerd-1m``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import ProgramBuildError, PullbenchError
from ..puller._probes import power_of_two_histogram
from ._gotoolchain import GoToolchain, cache_root, find_go, stable_key

__all__ = [
    "GO_IDIOMS",
    "PRESET_IDIOMS",
    "GoBlobResult",
    "GoCopyResult",
    "GoIdiom",
    "go_copy",
    "go_harness_binary",
    "go_pull",
]

KiB = 1024
MiB = 1024 * KiB

_SOURCE = ("go", "harness", "main.go")
_BINARY = "pullbench-gocopy"


@dataclass(frozen=True, slots=True)
class GoIdiom:
    """One Go copy idiom the harness runs.

    Attributes
    ----------
    name : str
    mirrors : str
        The code it is (``owner/repo:path``).
    description : str
    params : Mapping[str, int]
        The parameters it takes (``read_size``, ``write_size``; bytes) and their defaults.
    """

    name: str
    mirrors: str
    description: str
    params: Mapping[str, int] = field(default_factory=dict)


GO_IDIOMS: dict[str, GoIdiom] = {
    i.name: i
    for i in (
        GoIdiom("iocopy", "moby/moby:distribution/pull_v2.go io.Copy(tmpFile, io.TeeReader(...)); "
                "golang/go:src/os/file.go genericReadFrom",
                "io.Copy into *os.File: File.ReadFrom's 32 KiB loop, one write per read"),
        GoIdiom("copybuffer", "golang/go:src/io/io.go CopyBuffer; golang/go#16474",
                "io.CopyBuffer(file, tee, buf): buf ignored, File.ReadFrom's 32 KiB loop",
                {"read_size": 512 * KiB}),
        GoIdiom("copybuffer-hidden", "golang/go:src/io/io.go CopyBuffer with struct{ io.Writer }",
                "io.CopyBuffer with ReadFrom hidden: reads <= read_size, one write per read",
                {"read_size": 512 * KiB}),
        GoIdiom("bufio", "golang/go:src/bufio/bufio.go (*Writer).ReadFrom",
                "io.Copy into a bufio.Writer: its ReadFrom hands the copy to File.ReadFrom while "
                "the buffer is empty, so the buffer is bypassed",
                {"write_size": 512 * KiB}),
        GoIdiom("bufio-hidden", "golang/go:src/bufio/bufio.go (*Writer).Write",
                "io.CopyBuffer into struct{ io.Writer }{bufio.Writer}: writes coalesced to "
                "write_size",
                {"read_size": 512 * KiB, "write_size": 512 * KiB}),
        GoIdiom("pr48602", "moby/moby#48602",
                "512 KiB copy buffer + 512 KiB bufio.Writer, ReadFrom hidden"),
        GoIdiom("pools-bufio32k", "moby/moby:pkg/pools/pools.go BufioWriter32KPool + pools.Copy",
                "pooled 32 KiB copy buffer + pooled 32 KiB bufio.Writer, ReadFrom hidden"),
        GoIdiom("containerd-1m", "containerd/containerd:core/content/helpers.go copyWithBuffer",
                "io.ReadAtLeast fills a pooled 1 MiB buffer, one write per fill",
                {"read_size": 1 * MiB}),
    )
}

#: pullbench's Python preset -> the Go idiom it imitates.
PRESET_IDIOMS: dict[str, str] = {
    "go-iocopy": "iocopy",
    "pr48602": "pr48602",
    "pools-bufio32k": "pools-bufio32k",
    "containerd-1m": "containerd-1m",
}


@dataclass(frozen=True, slots=True)
class GoBlobResult:
    """One blob copied by the harness.

    Attributes
    ----------
    digest : str
    path : Path
        Where the blob was stored (``dest/<hex digest>``).
    size_bytes : int
    duration_s, ttfb_s : float
        From sending the request to the file renamed into place / to the response headers.
    proto : str
        ``HTTP/1.1`` or ``HTTP/2.0``.
    write_sizes, read_sizes : dict[int, int]
        Exact byte count -> number of ``write``/``Read`` calls (empty when not counted).
    """

    digest: str
    path: Path
    size_bytes: int
    duration_s: float
    ttfb_s: float
    proto: str
    write_sizes: dict[int, int]
    read_sizes: dict[int, int]

    @property
    def write_size_hist(self) -> dict[int, int]:
        """Power-of-two histogram of the writes (bucket = smallest power of two >= size)."""
        return power_of_two_histogram(self.write_sizes)

    @property
    def read_size_hist(self) -> dict[int, int]:
        """Power-of-two histogram of the reads."""
        return power_of_two_histogram(self.read_sizes)

    @property
    def write_count(self) -> int:
        return sum(self.write_sizes.values())


@dataclass(frozen=True, slots=True)
class GoCopyResult:
    """What one run of the harness did.

    Attributes
    ----------
    idiom : str
    read_size, write_size : int
        The parameters as the harness used them (bytes).
    go_version : str
    duration_s : float
        All blobs, one after the other (seconds).
    blobs : tuple of GoBlobResult
    """

    idiom: str
    read_size: int
    write_size: int
    go_version: str
    duration_s: float
    blobs: tuple[GoBlobResult, ...]

    @property
    def total_bytes(self) -> int:
        return sum(b.size_bytes for b in self.blobs)

    @property
    def write_size_hist(self) -> dict[int, int]:
        """Power-of-two histogram of every blob's writes."""
        merged: dict[int, int] = {}
        for blob in self.blobs:
            for size, count in blob.write_sizes.items():
                merged[size] = merged.get(size, 0) + count
        return power_of_two_histogram(merged)

    @property
    def write_count(self) -> int:
        return sum(b.write_count for b in self.blobs)


def _source_text() -> bytes:
    return resources.files("pullbench.arms").joinpath(*_SOURCE).read_bytes()


def go_harness_binary(*, toolchain: GoToolchain | None = None,
                      cache_dir: str | Path | None = None) -> Path:
    """The harness binary, built with Go on first use and cached.

    The cache key is the source text and the Go version:
    ``<cache>/go-harness/<key>/pullbench-gocopy``. The binary is written to a temporary name and
    renamed into place, so a failed or interrupted build leaves nothing behind.

    Parameters
    ----------
    toolchain : GoToolchain, optional
        Default: :func:`find_go`.
    cache_dir : path, optional
        Default ``$PULLBENCH_CACHE`` or ``~/.cache/pullbench``.

    Returns
    -------
    Path

    Raises
    ------
    ProgramBuildError
        No Go toolchain (names ``apt-get install golang-go``) or the compile failed.
    """
    go = toolchain or find_go()
    source = _source_text()
    root = cache_root(cache_dir)
    key = stable_key({"source": source.hex(), "go": go.version})[:16]
    folder = root / "go-harness" / key
    binary = folder / _BINARY
    if binary.is_file():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
        src = Path(tmp) / "main.go"
        src.write_bytes(source)
        out = Path(tmp) / _BINARY
        env = go.env(GOPATH=str(Path(tmp) / "gopath"),
                     GOCACHE=str(root / "go-harness" / "gocache"), CGO_ENABLED="0")
        proc = subprocess.run([str(go.go), "build", "-trimpath", "-o", str(out), str(src)],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0 or not out.is_file():
            raise ProgramBuildError(f"building the Go copy harness with {go.go} ({go.version}) "
                                    f"failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        out.replace(binary)
    return binary


def _check_params(idiom: str, params: Mapping[str, Any]) -> dict[str, int]:
    spec = GO_IDIOMS.get(idiom)
    if spec is None:
        raise ProgramBuildError(f"unknown Go idiom {idiom!r}; known: {', '.join(GO_IDIOMS)}")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ProgramBuildError(
            f"Go idiom {idiom!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(spec.params)) or '(none)'}")
    out = dict(spec.params)
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ProgramBuildError(f"Go idiom {idiom!r}: {key}={value!r} must be a positive "
                                    "integer number of bytes")
        out[key] = value
    return out


def go_copy(blobs: Sequence[tuple[str, str]], idiom: str, dest: str | Path, *,
            ca_bundle: str | Path | None = None, headers: Sequence[str] = (),
            count: bool = True, timeout_s: float = 600.0,
            params: Mapping[str, int] | None = None) -> GoCopyResult:
    """GET each blob and copy it into ``dest/<hex digest>`` with one Go idiom.

    Parameters
    ----------
    blobs : sequence of (url, digest)
        Blob URLs (``http://`` or ``https://``) and the ``sha256:`` digests they must hash to.
    idiom : str
        A key of :data:`GO_IDIOMS`.
    dest : path
        Directory for the blobs (created).
    ca_bundle : path, optional
        PEM CA bundle for ``https://`` (default: the system's roots).
    headers : sequence of str
        Extra request headers, ``"Name: value"``.
    count : bool
        Count every read and write (default). ``False`` copies into the bare ``*os.File``.
    timeout_s : float
    params : mapping, optional
        ``read_size`` / ``write_size`` where the idiom takes them (bytes).

    Returns
    -------
    GoCopyResult

    Raises
    ------
    ProgramBuildError
        Unknown idiom or parameter; no Go toolchain.
    PullbenchError
        The harness failed (HTTP error, digest mismatch, ...): its message.
    """
    p = _check_params(idiom, params or {})
    binary = go_harness_binary()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    argv = [str(binary), "-idiom", idiom, "-dir", str(dest),
            "-count", "wrapper" if count else "none"]
    if "read_size" in p:
        argv += ["-read-size", str(p["read_size"])]
    if "write_size" in p:
        argv += ["-write-size", str(p["write_size"])]
    if ca_bundle is not None:
        argv += ["-ca", str(ca_bundle)]
    for h in headers:
        argv += ["-header", h]
    for url, digest in blobs:
        argv += ["-blob", f"{digest}={url}"]
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                          env=env)
    elapsed = time.perf_counter() - start
    try:
        rep = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise PullbenchError(f"the Go copy harness exited {proc.returncode} without a report: "
                             f"{(proc.stderr or proc.stdout)[-1000:]}") from None
    if proc.returncode != 0 or rep.get("error"):
        raise PullbenchError(f"the Go copy harness ({idiom}) failed: {rep.get('error')}")
    results = tuple(
        GoBlobResult(
            digest=b["digest"], path=Path(b["path"]), size_bytes=int(b["bytes"]),
            duration_s=float(b["seconds"]), ttfb_s=float(b["ttfb_seconds"]), proto=b["proto"],
            write_sizes={int(k): int(v) for k, v in (b.get("write_sizes") or {}).items()},
            read_sizes={int(k): int(v) for k, v in (b.get("read_sizes") or {}).items()},
        )
        for b in rep.get("blobs") or []
    )
    return GoCopyResult(idiom=idiom, read_size=int(rep["read_size"]),
                        write_size=int(rep["write_size"]), go_version=rep["go_version"],
                        duration_s=float(rep.get("seconds", elapsed)), blobs=results)


def go_pull(reference: str, idiom: str, dest: str | Path, *, plain_http: bool = False,
            ca_bundle: str | Path | None = None, platform: str | None = None,
            count: bool = True, params: Mapping[str, int] | None = None) -> GoCopyResult:
    """Resolve an image with pullbench's client, then copy its config and layer blobs with the
    Go idiom (one after the other, in manifest order: config first).

    Parameters
    ----------
    reference : str
        ``host[:port]/repo[:tag][@digest]`` of a registry that needs no credentials.
    idiom, dest, ca_bundle, count, params
        As :func:`go_copy`.
    plain_http : bool
    platform : str, optional
        ``os/arch[/variant]`` for an index (default: this host).

    Returns
    -------
    GoCopyResult

    Raises
    ------
    ProgramBuildError, PullbenchError, RegistryError
    """
    from .._reference import parse_reference
    from ..puller._client import RegistryClient

    _check_params(idiom, params or {})
    ref = parse_reference(reference)
    with_client = RegistryClient(ref.registry, plain_http=plain_http, ca_bundle=ca_bundle)
    try:
        manifest = with_client.get_manifest(ref.repository, ref.ref, platform)
        base = with_client.base_url
    finally:
        with_client.close()
    blobs = [(f"{base}/v2/{ref.repository}/blobs/{d.digest}", d.digest)
             for d in (manifest.config, *manifest.layers)]
    return go_copy(blobs, idiom, dest, ca_bundle=ca_bundle, count=count, params=params)
