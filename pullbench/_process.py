"""Stopping a child process pullbench started: a signal, a bounded wait, then SIGKILL."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
from typing import Any

__all__ = ["stop_process"]

logger = logging.getLogger(__name__)


def stop_process(proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM,
                 timeout_s: float = 5.0, what: str = "") -> int | None:
    """Send ``sig`` to ``proc`` (by its pid), wait up to ``timeout_s``, then SIGKILL and reap.

    Parameters
    ----------
    proc : subprocess.Popen
        A child of this process; already exited is fine (it is only reaped).
    sig : int
        The polite signal (SIGTERM; SIGINT makes strace detach).
    timeout_s : float
        How long the process may take to exit after ``sig``.
    what : str
        Its name in the warning logged when it had to be killed.

    Returns
    -------
    int or None
        The exit status (None if even SIGKILL left it running after 10 s).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored %s for %.0f s; killing it", what or proc.args,
                           proc.pid, signal.Signals(sig).name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None
