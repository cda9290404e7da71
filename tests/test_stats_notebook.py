"""The PR 48602 notebook runs under papermill from another directory and renders to HTML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import pullbench
import pullbench.plots

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01-reproduce-pr48602.ipynb"


def test_notebook_has_one_literal_parameters_cell():
    import ast

    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)  # plain literals only


@pytest.mark.slow
def test_notebook_runs_with_papermill_and_renders_html(tmp_path):
    import nbformat
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        parameters={"margins": [0.02, 0.05], "n_resamples": 300, "n_max": 50,
                    "n_grid": [10, 42]},
    )
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "df = 10.53, p = 0.188" in text
    assert "Verdict: inconclusive" in text
    assert "about 42 runs per arm" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    html = (tmp_path / "out.html").read_text()
    assert "moby/moby#48602" in html
    assert "inconclusive" in html


def test_plots_return_figures():
    from matplotlib.figure import Figure

    fig = pullbench.plots.plot_power_curves(mean_a=39.294, sd_a=2.167, sd_b=0.634, n_max=30,
                                            mark_n=[10])
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_ylim() == (0, 1)
    rows = pd.DataFrame({"label": ["x", "y"], "ratio": [0.97, 1.0],
                         "ratio_ci_low": [0.95, 0.99], "ratio_ci_high": [0.99, 1.01]})
    fig = pullbench.plots.plot_ratio_intervals(rows, margin=[0.02, 0.05])
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_yticks()) == 2
