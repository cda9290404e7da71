"""Notebook 05 (dockerd built stock / pr48602 / pools-bufio32k) runs on the shipped results."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05-pr48602-for-real.ipynb"


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        for o in c.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_one_parameters_cell_of_plain_literals():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
    assert not any(o for c in nb.cells for o in c.get("outputs", []))


def _parameters() -> dict:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse(cell.source).body}


# setting in the notebook -> (network profile, TLS) its shipped folder must have been run with
SETTINGS = {"loopback": ("loopback", False), "lan-1g · TLS": ("lan-1g", True),
            "wan-200m · TLS": ("wan-200m", True)}


def test_each_setting_reads_the_run_it_names():
    import json

    from pullbench import data_path

    results = _parameters()["results"]
    assert list(results) == list(SETTINGS)
    for setting, folder in results.items():
        spec = json.loads((data_path("results", folder) / "spec.json").read_text())
        assert (spec["network_profile"], spec["tls"]) == SETTINGS[setting], folder
        assert spec["blocks"] >= 20, folder
        assert spec["images"] == ["debian-minbase"], folder
        assert [a["params"]["variant"] for a in spec["arms"]] == [
            "stock", "pr48602", "pools-bufio32k"], folder
        readme = (data_path("results", folder) / "README.md").read_text()
        assert f"--blocks {spec['blocks']}" in readme, folder  # the exact command
        if spec["tls"]:
            assert f"--network-profile {spec['network_profile']} --tls" in readme, folder


@pytest.mark.slow
def test_runs_on_the_shipped_results(tmp_path):
    import nbformat
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False, parameters={"n_resamples": 500})
    text = _text(nbformat.read(out, as_version=4))
    assert "moby/moby#48602" in text
    assert "The PR's own test: ratio 0.9744" in text
    for arm in ("dockerd[variant=stock]", "dockerd[variant=pr48602]",
                "dockerd[variant=pools-bufio32k]"):
        assert arm in text
    assert "+pullbench.pr48602" in text  # the binaries are the built variants
    for setting in SETTINGS:  # every setting loaded, analysed and concluded on
        assert re.search(rf"^{re.escape(setting)}: \d+ ok runs, \d+ failed, \d+ blocks", text,
                         re.MULTILINE), setting
        for arm in ("dockerd[variant=pr48602]", "dockerd[variant=pools-bufio32k]"):
            assert f"{setting}: {arm}: wall time " in text, (setting, arm)
            assert f"{setting}: {arm}: daemon peak RSS " in text, (setting, arm)
    assert "524288" in text  # pr48602's 512 KiB writes, from the traced blocks
