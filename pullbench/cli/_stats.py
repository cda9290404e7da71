"""CLI commands for the stats area (registered by pullbench.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..stats._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN
from ._common import handle_errors

if TYPE_CHECKING:  # pandas is imported when the command runs, not at CLI start-up
    import pandas as pd

__all__ = ["COMMANDS", "compare_stats"]


def _parse_summary(value: str | None, param: str) -> tuple[float, float, int] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        mean, sd, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise click.BadParameter(
            f"expected MEAN,SD,N (e.g. 39.294,2.167,10), got {value!r}", param_hint=param
        ) from None
    return mean, sd, n


def _load_files(files: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    from ..experiment._hyperfine import read_hyperfine_json

    frames = []
    for f in files:
        df = read_hyperfine_json(f)
        df["file"] = Path(f).stem
        frames.append(df)
    if len(frames) == 2:
        if set(frames[0]["arm"]) & set(frames[1]["arm"]):
            # Same command before and after a change: name arms by file instead.
            for df in frames:
                single = df["arm"].nunique() == 1
                df["arm"] = df["file"] if single else df["file"] + ": " + df["arm"]
    return pd.concat(frames, ignore_index=True)


@click.command("compare-stats")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--a", "a_summary", metavar="MEAN,SD,N",
              help="Baseline summary (SD with ddof=1, as hyperfine prints it).")
@click.option("--b", "b_summary", metavar="MEAN,SD,N", help="Candidate summary.")
@click.option("--baseline", help="Baseline arm (hyperfine command or file stem); default: first.")
@click.option("--margin", type=float, default=DEFAULT_MARGIN, show_default=True,
              help="Equivalence margin, relative (0.02 = ±2%).")
@click.option("--alpha", type=float, default=DEFAULT_ALPHA, show_default=True,
              help="Significance level.")
@click.option("--seed", type=int, default=None, help="Bootstrap seed (recorded in the output).")
@click.option("--resamples", type=int, default=9999, show_default=True,
              help="Bootstrap resamples.")
@click.option("--correction", type=click.Choice(["holm", "bh", "bonferroni", "none"]),
              default="holm", show_default=True, help="Multiplicity adjustment across arms.")
@click.option("--higher-is-better", is_flag=True,
              help="The metric is a throughput (default: durations, lower is better).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@handle_errors
def compare_stats(
    files: tuple[str, ...], a_summary: str | None, b_summary: str | None, baseline: str | None,
    margin: float, alpha: float, seed: int | None, resamples: int, correction: str,
    higher_is_better: bool, as_json: bool,
) -> None:
    """Compare a baseline with candidates and print the verdict.

    Either summary statistics (--a MEAN,SD,N --b MEAN,SD,N) or one or two hyperfine
    --export-json FILES. Verdicts: faster, slower, equivalent (within ±margin) or inconclusive.

    \b
    Examples:
      pullbench compare-stats --a 39.294,2.167,10 --b 38.288,0.634,10 --margin 0.05
      pullbench compare-stats before.json after.json
      pullbench compare-stats scan.json --baseline 'sleep 0.1'
    """
    from ..stats._stats import analyze_grid, compare_from_summary

    sa = _parse_summary(a_summary, "--a")
    sb = _parse_summary(b_summary, "--b")
    if (sa is None) != (sb is None):
        raise click.BadParameter("give both --a and --b", param_hint="--a/--b")
    if sa is not None and sb is not None:
        if files:
            raise click.BadParameter("give either --a/--b summaries or FILES, not both")
        comparison = compare_from_summary(*sa, *sb, margin=margin, alpha=alpha,
                                          lower_is_better=not higher_is_better)
        click.echo(json.dumps(comparison.to_dict(), indent=2) if as_json else comparison.summary())
        return
    if not files:
        raise click.BadParameter("give hyperfine JSON FILES or --a/--b summaries")
    if len(files) > 2:
        raise click.BadParameter(f"at most two hyperfine files, got {len(files)}")
    df = _load_files(files)
    arms = list(df["arm"].unique())
    if baseline is None:
        baseline = arms[0]
    elif baseline not in arms:
        raise click.BadParameter(f"{baseline!r} is not one of the arms {arms}",
                                 param_hint="--baseline")
    grid = analyze_grid(df, metric="duration_s", arm="arm", baseline=baseline, block=None,
                        margin=margin, alpha=alpha, rng=seed, n_resamples=resamples,
                        correction=correction, lower_is_better=not higher_is_better)
    click.echo(json.dumps(grid.to_dict(), indent=2, default=str) if as_json else grid.summary())


COMMANDS: list[click.Command] = [compare_stats]
