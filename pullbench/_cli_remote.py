"""CLI commands for the remote area (registered by pullbench.cli)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
