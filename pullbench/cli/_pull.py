"""CLI commands for the pull area: ``pullbench pull`` and ``pullbench strategies``."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import click

from ._common import handle_errors

__all__ = ["COMMANDS"]


def _parse_params(strategy: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    from .._errors import StrategyError
    from ..puller.strategies import parse_strategy_param

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            params[key.strip()] = parse_strategy_param(strategy, key.strip(), value.strip())
        except StrategyError as exc:
            raise click.BadParameter(str(exc), param_hint="--param") from None
    return params


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@click.command("pull")
@click.argument("reference")
@click.option(
    "--strategy",
    "-s",
    default="go-iocopy",
    show_default=True,
    help="Copy strategy (see `pullbench strategies`).",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a strategy parameter, e.g. --param read_size=16384 (repeatable).",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=(
        "Content store directory to keep the blobs in "
        "(default: a temporary store, removed after the report)."
    ),
)
@click.option("--plain-http", is_flag=True, help="Talk plain HTTP to the registry (no TLS).")
@click.option("--platform", default=None, help="os/arch[/variant] to select from an index.")
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA bundle (PEM) to verify the registry's TLS certificate.",
)
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Blobs fetched at once.",
)
@click.option("--retries", type=click.IntRange(min=1), default=None, metavar="N",
              help="Attempts per request, the first included (RetryPolicy.attempts; default 4; "
                   "1: fail at the first fault).")
@click.option("--retry-deadline", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop retrying a request after this long (default 120).")
@click.option("--speed-limit", type=click.IntRange(min=0), default=None, metavar="BYTES_S",
              help="Low-speed limit of a blob body, bytes/s (default 1024; 0: off), as curl's "
                   "--speed-limit.")
@click.option("--speed-time", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Window of the low-speed limit (default 30), as curl's "
                                      "--speed-time.")
@click.option("--json", "as_json", is_flag=True, help="Print the full PullResult as JSON.")
@handle_errors
def pull_command(
    reference: str,
    strategy: str,
    params: tuple[str, ...],
    dest: Path | None,
    plain_http: bool,
    platform: str | None,
    ca_bundle: Path | None,
    concurrency: int,
    retries: int | None,
    retry_deadline: float | None,
    speed_limit: int | None,
    speed_time: float | None,
    as_json: bool,
) -> None:
    """Pull REFERENCE's blobs with a copy strategy and report what the copy did."""
    from .._errors import StrategyError
    from ..puller._pipeline import pull
    from ..puller.strategies import get_strategy

    try:
        get_strategy(strategy)
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--strategy") from None
    overrides = _parse_params(strategy, params)
    try:
        strat = get_strategy(strategy, **overrides)
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    with contextlib.ExitStack() as stack:
        if dest is None:
            dest = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pullbench-pull-")))
            where = "a temporary store (removed; --dest DIR keeps the blobs)"
        else:
            where = str(dest)
        result = pull(
            reference,
            strat,
            dest,
            concurrency=concurrency,
            platform=platform,
            plain_http=plain_http,
            ca_bundle=ca_bundle,
            retry=retry_policy(retries, retry_deadline, speed_limit, speed_time),
        )
    _report_pull(result, where, as_json)


def retry_policy(attempts: int | None, deadline_s: float | None, speed_limit: int | None,
                 speed_time_s: float | None) -> Any:
    """A RetryPolicy from the CLI's options (defaults for those not given)."""
    from ..puller._transport import RetryPolicy

    given: dict[str, Any] = {"attempts": attempts, "deadline_s": deadline_s,
                             "speed_limit_bytes_s": speed_limit, "speed_time_s": speed_time_s}
    return RetryPolicy(**{k: v for k, v in given.items() if v is not None})


def _report_pull(result: Any, where: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    click.echo(
        f"pulled {result.reference} ({result.manifest_digest})"
        + (f" for {result.platform}" if result.platform else "")
        + f" into {where}"
    )
    click.echo(
        f"strategy      {result.strategy} " + " ".join(f"{k}={v}" for k, v in result.params.items())
    )
    click.echo(
        f"bytes         {result.total_bytes} ({_human_bytes(result.total_bytes)}) "
        f"in {len(result.layers)} blobs"
    )
    click.echo(
        f"time          {result.duration_s:.3f} s (resolve {result.resolve_s:.3f} s, "
        f"transfer {result.transfer_s:.3f} s)"
    )
    click.echo(f"throughput    {result.throughput_mb_s:.1f} MB/s")
    click.echo(f"reads         {result.read_count}")
    click.echo(
        f"writes        {result.write_count} (median {_human_bytes(result.median_write_bytes)})"
    )
    click.echo(f"cpu           user {result.cpu_user_s:.3f} s, sys {result.cpu_sys_s:.3f} s")
    click.echo(f"buffers       {_human_bytes(result.buffer_bytes)}")
    if result.retries or result.resumes:
        click.echo(f"faults        {result.retries} retries, {result.resumes} resumes, "
                   f"{result.backoff_s:.2f} s of backoff (a measurement of the faults too)")


@click.command("strategies")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def strategies_command(as_json: bool) -> None:
    """List copy strategies with their parameters and the code they mirror."""
    from ..puller.strategies import list_strategies

    infos = list_strategies()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "params": dict(i.params),
                        "mirrors": i.mirrors,
                        "description": i.description,
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return
    for info in infos:
        click.echo(f"{info.name}")
        click.echo(f"    {info.description}")
        if info.mirrors:
            click.echo(f"    mirrors: {info.mirrors}")
        if info.params:
            click.echo("    params:  " + ", ".join(f"{k}={v}" for k, v in info.params.items()))


COMMANDS: list[click.Command] = [pull_command, strategies_command]
