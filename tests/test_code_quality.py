"""The tree stays lint-clean (ruff) and type-clean (mypy, strict on the package).

Both tools read their configuration from pyproject.toml, so they run from the repository
root exactly as a developer runs them: ``ruff check .`` and ``mypy`` with no arguments.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required in CI (pip install -e '.[test]') but not installed")
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_ruff_check_is_clean():
    r = _run_tool("ruff", "check", ".", "--output-format", "concise", timeout_s=120)
    assert r.returncode == 0, f"ruff check . failed (exit {r.returncode}):\n{r.stdout}{r.stderr}"


@pytest.mark.slow
def test_mypy_is_clean():
    r = _run_tool("mypy", timeout_s=600)
    assert r.returncode == 0, f"mypy failed (exit {r.returncode}):\n{r.stdout}{r.stderr}"
