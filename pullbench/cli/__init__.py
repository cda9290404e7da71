"""The ``pullbench`` command line: thin click commands over the library.

Library raises, CLI exits: a :class:`~pullbench.PullbenchError` becomes a ``click.ClickException``
(exit 1); invalid input becomes ``click.BadParameter`` (exit 2). Each area registers its commands
in its own ``pullbench/cli/_<area>.py`` module as a list ``COMMANDS``, wrapping each with
:func:`pullbench.cli._common.handle_errors`.
"""

from __future__ import annotations

import logging

import click

from .._version import __version__
from ._common import handle_errors

__all__ = ["handle_errors", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullbench")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """pullbench: does a change to how an image pull copies bytes make it faster, and why?"""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from . import _bench, _dockerd, _images, _pull, _remote, _stats, _system

    for module in (_images, _pull, _stats, _bench, _remote, _system, _dockerd):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
