"""CLI commands for the bench area (registered by pullbench.cli)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
