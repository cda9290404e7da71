"""Where built and imported fixture images are cached."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$PULLBENCH_CACHE/images`` when set, else ``~/.cache/pullbench/images``."""
    env = os.environ.get("PULLBENCH_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "pullbench"
    return base / "images"
