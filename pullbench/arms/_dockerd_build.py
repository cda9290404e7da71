"""Build dockerd from source: stock, or with one of pullbench's edits of its layer copy loop.

moby/moby#48602 asked whether dockerd pulls faster when its layer download writes 512 KiB at a
time. To answer that with dockerd itself, pullbench builds the daemon from the distribution's own
source package (``apt-get source docker.io``; moby 20.10.24 on Debian 12) or from a moby 20.10
tree the user points to, once unchanged (``stock``) and once per *variant*: a small Go file of
pullbench's own (``pullbench/arms/go/variants/<variant>.go``) that replaces the one copy loop in
``distribution/pull_v2.go`` ``(*v2LayerDescriptor).Download``::

    _, err = io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))

How it builds (the recipe of Debian's own package, debian/rules): GOPATH mode with the machine's
Go (``GO111MODULE=off GOPROXY=off``); the engine, libnetwork and swarmkit under
``<gopath>/src/github.com/docker/{docker,libnetwork,swarmkit}``;
``GOPATH=<gopath>:/usr/share/gocode`` (the Go libraries ``apt-get build-dep docker.io`` installs);
``go build -buildmode=pie -tags "apparmor seccomp journald" github.com/docker/docker/cmd/dockerd``
(the tags of Debian's binary, ``go version -m /usr/sbin/dockerd``) with
``-ldflags -X github.com/docker/docker/dockerversion.Version=<version>+pullbench.<variant>`` so that
``docker version`` names the variant. A variant changes only the ``distribution`` package: it is
built from an *overlay* GOPATH entry placed first that holds a copy of just that package, so a
variant rebuild recompiles a few packages (seconds), not the daemon (a minute or two).

Cache (``$PULLBENCH_CACHE/dockerd/``, default ``~/.cache/pullbench/dockerd/``)::

    source/<version>/src/github.com/docker/...   extracted sources, one GOPATH per version
    gocache/                                     GOCACHE shared by all builds
    overlay/<variant>-<key>/src/...              the edited distribution package
    bin/<variant>-<key>/dockerd, build.json      binaries; key = sha256 of (source version,
                                                 variant, its Go file, params, Go version)

A binary is written under a temporary name, checked (``go tool nm`` must list the variant's copy
function; stock must have none) and only then renamed into place: a failed build leaves no
binary behind.

Nothing is installed silently. What the build needs from the system (a ``deb-src`` entry derived
from the machine's own apt sources, ``golang-go``, ``dpkg-dev``, ``apt-get build-dep docker.io``)
is named in the error as exact lines to run, or run with ``install=True`` as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import ProgramBuildError
from .._sizes import SIZE_FORMATS, parse_size
from ._gotoolchain import GoToolchain, cache_root, find_go, stable_key

__all__ = [
    "COPY_LOOP",
    "DEB_SRC_FILE",
    "DockerdBuild",
    "DockerdVariant",
    "build_dockerd",
    "deb_src_entries",
    "dockerd_build_requirements",
    "dockerd_variants",
    "install_dockerd_build_requirements",
]

#: The statement every variant replaces (moby 20.10, distribution/pull_v2.go).
COPY_LOOP = "io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))"
LOOP_FILE = "distribution/pull_v2.go"
ENGINE_PKG = "github.com/docker/docker"
_SIBLINGS = ("libnetwork", "swarmkit")  # github.com/docker/<name>
BUILD_TAGS = "apparmor seccomp journald"
SYSTEM_GOPATH = "/usr/share/gocode"
SOURCE_PACKAGE = "docker.io"
#: pullbench's own apt source file for the deb-src entries (written only with install=True).
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/pullbench-deb-src.sources")
_CONTROL = "debian-control"  # the source package's debian/control, kept beside src/
_RECIPE = 1  # bump when the build recipe changes: every cached binary is rebuilt
_APT = ("apt-get", "-o", "DPkg::Lock::Timeout=900")
_VARIANT_FILE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\.go$")
_PARAM_RE = re.compile(r"^const (\w+) = (\d+) // pullbench:param (\w+)$", re.M)

Progress = Callable[[str], None]


# --- variants -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerdVariant:
    """One edit of dockerd's layer copy loop (a Go file in ``pullbench/arms/go/variants/``).

    Attributes
    ----------
    name : str
    summary : str
        The first paragraph of the file's header comment (what it mirrors).
    function : str or None
        The Go function that replaces the loop (``None`` for ``stock``: no edit).
    params : Mapping[str, int]
        Parameters and their defaults (bytes), from the file's ``// pullbench:param`` constants.
    text : str
        The Go source.
    """

    name: str
    summary: str
    function: str | None
    params: Mapping[str, int]
    text: str = field(repr=False)

    def source_with(self, params: Mapping[str, int]) -> str:
        """The Go file with the parameter constants set to ``params``."""

        def sub(m: re.Match[str]) -> str:
            return f"const {m.group(1)} = {params.get(m.group(3), int(m.group(2)))} " \
                   f"// pullbench:param {m.group(3)}"

        return _PARAM_RE.sub(sub, self.text)


def _parse_variant(name: str, text: str) -> DockerdVariant:
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("//") or not line[2:].strip():
            break  # the first paragraph of the header comment
        header.append(line[2:].strip())
    meta = dict(re.findall(r"^// pullbench:(variant|func) (\S+)$", text, re.M))
    if meta.get("variant") != name:
        raise ProgramBuildError(f"variant file {name}.go does not declare "
                                f"'// pullbench:variant {name}'")
    params = {key: int(default) for _const, default, key in _PARAM_RE.findall(text)}
    return DockerdVariant(name, " ".join(header) or name, meta.get("func"), params, text)


def dockerd_variants() -> dict[str, DockerdVariant]:
    """The dockerd variants pullbench ships, by name (``stock``, ``pr48602``,
    ``pools-bufio32k``, ``bufio``)."""
    folder = resources.files("pullbench.arms").joinpath("go", "variants")
    out: dict[str, DockerdVariant] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if _VARIANT_FILE_RE.match(entry.name):
            name = entry.name[:-3]
            out[name] = _parse_variant(name, entry.read_text())
    return out


def _resolve_params(variant: DockerdVariant, params: Mapping[str, Any]) -> dict[str, int]:
    unknown = sorted(set(params) - set(variant.params))
    if unknown:
        valid = ", ".join(sorted(variant.params)) or "(none)"
        raise ProgramBuildError(
            f"dockerd variant {variant.name!r} has no parameter "
            f"{', '.join(map(repr, unknown))}; valid: {valid}")
    out = dict(variant.params)
    for key, raw in params.items():
        try:
            value = parse_size(raw) if isinstance(raw, str | int) else None
        except ValueError:
            value = None
        if value is None or isinstance(raw, bool) or not 1 <= value <= 1 << 30:
            raise ProgramBuildError(
                f"dockerd variant {variant.name!r}: {key}={raw!r} must be a number of bytes "
                f"between 1 and 1 GiB: {SIZE_FORMATS}")
        out[key] = value
    return out


# --- apt: deb-src entries and build dependencies ----------------------------------------------


def _os_codename(os_release: Path) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r'^VERSION_CODENAME="?([^"\n]+)"?$', text, re.M)
    return m.group(1) if m else None


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and last is not None:  # continuation line
                fields[last] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip().lower()
                fields[last] = value.strip()
        if fields:
            yield fields


def _one_line_entries(text: str) -> Iterator[dict[str, str]]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options = ""
        m = re.match(r"^(deb|deb-src)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, options, rest = m.groups()
        else:
            kind, _, rest = line.partition(" ")
        parts = rest.split()
        if kind not in {"deb", "deb-src"} or len(parts) < 2:
            continue
        entry = {"types": kind, "uris": parts[0], "suites": parts[1],
                 "components": " ".join(parts[2:])}
        for opt in options.split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                entry["signed-by"] = v
        yield entry


def deb_src_entries(*, sources_dir: str | Path = "/etc/apt/sources.list.d",
                    sources_list: str | Path = "/etc/apt/sources.list",
                    os_release: str | Path = "/etc/os-release") -> str:
    """The ``deb-src`` entries ``apt-get source docker.io`` needs, derived from this machine's
    own apt sources (deb822 ``*.sources`` and one-line ``*.list``).

    For every enabled ``deb`` entry of the distribution's own suites (the codename in
    ``os_release`` and ``<codename>-*``: e.g. bookworm, bookworm-updates, bookworm-security) that
    has no ``deb-src`` twin yet, one ``Types: deb-src`` stanza with the same URIs, Suites,
    Components and Signed-By. Third-party repositories are left alone. No host name comes from
    pullbench: every URI is the machine's.

    Returns
    -------
    str
        A deb822 file's text for :data:`DEB_SRC_FILE`; ``""`` when nothing is missing.
    """
    sources_dir, sources_list = Path(sources_dir), Path(sources_list)
    codename = _os_codename(Path(os_release))
    entries: list[dict[str, str]] = []
    files = sorted(sources_dir.glob("*.sources")) + sorted(sources_dir.glob("*.list"))
    if sources_list.is_file():
        files.insert(0, sources_list)
    for path in files:
        if path == DEB_SRC_FILE or path.name == DEB_SRC_FILE.name:
            continue  # pullbench's own file is what is being computed
        try:
            text = path.read_text()
        except OSError:
            continue
        found = _deb822_stanzas(text) if path.suffix == ".sources" else _one_line_entries(text)
        entries.extend(e for e in found if e.get("enabled", "yes").lower() != "no")

    def own_suite(suite: str) -> bool:
        return codename is None or suite == codename or suite.startswith(codename + "-")

    have_src = {(uri, suite) for e in entries if "deb-src" in e.get("types", "").split()
                for uri in e.get("uris", "").split() for suite in e.get("suites", "").split()}
    stanzas: list[str] = []
    for e in entries:
        if "deb" not in e.get("types", "").split():
            continue
        uris = e.get("uris", "").split()
        suites = [s for s in e.get("suites", "").split() if own_suite(s)
                  and any((u, s) not in have_src for u in uris)]
        if not uris or not suites:
            continue
        lines = ["Types: deb-src", f"URIs: {' '.join(uris)}", f"Suites: {' '.join(suites)}"]
        if e.get("components"):
            lines.append(f"Components: {e['components']}")
        if e.get("signed-by"):
            lines.append(f"Signed-By: {e['signed-by']}")
        stanzas.append("\n".join(lines))
    if not stanzas:
        return ""
    return ("# Written by pullbench (pullbench dockerd build --install): source entries for the\n"
            "# suites this machine already uses, so that `apt-get source docker.io` works.\n"
            + "\n\n".join(stanzas) + "\n")


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 3600,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, env=None if env is None else dict(env),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ProgramBuildError(f"{argv[0]} is not installed ({exc})") from exc


def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


@functools.lru_cache(maxsize=1)
def _source_version_from_apt() -> str | None:
    """The candidate version of the docker.io source package, or None without deb-src (asked
    once per process; :func:`_install` asks again after changing the apt sources)."""
    if shutil.which("apt-get") is None:
        return None
    proc = _run(["apt-get", "source", "--print-uris", "-qq", SOURCE_PACKAGE], env=_apt_env(),
                timeout=120)
    m = re.search(r"\s(" + re.escape(SOURCE_PACKAGE) + r"_(\S+)\.dsc)\s", proc.stdout)
    if proc.returncode != 0 or not m:
        return None
    version = m.group(2)
    return version.split(":", 1)[-1]


def _missing_build_deps(control: Path | None = None) -> list[str] | None:
    """Build dependencies of docker.io that are not installed; None when it cannot be told.

    With the source's ``debian/control``: ``dpkg-checkbuilddeps`` (dpkg-dev; reads the dpkg
    status, a fraction of a second). Without it: what ``apt-get build-dep -s docker.io`` would
    install (needs the deb-src entries).
    """
    if control is not None and control.is_file() and shutil.which("dpkg-checkbuilddeps"):
        proc = _run(["dpkg-checkbuilddeps", str(control)], env=_apt_env(), timeout=120)
        if proc.returncode == 0:
            return []
        m = re.search(r"Unmet build dependencies: (.*)", proc.stderr)
        if m:
            return [dep.strip() for dep in re.split(r"\s(?![^(]*\))", m.group(1)) if dep.strip()]
        return None
    proc = _run(["apt-get", "build-dep", "-s", SOURCE_PACKAGE], env=_apt_env(), timeout=300)
    if proc.returncode != 0:
        return None
    return re.findall(r"^Inst (\S+)", proc.stdout, re.M)


def _is_root() -> bool:
    return os.geteuid() == 0


def _cached_control(root: Path) -> Path | None:
    """debian/control of the newest docker.io source already in the cache."""
    base = root / "dockerd" / "source"
    found = sorted(base.glob(f"debian-*/{_CONTROL}")) if base.is_dir() else []
    return found[-1] if found else None


def dockerd_build_requirements(source: str | Path = "debian", *,
                               cache_dir: str | Path | None = None) -> list[str]:
    """The exact lines (run as root) that the machine still needs before
    :func:`build_dockerd` can build from ``source``; ``[]`` when nothing is missing.

    Parameters
    ----------
    source : "debian" or path
        ``"debian"`` needs the source package and its build dependencies; a directory needs
        the build dependencies (the Go libraries in /usr/share/gocode and the C headers).
    cache_dir : path, optional
        Where an already fetched source's ``debian/control`` is looked for (default
        ``$PULLBENCH_CACHE`` or ``~/.cache/pullbench``).
    """
    lines: list[str] = []
    if find_go_or_none() is None:
        lines.append(" ".join([*_APT, "install", "-y", "golang-go"]))
    build_dep = " ".join([*_APT, "build-dep", "-y", SOURCE_PACKAGE])
    if str(source) != "debian":
        dir_control = Path(source) / "debian" / "control"
        if dir_control.is_file() and _missing_build_deps(dir_control):
            lines.append(build_dep)
        return lines
    if shutil.which("dpkg-source") is None:
        lines.append(" ".join([*_APT, "install", "-y", "dpkg-dev"]))
    root = cache_root(cache_dir)
    control = _cached_control(root)
    if control is None and _source_version_from_apt() is None:
        text = deb_src_entries()
        if text:
            lines.append(f"cat > {DEB_SRC_FILE} <<'EOF'\n{text}EOF")
            lines.append(" ".join([*_APT, "update"]))
        lines.append(build_dep)
        return lines
    missing = _missing_build_deps(control)
    if missing is None or missing:
        lines.append(build_dep)
    return lines


def install_dockerd_build_requirements(*, cache_dir: str | Path | None = None,
                                       progress: Progress | None = None) -> None:
    """Run, as root, what :func:`dockerd_build_requirements` lists for the ``debian`` source:
    write :data:`DEB_SRC_FILE` (entries derived by :func:`deb_src_entries`) and
    ``apt-get update`` when apt knows no docker.io source, install ``golang-go`` and
    ``dpkg-dev`` when missing, ``apt-get build-dep -y docker.io`` when a build dependency is
    missing. Idempotent: does nothing when nothing is missing.

    Raises
    ------
    ProgramBuildError
        Not root, or an apt-get step failed (its output).
    """
    if not _is_root():
        raise ProgramBuildError("--install runs apt-get and needs root; run as root, or run the "
                                "lines `pullbench dockerd setup` prints with sudo")
    root = cache_root(cache_dir)
    _install(progress or (lambda _line: None), need_source=True, root=root)


def find_go_or_none() -> GoToolchain | None:
    try:
        return find_go()
    except ProgramBuildError:
        return None


def _apt_root(argv: list[str], what: str, progress: Progress) -> None:
    progress(f"running: {' '.join(argv)}")
    proc = _run(argv, env=_apt_env())
    if proc.returncode != 0:
        raise ProgramBuildError(f"{what} failed ({' '.join(argv)}):\n"
                                f"{(proc.stderr or proc.stdout)[-2000:]}")


def _install(progress: Progress, *, need_source: bool, root: Path) -> None:
    """With install=True as root: deb-src file, apt-get update, golang-go, dpkg-dev, build-dep."""
    if find_go_or_none() is None:
        _apt_root([*_APT, "install", "-y", "--no-install-recommends", "golang-go"],
                  "installing golang-go", progress)
    if need_source and shutil.which("dpkg-source") is None:
        _apt_root([*_APT, "install", "-y", "--no-install-recommends", "dpkg-dev"],
                  "installing dpkg-dev", progress)
    if _source_version_from_apt() is None:
        text = deb_src_entries()
        if not text:
            raise ProgramBuildError(
                "apt knows no docker.io source package and no deb-src entry can be derived "
                "from this machine's apt sources (no deb entry for its own suites)")
        progress(f"writing {DEB_SRC_FILE} (deb-src entries for this machine's own suites)")
        DEB_SRC_FILE.write_text(text)
        _apt_root([*_APT, "update"], "apt-get update", progress)
        _source_version_from_apt.cache_clear()
    missing = _missing_build_deps(_cached_control(root))
    if missing is None or missing:
        _apt_root([*_APT, "build-dep", "-y", SOURCE_PACKAGE],
                  "apt-get build-dep docker.io", progress)


# --- sources ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", name)


def _check_loop(engine: Path, where: str) -> None:
    loop_file = engine / LOOP_FILE
    try:
        text = loop_file.read_text()
    except OSError as exc:
        raise ProgramBuildError(f"{where} has no {LOOP_FILE} ({exc}); pullbench builds moby "
                                "20.10 (Debian 12's docker.io)") from exc
    found = text.count(COPY_LOOP)
    if found != 1:
        raise ProgramBuildError(
            f"{loop_file} does not contain the copy loop pullbench's variants edit exactly once "
            f"(found {found}×): `_, err = {COPY_LOOP}` in (*v2LayerDescriptor).Download. This is "
            "another moby version; point --source at a moby 20.10 tree (Debian 12's docker.io "
            "20.10.24 has it)")


def _gopath_ready(gopath: Path) -> bool:
    return (gopath / "src" / ENGINE_PKG / LOOP_FILE).is_file()


def _debian_source(root: Path, *, install: bool, progress: Progress) -> tuple[str, Path]:
    """(version, GOPATH root) of Debian's docker.io source, fetched and extracted on first use."""
    base = root / "dockerd" / "source"
    version = _source_version_from_apt()
    if version is None:
        cached = sorted(p for p in base.glob("debian-*") if _gopath_ready(p)) if base.is_dir() \
            else []
        if cached:  # offline: the newest tree fetched earlier
            newest = cached[-1]
            return newest.name[len("debian-"):], newest
        if install:
            _install(progress, need_source=True, root=root)
            version = _source_version_from_apt()
        if version is None:
            lines = dockerd_build_requirements("debian", cache_dir=root)
            raise ProgramBuildError(
                "apt cannot fetch the docker.io source package: this machine has no deb-src "
                "entry for its suites. Run as root (or pass --install as root):\n"
                + "\n".join(lines), commands=tuple(lines))
    gopath = base / f"debian-{_safe(version)}"
    if _gopath_ready(gopath):
        return version, gopath
    if shutil.which("dpkg-source") is None:
        line = " ".join([*_APT, "install", "-y", "dpkg-dev"])
        raise ProgramBuildError(f"dpkg-source is needed to unpack the docker.io source package: "
                                f"run as root `{line}`", commands=(line,))
    with _locked(base / ".lock"):
        if _gopath_ready(gopath):
            return version, gopath
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=base) as tmp:
            work = Path(tmp)
            progress(f"fetching the docker.io {version} source package (apt-get source)")
            proc = _run(["apt-get", "source", "--download-only", "-q",
                         f"{SOURCE_PACKAGE}={version}"], cwd=work, env=_apt_env())
            dscs = list(work.glob(f"{SOURCE_PACKAGE}_*.dsc"))
            if proc.returncode != 0 or len(dscs) != 1:
                raise ProgramBuildError(f"apt-get source {SOURCE_PACKAGE}={version} failed:\n"
                                        f"{(proc.stderr or proc.stdout)[-2000:]}")
            proc = _run(["dpkg-source", "--no-check", "-x", dscs[0].name, "tree"], cwd=work)
            if proc.returncode != 0:
                raise ProgramBuildError(f"dpkg-source -x {dscs[0].name} failed:\n"
                                        f"{(proc.stderr or proc.stdout)[-2000:]}")
            tree = work / "tree"
            _check_loop(tree / "engine", f"the docker.io {version} source package")
            staged = work / "gopath"
            _arrange(tree / "engine", {s: tree / s for s in _SIBLINGS}, staged, copy=False)
            shutil.copy2(tree / "debian" / "control", staged / _CONTROL)
            staged.rename(gopath)
    return version, gopath


def _arrange(engine: Path, siblings: Mapping[str, Path], gopath: Path, *, copy: bool) -> None:
    dst = gopath / "src" / "github.com" / "docker"
    dst.mkdir(parents=True)
    pairs = [(engine, dst / "docker")] + [(p, dst / n) for n, p in siblings.items() if p.is_dir()]
    for src, target in pairs:
        if copy:
            shutil.copytree(src, target, symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "bundles"))
        else:
            src.rename(target)


def _tree_fingerprint(dirs: list[Path]) -> str:
    h = hashlib.sha256()
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in {".git", "bundles"})
            for name in sorted(filenames):
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                h.update(f"{p.relative_to(top)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _directory_source(path: Path, root: Path, progress: Progress) -> tuple[str, Path]:
    """(version, GOPATH root) of a moby 20.10 tree: ``DIR/engine`` (+ ``libnetwork``,
    ``swarmkit``) as in Debian's source package, or ``DIR`` itself as a moby checkout."""
    if not path.is_dir():
        raise ProgramBuildError(f"--source {path}: no such directory; give 'debian' or a moby "
                                "20.10 source tree")
    if (path / "engine" / LOOP_FILE).is_file():
        engine, siblings = path / "engine", {s: path / s for s in _SIBLINGS}
    elif (path / LOOP_FILE).is_file():
        engine, siblings = path, {}
    else:
        raise ProgramBuildError(
            f"--source {path} is not a moby source tree: neither {path / LOOP_FILE} nor "
            f"{path / 'engine' / LOOP_FILE} exists")
    _check_loop(engine, f"--source {path}")
    version_file = engine / "VERSION"
    upstream = version_file.read_text().strip() if version_file.is_file() else "dev"
    fingerprint = _tree_fingerprint([engine, *siblings.values()])
    version = f"{upstream}+dir.{fingerprint[:12]}"
    base = root / "dockerd" / "source"
    gopath = base / f"dir-{fingerprint[:16]}"
    if _gopath_ready(gopath):
        return version, gopath
    with _locked(base / ".lock"):
        if not _gopath_ready(gopath):
            progress(f"copying {path} into the build cache")
            base.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".copy-", dir=base) as tmp:
                staged = Path(tmp) / "gopath"
                _arrange(engine, siblings, staged, copy=True)
                if (path / "debian" / "control").is_file():
                    shutil.copy2(path / "debian" / "control", staged / _CONTROL)
                staged.rename(gopath)
    return version, gopath


# --- the build --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerdBuild:
    """A dockerd binary built by :func:`build_dockerd`.

    Attributes
    ----------
    variant : str
    params : dict[str, int]
        The variant's parameters as built (bytes).
    binary : Path
        The dockerd executable (run it with the private-daemon launcher).
    source_version : str
        Debian's ``docker.io`` version (e.g. ``20.10.24+dfsg1-1+deb12u1``) or
        ``<VERSION>+dir.<fingerprint>`` for a directory.
    go_version : str
    key : str
        The cache key (sha256 hex).
    version_string : str
        What ``docker version`` reports as the server version.
    cached : bool
        True when the binary came from the cache.
    build_s : float
        Seconds this call spent compiling (0 when cached).
    log : Path
        The compiler's output.
    """

    variant: str
    params: dict[str, int]
    binary: Path
    source_version: str
    go_version: str
    key: str
    version_string: str
    cached: bool
    build_s: float
    log: Path


def _nm_symbols(go: GoToolchain, binary: Path, env: Mapping[str, str]) -> str:
    proc = _run([str(go.go), "tool", "nm", str(binary)], env=env, timeout=300)
    if proc.returncode != 0:
        raise ProgramBuildError(f"go tool nm {binary} failed: {proc.stderr[-1000:]}")
    return proc.stdout


def _verify(go: GoToolchain, binary: Path, variant: DockerdVariant,
            env: Mapping[str, str]) -> None:
    """The edit took effect: the variant's copy function is in the binary (stock: none is)."""
    symbols = _nm_symbols(go, binary, env)
    pkg = f"{ENGINE_PKG}/distribution."
    if f" {pkg}(*v2LayerDescriptor).Download" not in symbols:
        raise ProgramBuildError(f"the built {binary.name} has no {pkg}(*v2LayerDescriptor)."
                                "Download: not a dockerd with the legacy pull path")
    ours = re.findall(r" T " + re.escape(pkg) + r"(pullbenchCopy\w+)$", symbols, re.M)
    want = [variant.function] if variant.function else []
    if ours != want:
        raise ProgramBuildError(
            f"the built dockerd does not carry variant {variant.name!r}: its copy functions are "
            f"{ours or 'none'}, expected {want or 'none'} (the overlay GOPATH entry was not used)")


def build_dockerd(variant: str = "stock", params: Mapping[str, Any] | None = None, *,
                  source: str | Path = "debian", install: bool = False,
                  cache_dir: str | Path | None = None, go: str | Path | None = None,
                  progress: Progress | None = None) -> DockerdBuild:
    """Build dockerd, stock or with a variant of its layer copy loop, or return the cached one.

    Parameters
    ----------
    variant : str
        A name from :func:`dockerd_variants`: ``stock``, ``pr48602``, ``pools-bufio32k``,
        ``bufio``.
    params : mapping, optional
        The variant's parameters (``bufio``: ``read_size``, ``write_size``; bytes, or text such
        as ``"512k"``).
    source : "debian" or path
        ``"debian"``: the distribution's ``docker.io`` source package (``apt-get source``);
        a path: a moby 20.10 tree (``engine/``, ``libnetwork/``, ``swarmkit/`` as in Debian's
        package, or a moby checkout).
    install : bool
        Run the ``apt-get`` lines the build needs (root only). Without it a missing piece is an
        error that lists them.
    cache_dir : path, optional
        Default ``$PULLBENCH_CACHE`` or ``~/.cache/pullbench``.
    go : path, optional
        The ``go`` command (default: on PATH, else Debian's ``/usr/lib/go*/bin/go``).
    progress : callable, optional
        Called with one line per step (the CLI prints them).

    Returns
    -------
    DockerdBuild

    Raises
    ------
    ProgramBuildError
        Unknown variant or parameter; no Go toolchain; ``install`` without root; no source
        package or build dependencies (the message lists the exact lines to run as root); a
        source tree without the expected copy loop (another moby version); a failed compile (the
        compiler's last lines; no binary is left in the cache); a binary without the variant's
        code.
    """
    say: Progress = progress or (lambda _line: None)
    variants = dockerd_variants()
    spec = variants.get(variant)
    if spec is None:
        raise ProgramBuildError(f"unknown dockerd variant {variant!r}; known: "
                                f"{', '.join(variants)}")
    resolved = _resolve_params(spec, dict(params or {}))
    if install and not _is_root():
        raise ProgramBuildError("--install runs apt-get and needs root; run as root, or run the "
                                "lines `pullbench dockerd build` prints with sudo")
    root = cache_root(cache_dir)
    if install:
        _install(say, need_source=str(source) == "debian", root=root)
    toolchain = find_go(go)
    if str(source) == "debian":
        source_version, gopath = _debian_source(root, install=install, progress=say)
    else:
        source_version, gopath = _directory_source(Path(source), root, say)
    engine = gopath / "src" / ENGINE_PKG
    _check_loop(engine, f"the cached source {gopath}")
    record = {"recipe": _RECIPE, "source": source_version, "variant": variant,
              "params": resolved, "go": toolchain.version, "tags": BUILD_TAGS,
              "file": None if spec.function is None else hashlib.sha256(
                  spec.text.encode()).hexdigest()}
    key = stable_key(record)
    name = f"{variant}-{key[:16]}"
    out_dir = root / "dockerd" / "bin" / name
    binary = out_dir / "dockerd"
    log = out_dir / "build.log"
    upstream = source_version.split("-", 1)[0] if str(source) == "debian" else source_version
    version_string = f"{upstream}+pullbench.{variant}"

    def result(cached: bool, seconds: float) -> DockerdBuild:
        return DockerdBuild(variant, resolved, binary, source_version, toolchain.version, key,
                            version_string, cached, seconds, log)

    if binary.is_file():
        return result(True, 0.0)
    with _locked(root / "dockerd" / "bin" / f".{name}.lock"):
        if binary.is_file():
            return result(True, 0.0)
        control = gopath / _CONTROL
        # a directory without debian/control: the compiler names whatever is missing
        if control.is_file():
            missing = _missing_build_deps(control)
            if missing:
                line = " ".join([*_APT, "build-dep", "-y", SOURCE_PACKAGE])
                raise ProgramBuildError(
                    f"the build dependencies of docker.io are not installed ({len(missing)} "
                    f"packages, e.g. {', '.join(missing[:3])}): run as root `{line}` (or pass "
                    "--install as root)", commands=(line,))
        entries = [str(gopath), SYSTEM_GOPATH]
        if spec.function is not None:
            overlay = root / "dockerd" / "overlay" / name
            _write_overlay(overlay, engine, spec, resolved)
            entries.insert(0, str(overlay))
        out_dir.mkdir(parents=True, exist_ok=True)
        env = toolchain.env(GOPATH=os.pathsep.join(entries), CGO_ENABLED="1",
                            GOCACHE=str(root / "dockerd" / "gocache"))
        ldflags = " ".join([f"-X {ENGINE_PKG}/dockerversion.Version={version_string}",
                            f"-X {ENGINE_PKG}/dockerversion.GitCommit=pullbench-{key[:12]}"])
        tmp = out_dir / f".dockerd.tmp-{os.getpid()}"
        argv = [str(toolchain.go), "build", "-trimpath", "-buildmode=pie", "-tags", BUILD_TAGS,
                "-ldflags", ldflags, "-o", str(tmp), f"{ENGINE_PKG}/cmd/dockerd"]
        say(f"building dockerd {variant} ({source_version}, {toolchain.version})")
        start = time.perf_counter()
        try:
            proc = _run(argv, cwd=engine, env=env)
            log.write_text(f"$ GOPATH={env['GOPATH']} {' '.join(argv)}\n{proc.stdout}"
                           f"{proc.stderr}")
            if proc.returncode != 0 or not tmp.is_file():
                raise ProgramBuildError(
                    f"building dockerd {variant} failed (go build exited {proc.returncode}; "
                    f"full output in {log}):\n{(proc.stderr or proc.stdout)[-2500:]}")
            _verify(toolchain, tmp, spec, env)
            seconds = time.perf_counter() - start
            (out_dir / "build.json").write_text(json.dumps(
                {**record, "key": key, "version_string": version_string, "build_s": seconds,
                 "gopath": entries}, indent=1) + "\n")
            tmp.replace(binary)
        finally:
            tmp.unlink(missing_ok=True)
    say(f"built {binary} in {seconds:.1f} s")
    return result(False, seconds)


def _write_overlay(overlay: Path, engine: Path, spec: DockerdVariant,
                   params: Mapping[str, int]) -> None:
    """``overlay/src/github.com/docker/docker/distribution``: a copy of just that package with the
    copy loop replaced by a call of the variant's function, and the variant's Go file."""
    assert spec.function is not None
    pkg = overlay / "src" / ENGINE_PKG / "distribution"
    if overlay.exists():
        shutil.rmtree(overlay)
    pkg.mkdir(parents=True)
    for item in (engine / "distribution").iterdir():
        if item.is_file():
            shutil.copy2(item, pkg / item.name)
    loop_file = pkg / Path(LOOP_FILE).name
    text = loop_file.read_text()
    loop_file.write_text(text.replace(COPY_LOOP, f"{spec.function}(tmpFile, "
                                                 "io.TeeReader(reader, ld.verifier))"))
    (pkg / "pullbench_copy.go").write_text(spec.source_with(params))
