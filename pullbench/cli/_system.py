"""CLI commands of the machine area: ``pullbench system check``."""

from __future__ import annotations

import json

import click

from ._common import handle_errors


@click.group("system")
def system() -> None:
    """Is this machine fit to benchmark on?"""


@system.command("check")
@click.option("--window", "window_s", type=click.FloatRange(0.1, 60), default=1.0,
              show_default=True, help="Seconds to observe the machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
@handle_errors
def check(window_s: float, as_json: bool) -> None:
    """Load, the busiest other processes, governor/boost/SMT, swap, free memory; what to fix.

    Exit status 0 when the machine is quiet, 3 when it is not (for scripts).
    """
    from ..experiment._system import system_check

    result = system_check(window_s)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.format())
    if not result.quiet:
        raise SystemExit(3)


COMMANDS: list[click.Command] = [system]
