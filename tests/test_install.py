"""Installing pullbench as a user does: without the notebooks extra, and from a built wheel.

The slow test builds a wheel from a copy of the source tree, installs it (core dependencies only)
into a fresh virtual environment and runs the main job from another folder; then it adds the
plotting and kernel packages and runs notebook 01 with the wheel's package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image", "synthetic-small", "--arms", "go-iocopy,containerd-1m", "--no-progress"]
EXTRA_LINE = "pip install 'pullbench[notebooks]'"


def test_bench_and_report_without_matplotlib_keep_results_and_name_the_extra(
        tmp_path, monkeypatch):
    # matplotlib is absent for this process, as in `pip install .` without extras (None in
    # sys.modules makes every `import matplotlib...` raise ImportError)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["bench", *TINY, "--blocks", "2", "--warmup-blocks", "0",
                                       "--in-process", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert f"report: {out / 'report.html'} (tables only; plots need matplotlib, which is not " \
           f"installed: {EXTRA_LINE})" in lines
    assert sum(EXTRA_LINE in line for line in lines) == 1  # one line, not one per image/plot
    assert lines[-1] == f"results: {out}"
    for name in ("rows.jsonl", "rows.parquet", "rows.csv", "analysis.json", "report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "containerd-1m" in html
    assert "verdicts compact" in html
    assert "data:image/png" not in html
    assert "No plots: plots need matplotlib" in html

    result = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "r.html")
    assert EXTRA_LINE in result.stderr
    assert "verdicts compact" in (tmp_path / "r.html").read_text()


def test_package_data_is_the_top_level_data_folder():
    link = ROOT / "pullbench" / "data"
    assert link.is_symlink()
    assert str(link.readlink()) == "../data"
    assert (link / "published" / "moby-pull-prs.csv").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "data/**/*" in config["package-data"]["pullbench"]


def _copy_source(dest: Path) -> Path:
    """The source tree without caches, build output or results (keeps the data symlink)."""
    anywhere = {".git", ".pytest_cache", ".ruff_cache", ".mypy_cache", "__pycache__",
                ".ipynb_checkpoints"}
    at_top = {"build", "dist", "results", "out"}  # data/results is data, /results is output

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {n for n in names if n in anywhere or n.endswith(".egg-info")
                or (top and n in at_top)}

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600,
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_wheel_carries_its_data_and_runs_the_main_job_and_notebook_01(tmp_path):
    if shutil.which("pip") is None and not os.environ.get("CI"):
        pytest.skip("pip not on PATH")
    # 1. a wheel from a clean copy (an in-tree build would leave build/ in the checkout)
    src = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
         cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("pullbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in (ROOT / "data").rglob("*"):
        if data.is_file():
            assert f"pullbench/data/{data.relative_to(ROOT / 'data').as_posix()}" in names, data

    # 2. a fresh environment with the core dependencies only (no matplotlib, no jupyter)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
          str(wheel)], cwd=tmp_path, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = _run([python, "-c", (
        "import importlib.util, json, pullbench; "
        "from pullbench.experiment._results import resolve_results_path; "
        "print(json.dumps({'file': pullbench.__file__, "
        "'published': len(pullbench.published_figures()), "
        "'shipped': str(resolve_results_path('shipped')), "
        "'shipped_rows': len(pullbench.load_results('shipped')), "
        "'matplotlib': importlib.util.find_spec('matplotlib') is not None}))")],
        cwd=work, env=env)
    facts = json.loads(probe.stdout)
    assert facts["file"].startswith(str(venv)), facts  # the wheel, not the checkout
    assert facts["published"] == 4
    assert facts["shipped"].startswith(str(venv))
    assert facts["shipped_rows"] > 0
    assert facts["matplotlib"] is False

    # 3. the main job (quick) from another folder, without the notebooks extra
    bench = _run([str(venv / "bin" / "pullbench"), "bench", "--quick", "--image",
                  "synthetic-small", "--no-progress"], cwd=work, env=env)
    assert "Traceback" not in bench.stdout + bench.stderr
    assert f"(tables only; plots need matplotlib, which is not installed: {EXTRA_LINE})" \
        in bench.stdout
    (run_dir,) = (work / "results").iterdir()
    assert bench.stdout.splitlines()[-1] == f"results: {Path('results') / run_dir.name}"
    assert json.loads((run_dir / "analysis.json").read_text())["n_failed"] == 0
    assert "No plots" in (run_dir / "report.html").read_text()

    # 4. with plotting and a kernel (the packages the notebooks extra brings, taken from the
    # test environment: a second venv that sees them, the wheel installed on top) the report
    # gains its plots, and notebook 01 (the published figures, read from the wheel's data) runs
    # from elsewhere
    full = tmp_path / "venv-full"
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(full)],
         cwd=tmp_path, env=env)
    python = str(full / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
          "--no-deps", str(wheel)], cwd=tmp_path, env=env)
    where = _run([python, "-c", "import pullbench; print(pullbench.__file__)"], cwd=work, env=env)
    assert where.stdout.startswith(str(full)), where.stdout  # the wheel, not the checkout
    _run([str(full / "bin" / "pullbench"), "report", str(run_dir)], cwd=work, env=env)
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    kernels = tmp_path / "jupyter" / "kernels" / "pullbench-wheel"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pullbench wheel", "language": "python"}))
    env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    notebook = src / "notebooks" / "01-reproduce-pr48602.ipynb"
    _run([sys.executable, "-m", "papermill", str(notebook), str(work / "01.ipynb"),
          "-k", "pullbench-wheel", "--no-progress-bar", "-p", "n_resamples", "300",
          "-p", "n_max", "50"], cwd=work, env=env)
    import nbformat

    nb = nbformat.read(work / "01.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "df = 10.53, p = 0.188" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
