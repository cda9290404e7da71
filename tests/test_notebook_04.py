"""Notebook 04 (real pullers beside the strategies) runs small under papermill and renders."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04-real-pullers.ipynb"


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
    assert names[0] == "results_paths"
    assert not any(o for c in nb.cells for o in c.get("outputs", []))  # stored without outputs
    assert "import pullbench" in "".join(c.source for c in nb.cells)


@pytest.mark.slow
@pytest.mark.peers
def test_small_run_through_the_real_pullers_renders(tmp_path, need_tool):
    import nbformat
    import papermill

    for binary, package in (("/usr/sbin/dockerd", "docker.io"), ("/usr/bin/docker", "docker.io"),
                            ("/usr/bin/containerd", "containerd"), ("/usr/bin/ctr", "containerd"),
                            ("/usr/bin/skopeo", "skopeo"), ("strace", "strace")):
        need_tool(binary, package)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        parameters={"arms": ["go-iocopy", "docker", "ctr-pull", "skopeo"],
                    "traced_copies": ["docker"], "blocks": 2,
                    "settings": [{"network_profile": "loopback", "tls": False}]})
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for o in outputs)
    assert "loopback: " in text
    assert "10 runs (0 warm-up, 0 failed)" in text
    assert "/usr/sbin/dockerd" in text
    assert "docker[trace=True]" in text
    assert "duration_s = wall time of the pull" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # CPU, memory, writes
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "out.ipynb"],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    assert "Real pullers" in (tmp_path / "out.html").read_text()


@pytest.mark.slow
def test_shipped_run_loads_and_shows_the_mechanism(tmp_path):
    import nbformat
    import papermill

    out = tmp_path / "shipped.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False,
                               parameters={"results_paths": ["real-pullers-wan-200m-tls"]})
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "wan-200m + TLS: " in text
    assert "189 runs (9 warm-up, 0 failed)" in text
    assert "docker[trace=True]" in text
    assert not (tmp_path / "results").exists()  # loading writes nothing
