"""Daemons pullbench starts for the pullers it does not own (containerd, dockerd).

A :class:`ManagedDaemon` lives in a private work folder made with :func:`tempfile.mkdtemp`
(``pullbench-<kind>-*``): its configuration, data root, state, sockets and log are all in there,
nothing under ``/etc``, ``/var`` or ``/run``. It is started once per experiment, not per run:

- through ``setpriv --pdeathsig TERM`` (util-linux), as the Distribution launcher does, so the
  kernel stops it when the process that started it dies, even by SIGKILL;
- and it is stopped by PID (SIGTERM, then SIGKILL), never by name. Mounts it left under its own
  work folder (dockerd's overlay2 driver bind-mounts its data root onto itself) are unmounted by
  path, then the folder is removed.

A work folder whose owner died without cleaning up (SIGKILL: the daemon stops, but nobody
removes its folder) is swept by the next :meth:`ManagedDaemon.start` of the same kind: only
folders carrying pullbench's ``owner`` file whose process is gone, only mounts under them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._errors import DaemonDied, DaemonError, ServerError
from .._process import stop_process

__all__ = [
    "DaemonDied",
    "DaemonError",
    "ManagedDaemon",
    "find_binary",
    "mounts_under",
    "process_tree",
    "unmount_under",
]

logger = logging.getLogger(__name__)

_OWNER_FILE = "owner"
_LOG_TAIL_CHARS = 2000


def find_binary(binary: str, *, package: str, what: str) -> str:
    """Resolve ``binary`` (a path or a command name) to an executable path.

    Parameters
    ----------
    binary : str
        ``/usr/sbin/dockerd``, ``skopeo``, ... A path is used as is (it must exist and be
        executable); a bare name is looked up on ``PATH``.
    package : str
        The Debian package that ships it, named in the error.
    what : str
        What the binary is for (``"dockerd"``, ``"the docker client"``), named in the error.

    Raises
    ------
    ServerError
        Not found or not executable; the message names the Debian package.
    """
    if os.sep in binary:
        if Path(binary).is_file() and os.access(binary, os.X_OK):
            return binary
        found = None
    else:
        found = shutil.which(binary)
    if found is None:
        raise ServerError(
            f"{what} binary {binary!r} not found or not executable: install the Debian package "
            f"{package} (`apt-get install {package}`) or pass the path of another build"
        )
    return found


def _dies_with_parent(cmd: list[str]) -> list[str]:
    # one implementation for every server and daemon pullbench starts
    from ..servers._distribution import _dies_with_parent as wrap

    return wrap(cmd)


def _pid_alive(pid: int) -> bool:
    from ..servers._proxy import proc_stat_fields

    try:
        return proc_stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants now (from ``/proc/<pid>/stat``), ``root`` first.

    Returns ``[]`` when ``root`` is gone.
    """
    from ..servers._proxy import proc_stat_fields

    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(proc_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    if not Path(f"/proc/{root}").exists():
        return []
    out = [root]
    i = 0
    while i < len(out):
        out.extend(sorted(children.get(out[i], ())))
        i += 1
    return out


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (proc(5))
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or below ``folder`` (this mount namespace), deepest first."""
    base = os.path.realpath(folder)
    found = []
    with contextlib.suppress(OSError), Path("/proc/self/mountinfo").open(encoding="utf-8") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if point == base or point.startswith(base + os.sep):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(folder: Path) -> list[Path]:
    """Unmount every mount point at or below ``folder`` (by path, deepest first).

    Only paths under ``folder`` are touched. A busy mount is detached lazily (``umount -l``).
    Returns the mount points that were found.
    """
    points = mounts_under(folder)
    umount = shutil.which("umount") or "umount"
    for point in points:
        r = subprocess.run([umount, str(point)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            subprocess.run([umount, "-l", str(point)], capture_output=True, check=False)
    left = mounts_under(folder)
    if left:
        logger.warning("mounts left under %s after unmounting: %s", folder, left)
    return points


def _remove_folder(folder: Path) -> None:
    unmount_under(folder)
    if mounts_under(folder):
        return  # never remove files through a mount that is still there
    shutil.rmtree(folder, ignore_errors=True)


def _sweep_stale(prefix: str) -> None:
    """Remove work folders ``<tmp>/<prefix>*`` whose owner process is gone."""
    tmp = Path(tempfile.gettempdir())
    for folder in tmp.glob(f"{prefix}*"):
        owner = folder / _OWNER_FILE
        try:
            pid_text, _, start = owner.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # not one of ours (or not finished being made)
        if _pid_alive(pid) and _start_time(pid) == start.strip():
            continue
        logger.info("removing %s left by process %d", folder, pid)
        _remove_folder(folder)


def _start_time(pid: int) -> str:
    from ..servers._proxy import proc_stat_fields

    try:
        return proc_stat_fields(pid)[19]
    except (OSError, IndexError):
        return ""


class ManagedDaemon:
    """A daemon in a private work folder, started once, stopped by PID, leaving nothing behind.

    Subclasses give :attr:`kind`, :meth:`command` (the argv, paths under :attr:`workdir`) and
    :meth:`ready` (the daemon answers on its socket); they may override :meth:`prepare_workdir`.

    Parameters
    ----------
    binary : str
        The daemon's executable (a path, or a name on ``PATH``).
    package : str
        Debian package named when the binary is missing.
    start_timeout_s : float
        How long :meth:`start` waits for :meth:`ready`.

    Raises
    ------
    ServerError
        The binary is missing (the message names the Debian package).
    """

    kind = "daemon"

    def __init__(self, binary: str, *, package: str, start_timeout_s: float = 60.0) -> None:
        self.binary = find_binary(binary, package=package, what=self.kind)
        self.package = package
        self.start_timeout_s = start_timeout_s
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._version: str | None = None
        self.restarts = 0

    # --- to be provided by subclasses --------------------------------------------------------
    def command(self) -> list[str]:
        """The daemon's argv (paths under :attr:`workdir`)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True when the daemon answers on its socket."""
        raise NotImplementedError

    def prepare_workdir(self, workdir: Path) -> None:
        """Write configuration files into a fresh ``workdir`` (before the first start)."""

    def failure_hint(self, log_tail: str) -> str:
        """A hint appended to the start-failure message (what to change), given the log."""
        return ""

    def version_command(self) -> list[str]:
        """argv printing the daemon's version."""
        return [self.binary, "--version"]

    # --- paths ----------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self._dir / "daemon.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise DaemonError(f"{self.kind} is not started; call start() first", kind=self.kind)
        return self.workdir

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the daemon's log ('' when there is none)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - chars))
                return f.read().decode("utf-8", "replace")
        except (OSError, DaemonError):
            return ""

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ManagedDaemon:
        """Start the daemon and wait until it answers; return ``self`` (no-op when running).

        Raises
        ------
        DaemonError
            It exited or did not answer within ``start_timeout_s``; the message carries the tail
            of its log. Nothing is left behind (process, mounts, work folder).
        """
        if self.running:
            return self
        if self.workdir is None:
            _sweep_stale(f"pullbench-{self.kind}-")
            self.workdir = Path(tempfile.mkdtemp(prefix=f"pullbench-{self.kind}-"))
            (self.workdir / _OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}")
            self.prepare_workdir(self.workdir)
        try:
            # the daemon's own temp files (containerd's stack dumps on SIGUSR1, temp mounts)
            # stay in its work folder, removed with it, instead of piling up in /tmp
            tmp = self.workdir / "tmp"
            tmp.mkdir(exist_ok=True)
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    _dies_with_parent(self.command()), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "TMPDIR": str(tmp)},
                )
            if not self._wait_ready():
                tail = self.log_tail()
                exited = self._proc.poll()
                how = (f"exited with code {exited}" if exited is not None
                       else f"did not answer within {self.start_timeout_s:.0f} s")
                self.close()
                cause = _failure_lines(tail)
                hint = self.failure_hint(tail)
                raise DaemonError(
                    f"{self.kind} ({self.binary}) {how}"
                    + (f": {cause}" if cause else "") + (f" {hint}" if hint else "")
                    + f"; its log ends with:\n{tail}",
                    kind=self.kind, log_tail=tail,
                )
        except BaseException:
            self.close()
            raise
        logger.info("%s %s running (pid %d) in %s", self.kind, self.version, self.pid,
                    self.workdir)
        return self

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if self.ready():
                    return True
            time.sleep(0.05)
        return False

    def check_alive(self) -> None:
        """Raise :class:`DaemonDied` (with the log tail) when the daemon is not running."""
        if self._proc is None:
            raise DaemonDied(f"{self.kind} is not running", kind=self.kind)
        if not self.running:
            try:
                code: int | None = self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            tail = self.log_tail()
            raise DaemonDied(
                f"{self.kind} (pid {self._proc.pid}) exited with code {code}; its log ends "
                f"with:\n{tail}", kind=self.kind, log_tail=tail,
            )

    def restart(self) -> None:
        """Start the daemon again after it died, on the same work folder (its state kept)."""
        self._stop_process()
        self.restarts += 1
        self.start()

    def _stop_process(self, timeout_s: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        tree = process_tree(proc.pid) if proc.poll() is None else []
        stop_process(proc, timeout_s=timeout_s, what=self.kind)
        # children it started (dockerd's containerd) normally exit with it; make sure, by PID
        deadline = time.monotonic() + 10
        for pid in tree[1:]:
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the daemon (SIGTERM, SIGKILL after 20 s), unmount what it left, remove its folder.

        Safe to call more than once.
        """
        self._stop_process()
        folder, self.workdir = self.workdir, None
        if folder is not None:
            _remove_folder(folder)

    def __enter__(self) -> ManagedDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The daemon process exists and is not a zombie.

        A multi-threaded daemon killed by a signal shows as a zombie (``Z``) before ``waitpid``
        can reap it (its other threads are still exiting): that is not running either.
        """
        proc = self._proc
        return proc is not None and proc.poll() is None and _pid_alive(proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def tree(self) -> list[int]:
        """PIDs of the daemon and its descendants now (``[]`` when not running)."""
        return process_tree(self._proc.pid) if self.running and self._proc else []

    @property
    def version(self) -> str:
        """The daemon's version line (``BINARY --version``)."""
        if self._version is None:
            out = subprocess.run(self.version_command(), capture_output=True, text=True,
                                 check=False, timeout=30)
            self._version = (out.stdout or out.stderr).strip().splitlines()[0] if (
                out.stdout or out.stderr).strip() else "unknown"
        return self._version

    def describe(self) -> dict[str, object]:
        """JSON-able description (kind, binary, version, pid, work folder, restarts)."""
        return {"kind": self.kind, "binary": self.binary, "version": self.version,
                "pid": self.pid, "workdir": str(self.workdir) if self.workdir else None,
                "restarts": self.restarts}


def _failure_lines(log: str, keep: int = 2) -> str:
    """The last lines of a daemon log that say why it failed (fatal/error level, "failed")."""
    picked = [line.strip() for line in log.splitlines()
              if re.search(r"level=(fatal|error)|^failed|containerd: ", line)
              and "grpc" not in line]
    return " | ".join(picked[-keep:])


def tail_text(text: str | bytes, chars: int = 1500) -> str:
    """The last ``chars`` characters of a command's output, stripped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.strip()[-chars:]


def run_checked(argv: Sequence[str], *, what: str, timeout_s: float = 120.0,
                env: dict[str, str] | None = None, ok_codes: Iterable[int] = (0,)) -> str:
    """Run a management command (untimed) and return its stdout.

    Raises
    ------
    DaemonError
        Non-zero exit (not in ``ok_codes``) or timeout; the message carries the stderr tail.
    """
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                           timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise DaemonError(f"{what} timed out after {timeout_s:.0f} s: {' '.join(argv)}") from exc
    if r.returncode not in tuple(ok_codes):
        raise DaemonError(f"{what} failed (exit {r.returncode}): {tail_text(r.stderr or r.stdout)}")
    return r.stdout
