"""The Go toolchain and the cache that the programs pullbench builds from source live in.

Both the dockerd variants (:mod:`pullbench.arms._dockerd_build`) and the Go copy harness
(:mod:`pullbench.arms._goharness`) are compiled with the machine's Go (Debian's ``golang-go``,
Go 1.19 on Debian 12) in GOPATH mode, offline (``GO111MODULE=off GOPROXY=off``), and cached under
``$PULLBENCH_CACHE`` (default ``~/.cache/pullbench``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .._errors import ProgramBuildError
from ..images._cache import default_cache_dir

__all__ = ["GoToolchain", "cache_root", "find_go", "stable_key"]

#: Debian's golang-go puts ``go`` on PATH; the versioned tree is found even without the symlink.
_GO_FALLBACKS = ("/usr/lib/go/bin/go", "/usr/lib/go-1.19/bin/go")

INSTALL_GO = "apt-get install -y golang-go"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder the Go builds use, made absolute (not created).

    ``cache_dir`` when given, else ``$PULLBENCH_CACHE`` when set, else ``~/.cache/pullbench``:
    the parent of the image cache (:func:`pullbench.default_cache_dir`). Absolute because Go
    refuses a relative GOPATH entry, and a daemon started from another folder must still find
    the binary built there.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent
    return root.absolute()


def stable_key(record: object) -> str:
    """sha256 hex of ``record`` as canonical JSON (sorted keys): a cache key."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class GoToolchain:
    """A Go toolchain found on this machine.

    Attributes
    ----------
    go : Path
        The ``go`` command.
    version : str
        ``go env GOVERSION``, e.g. ``"go1.19.8"``.
    goroot : Path
    """

    go: Path
    version: str
    goroot: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment for an offline GOPATH-mode build: this process's environment without
        any Go setting of the user's, plus ``GO111MODULE=off GOPROXY=off GOFLAGS=``
        ``GOTOOLCHAIN=local`` and ``overrides`` (``GOPATH``, ``GOCACHE``, ...)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
        env.update(GO111MODULE="off", GOPROXY="off", GOFLAGS="", GOTOOLCHAIN="local",
                   GOROOT=str(self.goroot), GOTELEMETRY="off")
        env.update(overrides)
        return env


def find_go(go: str | Path | None = None) -> GoToolchain:
    """Locate the Go toolchain: ``go`` if given, else ``go`` on PATH, else Debian's
    ``/usr/lib/go*/bin/go``.

    Raises
    ------
    ProgramBuildError
        No toolchain (the message gives the ``apt-get`` line), or it does not run.
    """
    candidates: list[str] = []
    if go is not None:
        candidates.append(str(go))
    else:
        on_path = shutil.which("go")
        if on_path:
            candidates.append(on_path)
        candidates.extend(p for p in _GO_FALLBACKS if Path(p).is_file())
    for candidate in candidates:
        path = Path(candidate)
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([str(path), "env", "GOVERSION", "GOROOT"], capture_output=True,
                                 text=True, timeout=60, check=True,
                                 env={k: v for k, v in os.environ.items()
                                      if not k.startswith("GO")}).stdout.split()
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProgramBuildError(f"the Go toolchain {path} does not run ({exc}); reinstall it: "
                                    f"{INSTALL_GO}", commands=(INSTALL_GO,)) from exc
        if len(out) == 2:
            return GoToolchain(path, out[0], Path(out[1]))
    where = f"{go}" if go is not None else "on PATH or in /usr/lib/go*/bin"
    raise ProgramBuildError(
        f"no Go toolchain found ({where}); pullbench builds dockerd and its Go copy harness with "
        f"Debian's Go: run as root `{INSTALL_GO}` (or pass --install as root)",
        commands=(INSTALL_GO,))
