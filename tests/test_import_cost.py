"""``import pullbench`` and the CLI stay cheap (style guide rule 12).

Each check runs in a fresh interpreter: this test session has long since imported pandas & co.
No absolute times are asserted (they depend on the machine); what is asserted is that the heavy
libraries are not imported at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("scipy", "pandas", "statsmodels", "matplotlib", "seaborn", "pyarrow")


def _heavy_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the heavy top-level packages it left imported."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", ["import pullbench", "import pullbench.cli",
                                       "import pullbench.servers"])
def test_import_does_not_pull_in_heavy_libraries(statement):
    assert _heavy_after(statement) == []


def test_every_help_page_is_cheap():
    """``pullbench --help`` and ``pullbench <cmd> [<sub>] --help`` for every command: exit 0,
    and none of them imports a heavy library."""
    heavy = _heavy_after("""
        import click
        from click.testing import CliRunner

        from pullbench.cli import main

        def paths(cmd, path):
            yield path
            if isinstance(cmd, click.Group):
                for name, sub in cmd.commands.items():
                    yield from paths(sub, [*path, name])

        runner = CliRunner()
        seen = 0
        for path in paths(main, []):
            result = runner.invoke(main, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
            assert "Usage:" in result.output, path
            seen += 1
        assert seen > 10, seen
    """)
    assert heavy == []


def test_console_script_help_exits_0():
    script = shutil.which("pullbench")
    command = [script] if script else [sys.executable, "-c",
                                       "from pullbench.cli import main; main()"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_every_public_name_resolves_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json
        import pullbench

        missing = [n for n in pullbench.__all__ if getattr(pullbench, n, None) is None]
        print(json.dumps({"missing": missing, "all": pullbench.__all__,
                          "dir": sorted(set(pullbench.__all__) - set(dir(pullbench)))}))
    """)], capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["missing"] == []
    assert report["all"] == sorted(report["all"])
    assert report["dir"] == []  # dir(pullbench) lists the lazy names before they are used


def test_lazy_names_are_the_defining_modules_objects():
    import importlib

    import pullbench

    for name, module in pullbench._LAZY.items():
        assert name in pullbench.__all__, name
        assert getattr(pullbench, name) is getattr(importlib.import_module(module, "pullbench"),
                                                   name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        pullbench.no_such_name  # noqa: B018


def test_network_profiles_are_registered_without_an_explicit_call():
    """The shaping-proxy profiles work in specs although ``import pullbench`` no longer imports
    the proxy: the endpoints module registers them when it is first imported."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json
        import pullbench

        print(json.dumps(pullbench.network_profiles()))
    """)], capture_output=True, text=True, check=True, timeout=120)
    profiles = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"loopback", "passthrough", "lan-1g", "wan-200m", "wan-50m"} <= set(profiles)
