"""Import and export hyperfine ``--export-json`` files as pullbench's tidy rows.

hyperfine's JSON (sharkdp/hyperfine:src/export/json.rs) is ``{"results": [...]}`` with one
entry per command: ``command``, ``mean``, ``stddev`` (ddof=1, sharkdp/hyperfine#417),
``median``, ``user``, ``system``, ``min``, ``max``, ``times`` (seconds, one per run),
``exit_codes`` and, from hyperfine 1.17 on, ``memory_usage_byte`` (max RSS per run);
``parameters`` (a name→value mapping) appears for ``--parameter-scan``/``--parameter-list`` runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import ResultSchemaError, StatsInputError

__all__ = ["PARAMETER_PREFIX", "read_hyperfine_json", "write_hyperfine_json"]

logger = logging.getLogger(__name__)

PARAMETER_PREFIX = "param_"
"""Prefix of the tidy columns that hold hyperfine parameters (``param_<name>``)."""


def read_hyperfine_json(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a hyperfine ``--export-json`` file into tidy rows (one per run).

    Parameters
    ----------
    path : str or path-like
        The JSON file hyperfine wrote.

    Returns
    -------
    pandas.DataFrame
        Columns: ``arm`` (the command string, or its ``--command-name``), ``run`` (0-based run
        index within the command), ``duration_s``, ``exit_code`` (when exported),
        ``memory_usage_byte`` (when exported), and ``param_<name>`` for each parameter.
        Arms appear in file order.

    Raises
    ------
    ResultSchemaError
        The file is not hyperfine JSON (no ``results`` list, a result without ``command`` or
        ``times``, mismatched per-run list lengths, non-numeric times).
    FileNotFoundError
        ``path`` does not exist.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ResultSchemaError(
            f"{p}: not valid JSON ({exc}); expected hyperfine --export-json"
        ) from exc
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or not results:
        raise ResultSchemaError(
            f"{p}: no 'results' list; expected the file written by hyperfine --export-json"
        )
    frames = []
    for i, res in enumerate(results):
        if not isinstance(res, dict) or "command" not in res or "times" not in res:
            raise ResultSchemaError(
                f"{p}: results[{i}] lacks 'command' or 'times' (per-run times are needed; "
                "hyperfine writes them with --export-json)"
            )
        try:
            times = np.asarray(res["times"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ResultSchemaError(f"{p}: results[{i}].times is not a list of numbers") from exc
        n = times.size
        cols: dict[str, Any] = {
            "arm": [str(res["command"])] * n,
            "run": np.arange(n),
            "duration_s": times,
        }
        for key, col in (("exit_codes", "exit_code"), ("memory_usage_byte", "memory_usage_byte")):
            if res.get(key) is not None:
                vals = list(res[key])
                if len(vals) != n:
                    raise ResultSchemaError(
                        f"{p}: results[{i}].{key} has {len(vals)} entries for {n} times"
                    )
                cols[col] = pd.array(vals, dtype="Int64")
        for name, value in (res.get("parameters") or {}).items():
            cols[f"{PARAMETER_PREFIX}{name}"] = [value] * n
        frames.append(pd.DataFrame(cols))
    df = pd.concat(frames, ignore_index=True)
    logger.debug("read %d runs of %d commands from %s", len(df), len(frames), p)
    return df


def _clean(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def write_hyperfine_json(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    metric: str = "duration_s",
    arm: str = "arm",
) -> Path:
    """Write tidy rows in hyperfine's ``--export-json`` shape (one result per arm).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run with columns ``arm`` and ``metric`` (seconds); optional ``exit_code``,
        ``memory_usage_byte``, ``user_s``/``system_s`` (averaged into ``user``/``system``;
        ``null`` when absent), ``param_<name>`` (constant within an arm), and ``run`` (row order).
    path : str or path-like
        Destination; written atomically (temporary file, then rename).
    metric : str
        Column holding the per-run times in seconds.
    arm : str
        Column naming the arm; becomes ``command``.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    StatsInputError
        Missing columns, or NaN in ``metric``.
    """
    for col in (arm, metric):
        if col not in df.columns:
            raise StatsInputError(f"column {col!r} not in the table (columns: {list(df.columns)})")
    if df[metric].isna().any():
        raise StatsInputError(f"{metric!r} has NaN values; drop failed runs before exporting")
    results = []
    for name, part in df.groupby(arm, sort=False):
        if "run" in part.columns:
            part = part.sort_values("run", kind="stable")
        t = part[metric].to_numpy(dtype=float)
        res: dict[str, Any] = {
            "command": str(name),
            "mean": float(t.mean()),
            "stddev": _clean(float(t.std(ddof=1))) if t.size > 1 else None,
            "median": float(np.median(t)),
            "user": float(part["user_s"].mean()) if "user_s" in part.columns else None,
            "system": float(part["system_s"].mean()) if "system_s" in part.columns else None,
            "min": float(t.min()),
            "max": float(t.max()),
            "times": [float(v) for v in t],
            "exit_codes": ([int(v) for v in part["exit_code"]] if "exit_code" in part.columns
                           else [0] * t.size),
        }
        if "memory_usage_byte" in part.columns:
            res["memory_usage_byte"] = [int(v) for v in part["memory_usage_byte"]]
        params = {c[len(PARAMETER_PREFIX):]: str(part[c].iloc[0])
                  for c in part.columns if c.startswith(PARAMETER_PREFIX)}
        if params:
            res["parameters"] = params
        results.append(res)
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({"results": results}, indent=2))
    tmp.replace(out)
    return out
