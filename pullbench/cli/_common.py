"""Helpers shared by the CLI modules."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from .._errors import PullbenchError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Decorate a click command so that a PullbenchError exits 1 with its message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PullbenchError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def echo_warnings(*categories: type[Warning]) -> Iterator[None]:
    """Show warnings of ``categories`` as ``warning: <message>`` lines on stderr, each once.

    Other warnings go to the usual display. Inside the block these categories are always shown
    (never turned into errors by a warnings filter), so the command goes ahead.
    """
    seen: set[str] = set()
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("always", category)
        show = warnings.showwarning

        def echo(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            if not issubclass(category, categories):
                show(message, category, filename, lineno, file, line)
                return
            text = str(message)
            if text not in seen:
                seen.add(text)
                click.echo(f"warning: {text}", err=True)

        warnings.showwarning = echo
        yield


def export_options(func: Any) -> Any:
    """``--export-json`` / ``--export-csv`` / ``--export-markdown FILE`` (hyperfine's names)."""
    for name, what in (("markdown", "the verdict tables as Markdown"),
                       ("csv", "one row per image, metric and arm (mean, sd, min, max, median, "
                               "ratio and CI, p-values, verdict)"),
                       ("json", "the whole result as JSON (what analysis.json holds)")):
        func = click.option(f"--export-{name}", f"export_{name}", metavar="FILE",
                            type=click.Path(dir_okay=False, path_type=Path),
                            help=f"Write {what} to FILE.")(func)
    return func


def write_exports(result: Any, export_json: Path | None, export_csv: Path | None,
                  export_markdown: Path | None) -> None:
    """Write the exports asked for and say where (stderr)."""
    from ..experiment._export import write_exports as write

    for path in write(result, json_path=export_json, csv_path=export_csv,
                      markdown_path=export_markdown):
        click.echo(f"exported: {path}", err=True)
