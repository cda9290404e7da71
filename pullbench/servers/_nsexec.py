"""Run code inside a network namespace (``setns(2)`` from a helper thread).

Its own module so that the registry launchers (:mod:`._distribution`, :mod:`._embedded`) and the
kernel-mode set-up (:mod:`._netns`) can all use it without importing each other.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._errors import ServerError

__all__ = ["run_in_netns"]

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def run_in_netns(namespace: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a thread that has entered network namespace ``namespace`` (``setns(2)``).

    Sockets ``fn`` creates live in that namespace (network namespaces are per thread on Linux);
    the calling thread is not moved. Needs root.

    Parameters
    ----------
    namespace : str
        A name from ``ip netns list`` (a file in ``/var/run/netns``).
    fn : callable
        Called without arguments; its result is returned, its exception re-raised.

    Raises
    ------
    ServerError
        The namespace does not exist or ``setns`` failed.
    """
    path = Path("/var/run/netns") / namespace
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            try:
                fh = path.open("rb")
            except OSError as exc:
                raise ServerError(f"network namespace {namespace!r}: {exc}") from None
            with fh:
                if libc.setns(fh.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise ServerError(f"setns({path}) failed: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="pullbench-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
