"""CLI commands for the stats area (registered by pullbench.cli)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
