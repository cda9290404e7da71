"""Where pullbench's own files are: the package folder, the source tree, the ``data/`` folders."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_DIR", "SOURCE_ROOT", "data_dirs"]

#: The ``pullbench`` package folder.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The folder holding the package: the repository root in an editable install (with ``.git``).
SOURCE_ROOT = PACKAGE_DIR.parent


def data_dirs() -> tuple[Path, Path]:
    """The two places data files may live, in lookup order.

    Returns
    -------
    (Path, Path)
        ``pullbench/data`` (package data of an installed wheel; in the source tree a relative
        symlink to the top-level ``data/``, which setuptools follows when it builds a wheel) and
        ``<repository root>/data`` (a checkout whose symlink was not kept).
    """
    return PACKAGE_DIR / "data", SOURCE_ROOT / "data"
