"""Where a pull's time goes: per-arm stage breakdowns (wall and CPU) and "what if this stage
were free" bounds, from results rows of pulls that unpacked (no I/O here).

Wall time of a pull that unpacks splits into ``resolve_s`` + ``transfer_s`` (first blob
request to last blob stored) + ``unpack_tail_s`` (last blob stored to root filesystem done) +
the rest (manifest storing, thread start-up). Inside the transfer, ``hash_s`` (computing the
blobs' digests) and ``write_s`` (the temp-file write calls) are timed separately; what is left
of it is receiving (``receive_s``: socket reads and waiting for the network). Those three are
wall seconds summed over blobs: with concurrent downloads they are thread-seconds and may add up
to more than ``transfer_s``. CPU splits into the pull's own threads (transfer: socket reads,
hashing, writes), the decompressor and the unpacker.

The "what if" bound uses a two-stage pipeline model: the pull takes at least
``resolve + max(transfer, apply)``, where ``apply = decompress + diff_hash + unpack`` is the
serial applier's work -- or ``resolve + transfer + apply`` when the schedule cannot overlap the
two (the rows' ``unpack_schedule``/``unpack_order``/``layer_count``): ``end`` (nothing applied
before the last blob is stored), and ``after`` when each layer is applied only once stored and
the next download waits for it (``serial`` order) or there is one layer only. Making one stage
free (zero) gives the shortest total any optimisation of that stage can reach (its upper
bound); it is a model, so it is reported next to the measured total, never instead of it.
Hashing or writing made free shortens the transfer by at most its own time (``transfer -
hash_s``, never below zero): that treats every blob's hashing as on the critical path, which
over-states the gain of concurrent downloads or of a hashing thread, so it stays an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import StatsInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TRANSFER_STAGES", "WALL_STAGES", "stage_breakdown", "what_if_free"]

#: Wall-time stages of a pull that unpacks, in pipeline order.
WALL_STAGES = ("resolve_s", "transfer_s", "unpack_tail_s")
#: The stages timed inside the transfer (optional columns: rows made before they existed, or
#: with probes off, lack them and get NaN).
TRANSFER_STAGES = ("hash_s", "write_s")
_NEEDED = ("duration_s", "resolve_s", "transfer_s", "unpack_tail_s", "decompress_s",
           "diff_hash_s", "unpack_s", "decompress_cpu_s", "unpack_cpu_s")


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise StatsInputError(f"the rows lack the unpack-stage columns {missing}: run arms with "
                              "an unpack plan (e.g. --arms go-iocopy+zlib+after)")
    rows = df
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    if "warmup" in rows.columns:
        rows = rows[~rows["warmup"].astype(bool)]
    rows = rows.dropna(subset=["decompress_s"])
    if rows.empty:
        raise StatsInputError("no successful runs that unpacked (decompress_s is empty)")
    import pandas as pd

    rows = rows.copy()
    for col in TRANSFER_STAGES:
        rows[col] = (pd.to_numeric(rows[col], errors="coerce") if col in rows.columns
                     else float("nan"))
    return rows


def stage_breakdown(df: pd.DataFrame, *, by: Sequence[str] = ("image", "arm")) -> pd.DataFrame:
    """Median seconds per stage for each group: wall-clock stages and CPU stages.

    Parameters
    ----------
    df : pandas.DataFrame
        Results rows (:func:`pullbench.load_results`); failed and warm-up runs are dropped.
    by : sequence of str
        Grouping columns (default image and arm).

    Returns
    -------
    pandas.DataFrame
        One row per group: ``duration_s`` and the wall stages ``resolve_s``, ``transfer_s``,
        ``unpack_tail_s``, ``other_s`` (the rest of the total); inside the transfer
        ``hash_s``, ``write_s`` and ``receive_s`` (``transfer_s - hash_s - write_s``, never
        below zero; NaN where the rows lack the hash/write columns); the CPU stages
        ``transfer_cpu_s`` (the pull's threads), ``decompress_cpu_s``, ``unpack_cpu_s``; and
        ``runs``. Medians over runs, each column separately.

    Raises
    ------
    StatsInputError
        The rows have no unpack-stage columns, or no run unpacked.
    """
    rows = _ok_rows(df)
    rows["other_s"] = (rows["duration_s"] - rows["resolve_s"] - rows["transfer_s"]
                       - rows["unpack_tail_s"]).clip(lower=0)
    rows["receive_s"] = (rows["transfer_s"] - rows["hash_s"] - rows["write_s"]).clip(lower=0)
    if "cpu_user_s" in rows.columns and "cpu_sys_s" in rows.columns:
        rows["transfer_cpu_s"] = rows["cpu_user_s"] + rows["cpu_sys_s"]
    else:
        rows["transfer_cpu_s"] = float("nan")
    cols = ["duration_s", *WALL_STAGES, "other_s", *TRANSFER_STAGES, "receive_s",
            "transfer_cpu_s", "decompress_cpu_s", "unpack_cpu_s"]
    groups = rows.groupby(list(by), sort=True)
    out = groups[cols].median()
    out["runs"] = groups.size()
    return out.reset_index()


def _no_overlap(rows: pd.DataFrame) -> pd.Series:
    """True where the schedule applies nothing while a download runs (see the module notes)."""
    import pandas as pd

    def col(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series(None, index=rows.index)

    schedule, order = col("unpack_schedule"), col("unpack_order")
    one_layer = pd.to_numeric(col("layer_count"), errors="coerce") == 2  # config + 1 layer
    return (schedule == "end") | ((schedule == "after") & ((order == "serial") | one_layer))


def what_if_free(df: pd.DataFrame, *, by: Sequence[str] = ("image", "arm")) -> pd.DataFrame:
    """The pipeline-model total if one stage took no time, per group (medians).

    Parameters
    ----------
    df : pandas.DataFrame
        Results rows, as for :func:`stage_breakdown`.
    by : sequence of str
        Grouping columns.

    Returns
    -------
    pandas.DataFrame
        One row per group: the measured ``duration_s``, the model's ``model_s`` (``resolve +
        max(transfer, decompress + diff_hash + unpack)``, or their sum where the schedule
        cannot overlap them), and ``if_free_transfer_s``,
        ``if_free_hash_s``, ``if_free_write_s``, ``if_free_decompress_s``,
        ``if_free_unpack_s``: the model with that stage at zero (the best any optimisation of
        it can do; hash and write are inside the transfer, see the module notes), with
        ``gain_*`` the fraction of the model total it would save (NaN for hash and write where
        the rows lack those columns).

    Raises
    ------
    StatsInputError
        As :func:`stage_breakdown`.
    """
    import numpy as np

    rows = _ok_rows(df)
    serial = _no_overlap(rows)

    def model(transfer: pd.Series, apply: pd.Series) -> pd.Series:
        return rows["resolve_s"] + np.where(serial, transfer + apply,
                                            np.maximum(transfer, apply))

    apply = rows["decompress_s"] + rows["diff_hash_s"] + rows["unpack_s"]
    transfer = rows["transfer_s"]
    rows["model_s"] = model(transfer, apply)
    rows["if_free_transfer_s"] = model(transfer * 0, apply)
    for stage in TRANSFER_STAGES:  # NaN stays NaN: not measured
        rows[f"if_free_{stage}"] = model((transfer - rows[stage]).clip(lower=0), apply)
    rows["if_free_decompress_s"] = model(transfer, apply - rows["decompress_s"])
    rows["if_free_unpack_s"] = model(transfer, apply - rows["unpack_s"])
    stages = ("transfer", "hash", "write", "decompress", "unpack")
    cols = ["duration_s", "model_s", *(f"if_free_{s}_s" for s in stages)]
    out = rows.groupby(list(by), sort=True)[cols].median()
    for stage in stages:
        out[f"gain_{stage}"] = 1 - out[f"if_free_{stage}_s"] / out["model_s"]
    return out.reset_index()
