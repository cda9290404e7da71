"""Exports of verdicts for scripts and documents (hyperfine's ``--export-json``, ``--export-csv``,
``--export-markdown``).

:func:`analysis_records` flattens an :class:`~pullbench.Analysis` into one record per image,
metric and arm (the baseline included): hyperfine's descriptives (mean, sd, min, max, median)
next to the verdict columns. :func:`comparison_records` does the same for a
:class:`~pullbench.RunComparison`. :func:`write_exports` writes JSON (the whole result, as
``analysis.json`` / ``to_dict()`` holds it), CSV (the records) and Markdown (one table per image
and metric, with the ``N.NN× faster than …`` phrase).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._results import _jsonable

if TYPE_CHECKING:
    from ._analysis_result import Analysis
    from ._compare import RunComparison

__all__ = ["ANALYSIS_CSV_COLUMNS", "COMPARISON_CSV_COLUMNS", "analysis_markdown",
           "analysis_records", "comparison_markdown", "comparison_records", "write_exports"]

#: Columns of ``--export-csv`` of ``bench`` / ``analyze`` (one row per image, metric and arm).
ANALYSIS_CSV_COLUMNS = (
    "image", "metric", "arm", "role", "n", "mean", "sd", "min", "max", "median", "ratio",
    "ratio_ci_low", "ratio_ci_high", "p", "p_holm", "tost_p", "verdict", "phrase",
)
#: Columns of ``--export-csv`` of ``compare`` (one row per image, metric and arm).
COMPARISON_CSV_COLUMNS = (
    "image", "metric", "arm", "n_a", "n_b", "mean_a", "sd_a", "min_a", "max_a", "median_a",
    "mean_b", "sd_b", "min_b", "max_b", "median_b", "ratio", "ratio_ci_low", "ratio_ci_high",
    "p", "p_holm", "tost_p", "tost_p_holm", "verdict", "phrase",
)


def analysis_records(analysis: Analysis) -> list[dict[str, Any]]:
    """One record per image, metric and arm (the baseline first, ``role`` ``baseline``).

    Returns
    -------
    list of dict
        Keys :data:`ANALYSIS_CSV_COLUMNS`; floats in the metric's units, ratios candidate /
        baseline, ``p_holm`` the adjusted p-value that decides the verdict.
    """
    from ._analysis import verdict_table
    from ._report import ratio_phrase

    out = []
    for image, block in analysis.images.items():
        for metric in block.metrics:
            table = verdict_table(analysis, image, metric)
            for rec in table.to_dict(orient="records"):
                base = rec.get("verdict") == "baseline"
                row = {k: rec.get(k) for k in ANALYSIS_CSV_COLUMNS if k in rec}
                row.update(image=image, metric=metric, role="baseline" if base else "candidate",
                           p_holm=rec.get("p_holm"), p=rec.get("p"), tost_p=rec.get("tost_p"))
                row["phrase"] = "" if base else ratio_phrase(
                    rec.get("ratio"), rec.get("ratio_ci_low"), rec.get("ratio_ci_high"),
                    metric=metric, reference=analysis.baseline)
                out.append({k: _clean(row.get(k)) for k in ANALYSIS_CSV_COLUMNS})
    return out


def comparison_records(comparison: RunComparison) -> list[dict[str, Any]]:
    """One record per image, metric and arm of a run comparison (keys
    :data:`COMPARISON_CSV_COLUMNS`)."""
    from ._report import ratio_phrase

    out = []
    for r in comparison.rows:
        row = r.to_dict()
        row["phrase"] = ratio_phrase(r.ratio, r.ratio_ci_low, r.ratio_ci_high, metric=r.metric,
                                     reference="A")
        out.append({k: _clean(row.get(k)) for k in COMPARISON_CSV_COLUMNS})
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return _clean(value.item())
    return value


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    return (["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def analysis_markdown(analysis: Analysis) -> str:
    """The verdict tables as Markdown: a heading and a table per image and metric, then the
    ``N.NN× faster than …`` lines."""
    from ._analysis import verdict_table
    from ._report import METRIC_LABELS, _compact_rows, _phrases

    out = [f"Baseline **{analysis.baseline}**; equivalence margin ±{analysis.margin:.0%}, "
           f"alpha {analysis.alpha}; ratios candidate / baseline."]
    for image, block in analysis.images.items():
        for metric in block.metrics:
            table = verdict_table(analysis, image, metric)
            header, rows = _compact_rows(table)
            out += ["", f"### {image}: {METRIC_LABELS.get(metric, metric)}", ""]
            out += _markdown_table(header, rows)
            out += [""] + [f"- {line.strip()}" for line in
                           _phrases(table, metric, analysis.baseline)]
        out += [f"\n{image}: {metric} not analysed: {why}"
                for metric, why in block.skipped_metrics.items()]
    return "\n".join(out) + "\n"


def comparison_markdown(comparison: RunComparison) -> str:
    """A run comparison as Markdown (tables per image and metric, environment differences)."""
    from ._report import METRIC_LABELS, _fmt, _fmt_p, ratio_phrase

    c = comparison
    out = [f"A (baseline, before): `{c.run_a}`  ", f"B (candidate, after): `{c.run_b}`  ",
           f"Each arm B vs A, unpaired (Welch; Holm across arms); margin ±{c.margin:.0%}."]
    table = c.table()
    for (image, metric), group in table.groupby(["image", "metric"], sort=False):
        out += ["", f"### {image}: {METRIC_LABELS.get(str(metric), metric)}", ""]
        header = ["arm", "n A/B", "A mean ± sd", "B mean ± sd", "ratio B/A [95% CI]", "p (Holm)",
                  "verdict", "B vs A"]
        rows = [[str(r.arm), f"{r.n_a}/{r.n_b}", f"{_fmt(r.mean_a, '.4g')} ± {_fmt(r.sd_a, '.2g')}",
                 f"{_fmt(r.mean_b, '.4g')} ± {_fmt(r.sd_b, '.2g')}",
                 f"{_fmt(r.ratio, '.3f')} [{_fmt(r.ratio_ci_low, '.3f')}, "
                 f"{_fmt(r.ratio_ci_high, '.3f')}]", _fmt_p(r.p_holm), str(r.verdict),
                 ratio_phrase(r.ratio, r.ratio_ci_low, r.ratio_ci_high, metric=str(metric),
                              reference="A")]
                for r in group.itertuples()]
        out += _markdown_table(header, rows)
    if c.environment_differences:
        out += ["", "### Environment differences (A → B)", ""]
        out += _markdown_table(["key", "A", "B"], [[d.key, d.a or "(absent)", d.b or "(absent)"]
                                                   for d in c.environment_differences])
    return "\n".join(out) + "\n"


def write_exports(result: Analysis | RunComparison, *, json_path: Path | None = None,
                  csv_path: Path | None = None, markdown_path: Path | None = None) -> list[Path]:
    """Write the asked-for exports of an analysis or a run comparison; return the paths.

    JSON is ``result.to_dict()`` (for an analysis: what ``analysis.json`` holds); CSV holds
    :func:`analysis_records` / :func:`comparison_records`; Markdown
    :func:`analysis_markdown` / :func:`comparison_markdown`. Folders are created.
    """
    from ._compare import RunComparison

    written = []
    if json_path is not None:
        _write(json_path, json.dumps(_jsonable(result.to_dict()), indent=2, allow_nan=False)
               + "\n")
        written.append(json_path)
    if csv_path is not None:
        records: list[dict[str, Any]]
        columns: Sequence[str]
        if isinstance(result, RunComparison):
            records, columns = comparison_records(result), COMPARISON_CSV_COLUMNS
        else:
            records, columns = analysis_records(result), ANALYSIS_CSV_COLUMNS
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(records)
        written.append(csv_path)
    if markdown_path is not None:
        text = (comparison_markdown(result) if isinstance(result, RunComparison)
                else analysis_markdown(result))
        _write(markdown_path, text)
        written.append(markdown_path)
    return written


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
