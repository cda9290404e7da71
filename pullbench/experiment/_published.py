"""Published figures the statistics are checked against (moby/moby#48602, moby/moby#48605).

The data live in ``data/published/`` at the repository root, the one source of truth.
``pullbench/data`` is a relative symlink to ``data/``, so setuptools copies the files into every
sdist and wheel as package data (``[tool.setuptools.package-data]`` in pyproject.toml) and an
installed pullbench finds them as ``pullbench/data/published/`` from any working directory.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .._errors import StatsInputError
from .._paths import data_dirs

__all__ = ["data_path", "published_figures"]

PUBLISHED_FILE = "moby-pull-prs.csv"


def data_path(*parts: str) -> Path:
    """Absolute path of a file or folder under pullbench's ``data/`` directory.

    Parameters
    ----------
    *parts : str
        Path components below ``data/``, e.g. ``data_path("published", "moby-pull-prs.csv")``.

    Returns
    -------
    pathlib.Path
        The first existing candidate: ``pullbench/data/...`` (installed package data) or
        ``<repository root>/data/...`` (editable install).

    Raises
    ------
    FileNotFoundError
        Neither location exists; the message lists both.
    """
    candidates = [base / Path(*parts) for base in data_dirs()]
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"pullbench data {'/'.join(parts)!r} not found in {[str(c) for c in candidates]}; "
        "reinstall pullbench (its wheel carries data/ as package data)"
    )


def published_figures(pr: int | None = None) -> pd.DataFrame:
    """The hyperfine summaries published in moby/moby#48602 and moby/moby#48605.

    Parameters
    ----------
    pr : int, optional
        Keep only this pull request's rows (48602 or 48605).

    Returns
    -------
    pandas.DataFrame
        Columns: source (``moby/moby#N``), pr, arm (before/after), role (baseline/candidate),
        mean_s, sd_s (hyperfine's σ, ddof=1), n, measured (what the command was), claim, note.

    Raises
    ------
    StatsInputError
        ``pr`` is not in the table.
    """
    df = pd.read_csv(data_path("published", PUBLISHED_FILE))
    if pr is not None:
        if pr not in set(df["pr"]):
            raise StatsInputError(f"no published figures for PR {pr}; have {sorted(set(df['pr']))}")
        df = df[df["pr"] == pr].reset_index(drop=True)
    return df
