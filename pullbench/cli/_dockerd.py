"""``pullbench dockerd``: build dockerd from source, stock or with a variant of its copy loop."""

from __future__ import annotations

import click

from .._errors import ProgramBuildError
from ..arms._dockerd_build import (
    build_dockerd,
    dockerd_build_requirements,
    dockerd_variants,
    install_dockerd_build_requirements,
)
from ._common import handle_errors


@click.group("dockerd")
def dockerd_group() -> None:
    """dockerd built from source (stock, pr48602, pools-bufio32k, bufio)."""


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value (e.g. read_size=512k)",
                                     param_hint="--param")
        out[key.strip()] = value.strip()
    return out


@dockerd_group.command("build")
@click.argument("variant")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A variant parameter (bufio: read_size, write_size), e.g. write_size=1m.")
@click.option("--source", default="debian", show_default=True, metavar="debian|DIR",
              help="Debian's docker.io source package, or a moby 20.10 tree.")
@click.option("--install", is_flag=True,
              help="Run the apt-get lines the build needs (root only); without it they are "
                   "printed.")
@handle_errors
def build_command(variant: str, params: tuple[str, ...], source: str, install: bool) -> None:
    """Build dockerd VARIANT (cached) and print the binary's path.

    Nothing is installed without --install: missing pieces (deb-src entries derived from this
    machine's apt sources, golang-go, dpkg-dev, apt-get build-dep docker.io) are printed as the
    exact lines to run as root.
    """
    try:
        result = build_dockerd(variant, _parse_params(params), source=source, install=install,
                               progress=lambda line: click.echo(line, err=True))
    except ProgramBuildError as exc:
        if not exc.commands:
            raise
        click.echo(f"ProgramBuildError: {exc}", err=True)
        click.echo("# run as root (or rerun with --install as root):", err=True)
        for line in exc.commands:
            click.echo(line)
        raise SystemExit(1) from exc
    if result.cached:
        click.echo(f"cached: {result.variant} {result.version_string} "
                   f"({result.go_version})", err=True)
    click.echo(str(result.binary))


@dockerd_group.command("setup")
@click.option("--install", is_flag=True, help="Run the lines (root only) instead of printing them.")
@handle_errors
def setup_command(install: bool) -> None:
    """What building dockerd from Debian's source needs: print the exact lines (exit 1 when
    something is missing), or run them with --install as root (idempotent)."""
    if install:
        install_dockerd_build_requirements(progress=lambda line: click.echo(line, err=True))
        return
    needed = dockerd_build_requirements("debian")
    if not needed:
        click.echo("nothing missing: pullbench dockerd build can run", err=True)
        return
    click.echo("# run as root (or: pullbench dockerd setup --install, as root):", err=True)
    for line in needed:
        click.echo(line)
    raise SystemExit(1)


@dockerd_group.command("variants")
def variants_command() -> None:
    """List the variants and their parameters."""
    for name, v in dockerd_variants().items():
        params = ", ".join(f"{k}={val}" for k, val in v.params.items())
        click.echo(f"{name:16s} {v.summary}" + (f" [{params}]" if params else ""))


COMMANDS: list[click.Command] = [dockerd_group]
