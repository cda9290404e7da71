"""Opt-in syscall tracing of pullers pullbench does not own, with ``strace``.

``strace -f -yy -s 0 -e signal=none -e trace=<reads and writes>`` is attached to a daemon tree
for one run (``-p PID`` per process: every thread, and with ``-f`` every thread or child started
during the run), or wraps a client command (then with ``--seccomp-bpf``: only the traced calls
stop the client; an attached daemon stops at every system call, which costs more). ``-yy``
prints each file descriptor with its path
(``write(7</d/tmp/GetImageBlob123>, ""..., 32768) = 32768``) or its socket's addresses
(``read(5<TCP:[127.0.0.1:40000->127.0.0.1:5000]>, ...)``), so the result keeps only:

- writes to the layer temp files (the arm's ``file_pattern``: dockerd's ``GetImageBlob*``,
  containerd's ingest ``data``, skopeo's ``dir-put-blob*``) -> ``write_sizes``;
- reads from sockets connected to the registry's port -> ``read_sizes``;
- the number of such calls per syscall name -> ``syscall_counts``.

The sizes are the return values (bytes actually moved), folded into the same power-of-two
``write_size_hist`` / ``read_size_hist`` as the strategies' own meters. Tracing slows the traced
process (every traced call stops it twice): runs made with it are marked ``traced`` and are a
separate arm, never pooled with untraced runs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ServerError
from .._process import stop_process

__all__ = ["StraceSession", "TraceResult", "find_strace", "parse_strace"]

#: Read- and write-family calls a Go or C puller may use on a socket or a file.
TRACED_SYSCALLS = ("read", "write", "readv", "writev", "pread64", "pwrite64", "recvfrom",
                   "recvmsg", "sendfile", "splice", "copy_file_range")
_READS = frozenset({"read", "readv", "pread64", "recvfrom", "recvmsg"})
_WRITES = frozenset({"write", "writev", "pwrite64", "sendfile", "splice", "copy_file_range"})

_CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<name>[a-z0-9_]+)\((?P<fd>\d+)"
                   r"<(?P<what>(?:TCP|UDP)[^\]]*\]|[^>]*)>(?P<rest>.*)$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. (?P<name>[a-z0-9_]+) resumed>(?P<rest>.*)$")
_RETURN = re.compile(r"\)\s+=\s+(?P<ret>-?\d+)")
_PEER_PORT = re.compile(r"->[^\]]*:(\d+)\]$")


def find_strace(binary: str = "strace") -> str:
    """Path of ``strace``; ServerError naming the Debian package ``strace`` when missing."""
    from ._daemons import find_binary

    return find_binary(binary, package="strace", what="strace (for --trace)")


@dataclass(slots=True)
class TraceResult:
    """Sizes of the traced reads and writes of one run.

    Attributes
    ----------
    write_sizes, read_sizes : Counter
        Exact ``{bytes: count}`` of writes to the layer files / reads from the registry socket.
    syscall_counts : Counter
        ``{syscall: count}`` of those calls.
    lines : int
        Lines of strace output parsed.
    """

    write_sizes: Counter[int] = field(default_factory=Counter)
    read_sizes: Counter[int] = field(default_factory=Counter)
    syscall_counts: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    def update(self, other: TraceResult) -> None:
        self.write_sizes.update(other.write_sizes)
        self.read_sizes.update(other.read_sizes)
        self.syscall_counts.update(other.syscall_counts)
        self.lines += other.lines

    def to_row(self) -> dict[str, object]:
        """The strategies' columns: histograms, counts, median write; plus syscall counts."""
        from ..puller._probes import median_of_counts, power_of_two_histogram

        return {
            "write_size_hist": power_of_two_histogram(self.write_sizes),
            "read_size_hist": power_of_two_histogram(self.read_sizes),
            "write_count": sum(self.write_sizes.values()),
            "read_count": sum(self.read_sizes.values()),
            "median_write_bytes": median_of_counts(self.write_sizes),
            "trace_syscall_counts": dict(sorted(self.syscall_counts.items())),
        }


def parse_strace(lines: Sequence[str] | Path, *, file_pattern: re.Pattern[str],
                 registry_port: int | None) -> TraceResult:
    """Parse ``strace -f -yy -s 0`` output (see the module docstring).

    Parameters
    ----------
    lines : sequence of str or Path
        The output lines, or the ``-o`` file.
    file_pattern : re.Pattern
        Searched in a file descriptor's path: the layer temp files.
    registry_port : int or None
        Peer port of the registry sockets whose reads are kept (None: reads are not kept).
    """
    if isinstance(lines, Path):
        with lines.open(encoding="utf-8", errors="replace") as f:
            return parse_strace(f.readlines(), file_pattern=file_pattern,
                                registry_port=registry_port)
    out = TraceResult()
    pending: dict[tuple[str, str], str] = {}  # (pid, syscall) -> kind of an unfinished call
    for line in lines:
        out.lines += 1
        m = _CALL.match(line)
        if m is not None:
            kind = _classify(m["name"], m["what"], file_pattern, registry_port)
            if kind is None:
                continue
            rest = m["rest"]
            if rest.rstrip().endswith("<unfinished ...>"):
                pending[(m["pid"], m["name"])] = kind
                continue
            _record(out, kind, m["name"], rest)
            continue
        r = _RESUMED.match(line)
        if r is not None:
            kind = pending.pop((r["pid"], r["name"]), "")
            if kind:
                _record(out, kind, r["name"], r["rest"])
    return out


def _classify(name: str, what: str, file_pattern: re.Pattern[str],
              registry_port: int | None) -> str | None:
    if name in _WRITES and file_pattern.search(what):
        return "write"
    if name in _READS and registry_port is not None and what.startswith("TCP"):
        port = _PEER_PORT.search(what)
        if port is not None and int(port.group(1)) == registry_port:
            return "read"
    return None


def _record(out: TraceResult, kind: str, name: str, rest: str) -> None:
    ret = _RETURN.search(rest)
    if ret is None:
        return
    size = int(ret["ret"])
    if size <= 0:
        return
    out.syscall_counts[name] += 1
    (out.write_sizes if kind == "write" else out.read_sizes)[size] += 1


def _base_argv(strace: str, output: Path) -> list[str]:
    return [strace, "-f", "-yy", "-s", "0", "-e", "signal=none",
            "-e", "trace=" + ",".join(TRACED_SYSCALLS), "-o", str(output)]


class StraceSession:
    """One run's tracing: attach to daemon processes and/or wrap a client command.

    Parameters
    ----------
    directory : Path
        Where the strace output files go (removed by the caller).
    file_pattern : re.Pattern
        The layer temp files (see :func:`parse_strace`).
    registry_port : int or None
        The registry's (or the proxy's) port, for the socket reads.
    strace : str
        strace binary.
    """

    def __init__(self, directory: Path, *, file_pattern: re.Pattern[str],
                 registry_port: int | None, strace: str = "strace") -> None:
        self.directory = directory
        self.file_pattern = file_pattern
        self.registry_port = registry_port
        self.strace = find_strace(strace)
        self._attached: subprocess.Popen[bytes] | None = None
        self._outputs: list[Path] = []

    def attach(self, pids: Sequence[int], timeout_s: float = 20.0) -> None:
        """Attach to ``pids`` (all their threads) and return once strace says it has.

        Raises
        ------
        ServerError
            strace could not attach (its message is included).
        """
        if not pids:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        output = self.directory / f"attach-{len(self._outputs)}.strace"
        log = self.directory / f"attach-{len(self._outputs)}.log"
        argv = _base_argv(self.strace, output)
        for pid in pids:
            argv += ["-p", str(pid)]
        with log.open("wb") as err:
            self._attached = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=err,
                                              start_new_session=True)
        self._outputs.append(output)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if all(re.search(rf"Process {p} attached", text) for p in pids):
                return
            if self._attached.poll() is not None:
                break
            time.sleep(0.01)
        text = log.read_text(errors="replace")
        self._stop_attached()
        raise ServerError(f"strace could not attach to {list(pids)}: {text.strip()[-800:]}")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run under strace (its threads and children followed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        output = self.directory / f"client-{len(self._outputs)}.strace"
        self._outputs.append(output)
        # a launched process can be filtered in the kernel (only the traced calls stop it);
        # attaching (-p) cannot, so a traced daemon stops at every system call
        return [*_base_argv(self.strace, output), "--seccomp-bpf", "--", *argv]

    def _stop_attached(self) -> None:
        proc, self._attached = self._attached, None
        if proc is None:
            return
        # SIGINT: strace detaches from every traced process, then exits
        stop_process(proc, sig=signal.SIGINT, timeout_s=30, what="strace")

    def stop(self) -> TraceResult:
        """Detach and return the parsed result of every output of this session."""
        self._stop_attached()
        result = TraceResult()
        for output in self._outputs:
            if output.exists():
                result.update(parse_strace(output, file_pattern=self.file_pattern,
                                           registry_port=self.registry_port))
        return result

    def close(self) -> None:
        """Detach (if still attached) and remove the output files."""
        self._stop_attached()
        for output in self._outputs:
            with contextlib.suppress(FileNotFoundError):
                output.unlink()
        shutil.rmtree(self.directory, ignore_errors=True)

