"""htpasswd files for Distribution's ``auth.htpasswd`` (bcrypt only, as 2.8.2 requires)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt

from .._errors import ServerError

__all__ = ["htpasswd_config", "write_htpasswd"]


def write_htpasswd(path: str | Path, users: Mapping[str, str], *, rounds: int = 5) -> Path:
    """Write an htpasswd file with bcrypt hashes (``user:$2b$...`` per line).

    Distribution 2.8.2 accepts only bcrypt entries and ignores other hash types
    (distribution/distribution:docs/configuration.md@v2.8.2 "htpasswd").

    Parameters
    ----------
    path : str or Path
        File to write (mode 0600).
    users : mapping of str to str
        User name → password. Names must not contain ``:``.
    rounds : int
        bcrypt cost (low by default: test fixtures, not production).

    Returns
    -------
    Path

    Raises
    ------
    ServerError
        A user name contains ``:`` or the file cannot be written.
    """
    lines = []
    for user, password in users.items():
        if not user or ":" in user:
            raise ServerError(f"htpasswd user name {user!r} must be non-empty and contain no ':'")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
        lines.append(f"{user}:{hashed}\n")
    target = Path(path)
    try:
        target.touch(mode=0o600)
        target.write_text("".join(lines))
    except OSError as exc:
        raise ServerError(f"cannot write htpasswd file {target}: {exc}") from exc
    return target


def htpasswd_config(path: str | Path, realm: str = "pullbench-basic") -> dict[str, Any]:
    """``extra_config`` for Distribution: Basic auth from the htpasswd file at ``path``."""
    return {"auth": {"htpasswd": {"realm": realm, "path": str(Path(path).resolve())}}}
