"""The ``command`` arm: any shell command, in hyperfine's vocabulary.

hyperfine (sharkdp/hyperfine: ``--setup``, ``--prepare``, ``--cleanup``) runs ``setup`` once
before a command's runs, ``prepare`` before every run and ``cleanup`` after them; pullbench does
the same per arm, except that ``cleanup`` runs after every run (each run gets a fresh ``{dest}``
that is removed afterwards). Only ``command`` is timed (wall time from fork to ``wait4``).

Placeholders, replaced shell-quoted in every one of the four commands:

============  ===========================================================
``{ref}``     ``127.0.0.1:PORT/pullbench/synthetic-256m:latest``
``{registry}`` ``127.0.0.1:PORT`` (the endpoint: proxy or TLS terminator included)
``{repo}``    ``pullbench/synthetic-256m``
``{tag}``     ``latest``
``{digest}``  the manifest digest ``sha256:...`` (empty when unknown)
``{dest}``    a fresh, empty folder for this run
``{url}``     ``http://127.0.0.1:PORT`` or ``https://...``
``{ca}``      the CA bundle to trust (empty over plain HTTP)
============  ===========================================================

``{{`` and ``}}`` are literal braces. A non-zero exit of ``command`` (or of ``prepare``) gives
``status=error`` with the tail of its stderr; the experiment continues.
"""

from __future__ import annotations

import re
import shlex
import shutil
import string
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from ._base import ArmError, ExternalArm, PullTarget
from ._daemons import DaemonError, find_binary, run_checked

__all__ = ["PLACEHOLDERS", "CommandArm", "expand_placeholders"]

PLACEHOLDERS = ("ref", "registry", "repo", "tag", "digest", "dest", "url", "ca")


def _check_template(arm: str, key: str, template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ArmError(f"arm {arm!r}: {key} {template!r}: {exc} (write a literal brace as "
                       "{{ or }})") from exc
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise ArmError(f"arm {arm!r}: {key} uses unknown placeholder(s) "
                       f"{['{' + u + '}' for u in unknown]}; known: "
                       f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


def expand_placeholders(template: str, target: PullTarget, dest: Path) -> str:
    """``template`` with every placeholder replaced by its shell-quoted value."""
    values = {
        "ref": target.reference, "registry": target.registry, "repo": target.repository,
        "tag": target.tag or "", "digest": target.digest or "", "dest": str(dest),
        "url": target.url, "ca": target.ca_bundle or "",
    }
    return template.format_map({k: shlex.quote(v) if v else "''" for k, v in values.items()})


def _program_of(command: str, shell: str) -> tuple[str, str]:
    """``(path, version line)`` of the program a command line starts with (best effort).

    The first word that is not a variable assignment, looked up on ``PATH``; its version is
    the first line ``PROGRAM --version`` prints within 5 s. The shell and ``unknown`` when the
    program cannot be told (a compound command, a shell builtin).
    """
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    words = [w for w in words if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
    path = shutil.which(words[0]) if words and "{" not in words[0] else None
    if path is None:
        return shell, "unknown"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5,
                             check=False, stdin=subprocess.DEVNULL)
        line = (out.stdout or out.stderr).strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        line = []
    return path, line[0][:200] if line else "unknown"


class CommandArm(ExternalArm):
    """Any shell command as an arm (see the module docstring).

    Parameters (``params``)
    -----------------------
    command : str
        The timed command (required).
    setup, prepare, cleanup : str
        Untimed commands: once per experiment per image / before every run / after every run.
    shell : str
        The shell that runs them with ``-c`` (default ``/bin/sh``).
    trace_paths : str
        With ``trace=true``: regular expression of the files whose writes are counted
        (default: anything under ``{dest}``).
    """

    kind = "command"
    parameters: ClassVar[dict[str, Any]] = {
        "command": "", "setup": "", "prepare": "", "cleanup": "", "shell": "/bin/sh",
        "trace_paths": "",
    }

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, params)
        if not self.params["command"].strip():
            raise ArmError(f"arm {name!r} (command) needs a command, e.g. "
                           f"--command {name}='skopeo copy docker://{{ref}} dir:{{dest}}'")
        for key in ("command", "setup", "prepare", "cleanup"):
            _check_template(name, key, self.params[key])
        if self.params["trace_paths"]:
            try:
                re.compile(self.params["trace_paths"])
            except re.error as exc:
                raise ArmError(f"arm {name!r}: trace_paths is not a regular expression: "
                               f"{exc}") from exc
        self.shell = self.params["shell"]

    def start(self, targets: list[PullTarget]) -> None:
        super().start(targets)
        self.shell = find_binary(self.params["shell"], package="dash", what="shell")
        self.client_binary, self.client_version = _program_of(self.params["command"], self.shell)
        for target in targets:
            if self.params["setup"]:
                self._run("setup", target, self.work / "setup")

    def _run(self, key: str, target: PullTarget, dest: Path) -> None:
        line = expand_placeholders(self.params[key], target, dest)
        try:
            run_checked([self.shell, "-c", line], what=f"arm {self.name!r} {key} `{line}`",
                        timeout_s=900)
        except DaemonError as exc:
            raise ArmError(str(exc)) from exc

    def prepare(self, target: PullTarget, dest: Path) -> float:
        if self.params["prepare"]:
            self._run("prepare", target, dest)
        return 0.0

    def pull_argv(self, target: PullTarget, dest: Path) -> list[str]:
        return [self.shell, "-c", expand_placeholders(self.params["command"], target, dest)]

    def trace_pattern(self, dest: Path) -> re.Pattern[str]:
        return re.compile(self.params["trace_paths"] or "^" + re.escape(str(dest)) + "/")

    def cleanup(self, target: PullTarget, dest: Path) -> None:
        if self.params["cleanup"]:
            self._run("cleanup", target, dest)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["commands"] = {k: self.params[k] for k in ("setup", "prepare", "command", "cleanup")
                           if self.params[k]}
        return out
