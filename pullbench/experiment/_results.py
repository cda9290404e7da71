"""Results with provenance: crash-safe JSON Lines rows, Parquet/CSV consolidation, loading.

A results folder holds::

    rows.jsonl        one JSON object per run, appended (and fsync'd) as soon as the run ends
    rows.parquet      consolidated copy (written at the end, and by ``pullbench analyze``)
    rows.csv          the same as CSV (nested values as JSON text)
    spec.json         the ExperimentSpec, so ``--resume`` continues the same plan
    environment.json  host, software, registry, images, spec (pullbench.experiment._env)
    analysis.json     verdicts (pullbench analyze)
    report.html       the report (pullbench report)

Schema changelog (``schema_version`` column and environment key):

- 1: first version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ResultSchemaError
from .._paths import data_dirs

if TYPE_CHECKING:  # pandas is imported by the functions that build frames, not with pullbench
    import pandas as pd

__all__ = [
    "RESULTS_SCHEMA_VERSION",
    "SHIPPED_RESULTS",
    "ResultsStore",
    "consolidate_results",
    "load_environment",
    "load_results",
    "resolve_results_path",
]

#: Name of the real run shipped in ``data/results/`` (debian-minbase on Distribution).
SHIPPED_RESULTS = "debian-minbase-distribution"

logger = logging.getLogger(__name__)

#: Version of the row schema; bump with a changelog line in this module's docstring.
RESULTS_SCHEMA_VERSION = 1

ROWS_JSONL = "rows.jsonl"
ROWS_PARQUET = "rows.parquet"
ROWS_CSV = "rows.csv"
SPEC_JSON = "spec.json"
ENVIRONMENT_JSON = "environment.json"
ANALYSIS_JSON = "analysis.json"
REPORT_HTML = "report.html"

#: Columns every row has, whatever the puller reports.
REQUIRED_COLUMNS = (
    "schema_version",
    "experiment",
    "run_index",
    "run_id",
    "block",
    "order_in_block",
    "warmup",
    "arm",
    "strategy",
    "params",
    "image",
    "cache_state",
    "network_profile",
    "tls",
    "status",
    "error",
)


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples, dataclass-ish values and non-finite floats for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class ResultsStore:
    """A results folder: append rows crash-safely, read them back, consolidate.

    Parameters
    ----------
    directory : Path
        The results folder (created by :meth:`create`).
    """

    directory: Path

    @property
    def rows_path(self) -> Path:
        """Path of ``rows.jsonl``."""
        return self.directory / ROWS_JSONL

    def create(self) -> ResultsStore:
        """Create the folder (parents too); return self.

        Raises
        ------
        ResultSchemaError
            The folder cannot be created or written.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ResultSchemaError(
                f"results folder {self.directory} is not writable ({exc.strerror}); "
                "choose another with --out"
            ) from exc
        return self

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row to ``rows.jsonl`` and fsync it before returning (crash-safe).

        A row is one line; if the process dies mid-write, the partial last line is dropped by
        :meth:`read_rows` (``repair=True``) and the run is redone on ``--resume``.
        """
        line = json.dumps(_jsonable(dict(row)), sort_keys=True, allow_nan=False)
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.rows_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_rows(self, *, repair: bool = False) -> list[dict[str, Any]]:
        """Read all complete rows of ``rows.jsonl``.

        Parameters
        ----------
        repair : bool
            Truncate a partial (unterminated or unparsable) last line left by a crash.

        Raises
        ------
        ResultSchemaError
            A line other than the last is not valid JSON, or rows carry another schema version.
        """
        if not self.rows_path.exists():
            return []
        raw = self.rows_path.read_bytes()
        rows: list[dict[str, Any]] = []
        good_end = 0
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            is_last = i == len(lines) - 1
            if not line.strip():
                if not is_last:
                    good_end += len(line) + 1
                continue
            try:
                if is_last:  # no trailing newline: the write did not finish
                    raise ValueError("unterminated line")
                row = json.loads(line)
            except ValueError as exc:
                if is_last:
                    logger.warning("%s: dropping a partial last row (%s)", self.rows_path, exc)
                    break
                raise ResultSchemaError(
                    f"{self.rows_path}: line {i + 1} is not valid JSON ({exc})"
                ) from exc
            _check_schema(row, f"{self.rows_path}:{i + 1}")
            rows.append(row)
            good_end += len(line) + 1
        if repair and good_end < len(raw):
            with self.rows_path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        return rows

    def write_json(self, name: str, payload: Mapping[str, Any]) -> Path:
        """Write ``payload`` as pretty JSON to ``name`` in the folder, atomically."""
        path = self.directory / name
        _atomic_write_text(path, json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
        return path

    def read_json(self, name: str) -> dict[str, Any] | None:
        """Read ``name`` from the folder, or None if it does not exist."""
        path = self.directory / name
        if not path.exists():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ResultSchemaError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ResultSchemaError(f"{path} does not hold a JSON object")
        return payload


def _check_schema(row: Mapping[str, Any], where: str) -> None:
    version = row.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise ResultSchemaError(
            f"{where}: schema_version {version!r}, this pullbench reads {RESULTS_SCHEMA_VERSION}"
        )


def _nested_to_text(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, (dict, list))).any():
            out[col] = out[col].map(
                lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
            )
    return out


def _text_to_nested(df: pd.DataFrame) -> pd.DataFrame:
    def decode(v: Any) -> Any:
        if isinstance(v, str) and v[:1] in "[{":
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v

    for col in df.columns:
        if df[col].dtype == object or str(df[col].dtype).startswith("str"):
            sample = df[col].dropna()
            if len(sample) and sample.map(lambda v: isinstance(v, str) and v[:1] in "[{").all():
                df[col] = df[col].map(decode).astype(object)
    return df


def rows_to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (dicts) -> DataFrame with the derived columns ``cpu_s`` and ``cpu_ns_per_byte``.

    ``cpu_s`` = ``cpu_user_s + cpu_sys_s``; ``cpu_ns_per_byte`` = ``cpu_s * 1e9 / bytes`` (CPU time
    per byte moved: when the network is the bottleneck, buffering shows up here, not in wall time).
    """
    import pandas as pd

    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    return _add_derived(df)


def _add_derived(df: pd.DataFrame) -> pd.DataFrame:
    if "bytes" not in df.columns and "total_bytes" in df.columns:
        df["bytes"] = df["total_bytes"]
    if {"cpu_user_s", "cpu_sys_s"} <= set(df.columns):
        df["cpu_s"] = df["cpu_user_s"].astype(float) + df["cpu_sys_s"].astype(float)
        if "bytes" in df.columns:
            import pandas as pd

            nbytes = pd.to_numeric(df["bytes"], errors="coerce").astype(float)
            df["cpu_ns_per_byte"] = df["cpu_s"] * 1e9 / nbytes.where(nbytes > 0)
    return df


def consolidate_results(directory: str | Path) -> tuple[Path, Path]:
    """Write ``rows.parquet`` and ``rows.csv`` from ``rows.jsonl`` (atomically).

    Nested values (histograms) are stored as JSON text in both; :func:`load_results` decodes them.

    Returns
    -------
    (Path, Path)
        The Parquet and CSV paths.

    Raises
    ------
    ResultSchemaError
        No ``rows.jsonl`` in ``directory`` or it is malformed.
    """
    store = ResultsStore(Path(directory))
    if not store.rows_path.exists():
        raise ResultSchemaError(f"{store.rows_path} does not exist: not a results folder")
    df = _nested_to_text(rows_to_frame(store.read_rows()))
    parquet = store.directory / ROWS_PARQUET
    csv = store.directory / ROWS_CSV
    tmp_parquet = parquet.with_name(f".{parquet.name}.tmp")
    df.to_parquet(tmp_parquet, index=False)
    tmp_parquet.replace(parquet)
    tmp_csv = csv.with_name(f".{csv.name}.tmp")
    df.to_csv(tmp_csv, index=False)
    tmp_csv.replace(csv)
    _fsync_dir(store.directory)
    return parquet, csv


def load_results(path: str | Path, *, include_warmup: bool = False,
                 include_errors: bool = True) -> pd.DataFrame:
    """Load experiment rows as a tidy DataFrame (one row per run).

    Parameters
    ----------
    path : str or Path
        A results folder (``rows.jsonl`` preferred, else ``rows.parquet``, else ``rows.csv``)
        or one of those files.
    include_warmup : bool
        Keep warm-up runs (``warmup=True``); default drops them.
    include_errors : bool
        Keep failed runs (``status="error"``).

    Returns
    -------
    pandas.DataFrame
        Columns include ``arm``, ``block``, ``order_in_block``, ``status``, ``duration_s``,
        ``bytes``, ``throughput_mb_s``, ``cpu_user_s``, ``cpu_sys_s``, ``cpu_s``,
        ``cpu_ns_per_byte`` and whatever else the puller reported; histograms as dicts/lists.

    Raises
    ------
    ResultSchemaError
        Nothing loadable at ``path``, or another schema version.
    """
    import pandas as pd

    path = resolve_results_path(path) if not Path(path).exists() else Path(path)
    if path.is_dir():
        for name in (ROWS_JSONL, ROWS_PARQUET, ROWS_CSV):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise ResultSchemaError(
                f"{path} holds no {ROWS_JSONL}, {ROWS_PARQUET} or {ROWS_CSV}: not a results folder"
            )
    if not path.exists():
        raise ResultSchemaError(f"results file {path} does not exist")
    if path.name.endswith(".jsonl"):
        df = rows_to_frame(ResultsStore(path.parent).read_rows() if path.name == ROWS_JSONL
                           else _read_jsonl_file(path))
    elif path.suffix == ".parquet":
        df = _add_derived(_text_to_nested(pd.read_parquet(path)))
    elif path.suffix == ".csv":
        df = _add_derived(_text_to_nested(pd.read_csv(path, keep_default_na=True)))
    else:
        raise ResultSchemaError(f"{path}: expected a .jsonl, .parquet or .csv results file")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if len(df) and missing:
        raise ResultSchemaError(f"{path}: missing columns {missing}")
    if len(df):
        versions = set(df["schema_version"].dropna().astype(int))
        if versions != {RESULTS_SCHEMA_VERSION}:
            raise ResultSchemaError(
                f"{path}: schema_version {sorted(versions)}, this pullbench reads "
                f"{RESULTS_SCHEMA_VERSION}"
            )
        if not include_warmup:
            df = df[~df["warmup"].astype(bool)]
        if not include_errors:
            df = df[df["status"] == "ok"]
    return df.reset_index(drop=True)


def _read_jsonl_file(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ResultSchemaError(f"{path}:{i + 1}: not valid JSON ({exc})") from exc
    return rows


def resolve_results_path(path: str | Path) -> Path:
    """Resolve a results location, including the shipped real run.

    Parameters
    ----------
    path : str or Path
        ``"shipped"`` (the run in ``data/results/debian-minbase-distribution`` of the source tree,
        or ``pullbench/data/results/...`` of an installed package), another name of a folder in
        ``data/results/``, or a path (absolute, or relative to the working directory).

    Returns
    -------
    Path

    Raises
    ------
    ResultSchemaError
        Nothing found; the message lists where it looked.
    """
    text = str(path)
    candidates = [Path(text).expanduser()]
    name = SHIPPED_RESULTS if text == "shipped" else text
    for base in reversed(data_dirs()):  # the source tree first, as before
        candidates.append(base / "results" / name)
    for candidate in candidates:
        if candidate.is_dir() or candidate.is_file():
            return candidate
    raise ResultSchemaError(
        f"no results at {text!r}; looked in: {', '.join(str(c) for c in candidates)}"
    )


def load_environment(path: str | Path) -> dict[str, Any]:
    """``environment.json`` of a results folder (``{}`` when the folder has none)."""
    directory = resolve_results_path(path)
    if directory.is_file():
        directory = directory.parent
    return ResultsStore(directory).read_json(ENVIRONMENT_JSON) or {}
