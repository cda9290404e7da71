"""Exit codes for CI gating: ``--fail-on [ARM=]VERDICT`` and ``--fail-if-not [ARM=]VERDICT``.

``bench``, ``analyze`` and ``compare`` take both options (repeatable). A gate is judged on the
command's primary metric (the first analysed: wall time unless ``--metric`` says otherwise), for
every image, and on the named arm, or on every arm that is compared with the baseline when no
arm is named. A failed gate prints one ``gate failed:`` line per arm and exits
:data:`GATE_FAILED_EXIT` (3), after the results and reports are written; errors exit 1 and
usage errors 2, so a CI job can tell "slower" from "broken".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..experiment._analysis_result import Analysis

__all__ = ["GATE_FAILED_EXIT", "Gate", "GateInput", "analysis_verdicts", "check_gates",
           "gate_options", "parse_gates", "require_gate_arms"]

#: Exit status when a gate fails (1 is an error, 2 a usage error).
GATE_FAILED_EXIT = 3

_VERDICTS = ("faster", "slower", "equivalent", "inconclusive")


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate: fail when ``arm``'s verdict is (or, ``negate``, is not) ``verdict``."""

    arm: str | None  # None: every arm compared with the baseline
    verdict: str
    negate: bool

    def describe(self) -> str:
        option = "--fail-if-not" if self.negate else "--fail-on"
        return f"{option} {self.arm + '=' if self.arm else ''}{self.verdict}"


@dataclass(frozen=True, slots=True)
class GateInput:
    """One verdict a gate judges: image (or run pair), metric, arm (and its strategy)."""

    image: str
    metric: str
    arm: str
    strategy: str
    verdict: str


def gate_options(func: Any) -> Any:
    """The ``--fail-on`` / ``--fail-if-not`` options of a command."""
    func = click.option(
        "--fail-if-not", "fail_if_not", multiple=True, metavar="[ARM=]VERDICT",
        help="Exit 3 unless the arm's verdict is VERDICT (e.g. equivalent); without ARM= every "
             "compared arm. Judged on the primary metric. Repeatable.")(func)
    return click.option(
        "--fail-on", "fail_on", multiple=True, metavar="[ARM=]VERDICT",
        help="Exit 3 when the arm's verdict is VERDICT (faster, slower, equivalent, "
             "inconclusive), e.g. --fail-on slower or --fail-on pr48602=slower; without ARM= "
             "every arm compared with the baseline. Judged on the primary metric (the first "
             "analysed: wall time, the spec's first metric, unless analyze/compare --metric "
             "names another), after results are written. "
             "Repeatable.")(func)


def parse_gates(fail_on: Iterable[str], fail_if_not: Iterable[str]) -> list[Gate]:
    """Parse the option values; ``click.BadParameter`` (exit 2) for an unknown verdict."""
    gates = []
    for values, negate, hint in ((fail_on, False, "--fail-on"),
                                 (fail_if_not, True, "--fail-if-not")):
        for text in values:
            arm, sep, verdict = text.rpartition("=")
            verdict = verdict.strip().lower()
            if verdict not in _VERDICTS or (sep and not arm.strip()):
                raise click.BadParameter(
                    f"{text!r}: expected [ARM=]VERDICT with VERDICT one of "
                    f"{', '.join(_VERDICTS)} (e.g. slower, or pr48602=slower)", param_hint=hint)
            gates.append(Gate(arm.strip() or None, verdict, negate))
    return gates


def require_gate_arms(gates: Sequence[Gate], arms: Iterable[tuple[str, str]],
                      baseline: str) -> None:
    """Check that every named arm exists and is not the baseline (before anything runs).

    ``arms`` are (name, strategy) pairs; a gate may name either.
    """
    pairs = list(arms)
    names = {n for pair in pairs for n in pair}
    for gate in gates:
        if gate.arm is None:
            continue
        if gate.arm not in names:
            raise click.BadParameter(
                f"{gate.describe()}: no arm {gate.arm!r}; arms are "
                f"{', '.join(n for n, _ in pairs)}", param_hint=gate.describe().split()[0])
        if gate.arm == baseline:
            raise click.BadParameter(
                f"{gate.describe()}: {baseline} is the baseline, which gets no verdict; name a "
                "compared arm", param_hint=gate.describe().split()[0])


def check_gates(gates: Sequence[Gate], rows: Sequence[GateInput]) -> None:
    """Print the gate results; exit :data:`GATE_FAILED_EXIT` when one fails."""
    if not gates:
        return
    failed = []
    for gate in gates:
        judged = [r for r in rows if gate.arm is None or gate.arm in (r.arm, r.strategy)]
        if not judged:
            raise click.ClickException(
                f"{gate.describe()}: no verdict to judge (the primary metric was not analysed "
                "for that arm)")
        for row in judged:
            hit = (row.verdict == gate.verdict) != gate.negate
            if hit:
                failed.append(f"gate failed: {row.image}: {row.arm} {row.metric} verdict "
                              f"{row.verdict} ({gate.describe()})")
    if failed:
        for line in failed:
            click.echo(line, err=True)
        raise SystemExit(GATE_FAILED_EXIT)
    click.echo("gates passed: " + "; ".join(g.describe() for g in gates), err=True)


def analysis_verdicts(analysis: Analysis, metric: str | None = None) -> list[GateInput]:
    """The verdicts of an :class:`~pullbench.Analysis` on its primary metric, per image.

    ``metric`` None: per image, the first analysed metric.
    """
    rows = []
    for image, block in analysis.images.items():
        chosen = metric or next(iter(block.metrics), None)
        if chosen is None or chosen not in block.metrics:
            why = block.skipped_metrics.get(chosen or "", "not analysed")
            raise click.ClickException(f"cannot judge the gates: {image}: {chosen}: {why}")
        strategies = {a.arm: a.strategy for a in block.arms}
        for rec in block.metrics[chosen].table:
            rows.append(GateInput(str(image), chosen, rec.arm, strategies.get(rec.arm, ""),
                                   rec.verdict))
    return rows
