"""pyproject.toml and environment.yml list the same dependencies (conda is not reachable here)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_NAMES = {"pyjwt": "pyjwt", "python-isal": "isal", "python-zlib-ng": "zlib-ng"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {_name(r) for r in project["dependencies"]}
    for extra in ("notebooks", "test"):
        pypi |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = set()
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
        else:
            conda.add(_name(dep))
    conda -= {"python", "pip"}
    assert pypi == {CONDA_NAMES.get(n, n) for n in conda}, (
        f"only in pyproject: {sorted(pypi - conda)}; "
        f"only in environment.yml: {sorted(conda - pypi)}"
    )
    assert pip_section == ["-e ."]
    assert "conda-forge" in env["channels"]


def test_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    reqs = project["dependencies"] + [r for extra in extras for r in extra]
    pins = {_name(r): r.replace(" ", "")[len(_name(r)):] for r in reqs}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    for dep in env["dependencies"]:
        if isinstance(dep, str) and _name(dep) in pins:
            assert dep.replace(" ", "")[len(_name(dep)):] == pins[_name(dep)], dep
