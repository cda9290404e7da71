"""report.html and a notebook's HTML in a real browser: Debian's headless Chromium.

Each page is loaded from a file (no network): a script appended to a copy records, after the load
event, every ``<img>``'s decode state (``complete``, ``naturalWidth``) and alt text, whether any
traceback text is visible, and whether text blocks overflow their box; ``--dump-dom`` prints it.
A screenshot of the page is taken too (kept in the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """<script>window.addEventListener('load', function () {
  var text = document.body.innerText;
  var pres = Array.from(document.querySelectorAll('pre')).filter(function (p) {
    return p.offsetParent !== null && p.id !== 'pullbench-render-check'; });
  var out = document.createElement('pre');
  out.id = 'pullbench-render-check';
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map(function (i) {
      return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
    }),
    traceback: /Traceback \\(most recent call last\\)|^\\w+(Error|Exception): /m.test(text),
    text_chars: text.length,
    table_text: Array.from(document.querySelectorAll('table')).map(function (t) {
      return t.innerText; }).join(' | '),
    overflowing_pre: pres.filter(function (p) { return p.scrollWidth > p.clientWidth + 1; })
                         .map(function (p) { return p.textContent.slice(0, 80); }),
    page_overflows: document.documentElement.scrollWidth > document.documentElement.clientWidth
  });
  document.body.appendChild(out);
});</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI but not installed (.ci/install-test-deps)")
        pytest.skip("chromium not installed")
    return path


def _run_chromium(args: list[str], home: Path, timeout_s: int = 120) -> str:
    """Run headless Chromium in its own session; kill that session if it hangs."""
    env = {**os.environ, "HOME": str(home)}  # nothing written to the user's home
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={home / 'profile'}",
               *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started above: browser + children
        proc.communicate()
        raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out


def inspect_page(html: Path, work: Path) -> dict:
    """Load ``html`` in headless Chromium; return the check script's findings."""
    work.mkdir(parents=True, exist_ok=True)
    checked = work / f"{html.stem}-checked.html"
    checked.write_text(html.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"),
                       encoding="utf-8")
    dom = _run_chromium(["--virtual-time-budget=15000", "--dump-dom", checked.as_uri()],
                        work)
    match = re.search(r'<pre id="pullbench-render-check">(.*?)</pre>', dom, re.S)
    assert match, "the check script did not run"
    import html as _html

    return json.loads(_html.unescape(match.group(1)))


def screenshot(html: Path, work: Path, height: int = 3000) -> Path:
    png = work / f"{html.stem}.png"
    _run_chromium([f"--window-size=1200,{height}", f"--screenshot={png}", html.as_uri()], work)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width == 1200
    return png


def _assert_renders(found: dict, *, min_images: int) -> None:
    images = found["images"]
    assert len(images) >= min_images, images
    for img in images:
        assert img["complete"], img
        assert img["width"] > 0, img  # decoded: a broken image has naturalWidth 0
        assert img["height"] > 0, img
        assert img["alt"].strip(), img  # alt text on every image, a real one:
        assert img["alt"] != "No description has been provided for this image", img  # nbconvert
        assert len(img["alt"]) > 30, img
    assert not found["traceback"]
    assert found["text_chars"] > 500


def test_check_script_sees_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><p>" + "x " * 300 + "</p>"
                    "<img alt='fine' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"
                    "CAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=='>"
                    "<img alt='broken' src='data:image/png;base64,iVBORw0KGgoAAAA'>"
                    "<pre>Traceback (most recent call last):</pre></body></html>")
    found = inspect_page(page, tmp_path / "chk")
    assert [(i["alt"], i["width"] > 0) for i in found["images"]] == [("fine", True),
                                                                     ("broken", False)]
    assert found["traceback"]


@pytest.mark.slow
@pytest.mark.peers
def test_report_html_renders_in_chromium(tmp_path):
    from pullbench.experiment._report import render_report
    from pullbench.experiment._results import resolve_results_path

    run = tmp_path / "run"
    shutil.copytree(resolve_results_path("shipped"), run)
    report = render_report(run)
    found = inspect_page(report, tmp_path / "chk")
    _assert_renders(found, min_images=5)
    assert not found["page_overflows"]
    assert found["overflowing_pre"] == []  # diagnostics wrap instead of running off the box
    png = screenshot(report, tmp_path)
    assert png.stat().st_size > 50_000  # a page of tables and plots, not a blank one


@pytest.mark.slow
@pytest.mark.peers
def test_notebook_html_renders_in_chromium(tmp_path):
    import papermill

    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "01-reproduce-pr48602.ipynb"), str(out), cwd=str(tmp_path),
        kernel_name="python3", progress_bar=False,
        parameters={"n_resamples": 300, "n_max": 50})
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    page = tmp_path / "01.html"
    found = inspect_page(page, tmp_path / "chk")
    _assert_renders(found, min_images=2)
    assert "0.000" not in found["table_text"]  # p-values written as 3.9e-14, never 0.000
    png = screenshot(page, tmp_path, height=4000)
    assert png.stat().st_size > 50_000
