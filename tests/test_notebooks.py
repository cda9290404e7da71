"""Notebook 02 runs under papermill from another working directory and renders to HTML.

Notebook 01 is executed by tests/test_stats_notebook.py (the statistics area).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02-local-registry.ipynb"


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def test_one_parameters_cell_of_plain_literals():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = []
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
        names.append(node.targets[0].id)
    assert names[0] == "results_path"
    assert not any(o for c in nb.cells for o in c.get("outputs", []))  # stored without outputs


def _execute(tmp_path: Path, parameters: dict) -> object:
    import nbformat
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False, parameters=parameters)
    return nbformat.read(out, as_version=4)


@pytest.mark.slow
def test_tiny_experiment_runs_and_renders(tmp_path):
    nb = _execute(tmp_path, {"arms": ["go-iocopy", "containerd-1m"], "blocks": 2,
                             "warmup_blocks": 1, "n_resamples": 500})
    text = _text(nb)
    assert "6 runs (2 warm-up, 0 failed); image synthetic-small; registry embedded" in text
    # results_dir=None: the run is kept under the working folder (results/<timestamp>-...),
    # never in a temporary folder nobody removes
    assert [p.name.endswith("notebook-02") for p in (tmp_path / "results").iterdir()] == [True]
    assert "duration_s = wall time of the pull" in text
    assert "cpu_ns_per_byte = CPU time" in text
    assert _images(nb) >= 6  # 2 distributions, sizes, 2 histograms, memory
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "out.ipynb"],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    html = (tmp_path / "out.html").read_text()
    assert "Copy strategies against a local registry" in html
    assert "containerd-1m" in html


@pytest.mark.slow
def test_shipped_run_loads_through_the_package(tmp_path):
    nb = _execute(tmp_path, {"results_path": "shipped", "n_resamples": 999})
    text = _text(nb)
    assert "186 runs (6 warm-up, 0 failed); image debian-minbase; registry distribution" in text
    assert "180 runs analysed, 0 failed runs excluded" in text
    for arm in ("pr48602", "pools-bufio32k", "containerd-1m", "requests-iter-content", "splice"):
        assert arm in text
    assert _images(nb) >= 6
