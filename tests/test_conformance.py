"""The official OCI distribution-spec conformance suite (v1.1.1) against the embedded registry.

The suite is a prebuilt Go test binary with a ``run`` script beside it (see its README). It is
found through ``PULLBENCH_OCI_CONFORMANCE`` (the ``run`` script, or the folder holding it), else in
``shared/tools/oci-conformance/`` beside the checkout or one of its parents. Missing: skipped,
except under ``CI=true``, where the test fails.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pullbench.servers import EmbeddedRegistry

_SUITE = Path("shared") / "tools" / "oci-conformance" / "run"


def _find_suite() -> Path | None:
    explicit = os.environ.get("PULLBENCH_OCI_CONFORMANCE")
    if explicit:
        path = Path(explicit)
        return path / "run" if path.is_dir() else path
    for parent in Path(__file__).resolve().parents:
        if (parent / _SUITE).is_file():
            return parent / _SUITE
    return None


@pytest.fixture(scope="module")
def conformance_run() -> Path:
    path = _find_suite()
    if path is None or not os.access(path, os.X_OK):
        where = path or f"PULLBENCH_OCI_CONFORMANCE, or {_SUITE} beside the checkout"
        if os.environ.get("CI"):
            pytest.fail(f"the OCI conformance suite is required in CI but was not found ({where})")
        pytest.skip(f"OCI conformance suite not found ({where})")
    return path


def _results(junit: Path) -> dict[str, str]:
    """``{test name: "passed" | "failed: <message>" | "skipped"}`` from the suite's junit.xml."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if case.find("skipped") is not None:
            out[case.get("name", "")] = "skipped"
        elif failure is not None:
            text = " ".join(filter(None, [failure.get("message"), failure.text]))
            out[case.get("name", "")] = "failed: " + " ".join(text.split())[:600]
        else:
            out[case.get("name", "")] = "passed"
    return out


def test_embedded_registry_passes_the_oci_conformance_suite(conformance_run, tmp_path):
    out = tmp_path / "report"
    with EmbeddedRegistry(tmp_path / "registry") as reg:
        proc = subprocess.run([str(conformance_run), reg.url], env={**os.environ, "OUT": str(out)},
                              capture_output=True, text=True, timeout=300, check=False)
    junit = out / "junit.xml"
    assert junit.is_file(), proc.stdout + proc.stderr
    results = _results(junit)
    failed = {name: r for name, r in results.items() if r.startswith("failed")}
    assert failed == {}
    passed = [name for name, r in results.items() if r == "passed"]
    # every workflow ran (pull, push, content discovery incl. referrers, content management)
    for workflow in ("Pull", "Push", "Content Discovery", "Content Management"):
        assert any(f"Conformance Tests {workflow} " in name for name in passed), workflow
    referrers = [name for name in passed if "listing references" in name]
    assert len(referrers) >= 4
    assert any("References setup" in name for name in passed)  # the OCI-Subject checks
