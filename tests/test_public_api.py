"""The public namespace is exactly what __all__ says (httpx pattern)."""

import pkgutil

import pullbench
import pullbench.servers


def test_all_is_sorted_and_complete():
    public = sorted(
        n for n in dir(pullbench) if not n.startswith("_") and n not in {"annotations", "logging"}
    )
    # submodules: public on purpose (cli, servers, plots) or the layout's subpackages, which
    # become attributes once anything imports them (pullbench.stats, pullbench.experiment ...)
    subpackages = {m.name for m in pkgutil.iter_modules(pullbench.__path__)}
    assert {"experiment", "stats", "puller"} <= subpackages
    public = [n for n in public if n not in {"cli", "servers", "plots"} | subpackages]
    assert pullbench.__all__ == sorted(pullbench.__all__)
    assert set(public) <= set(pullbench.__all__) | {"cli", "servers", "plots"}
    for name in pullbench.__all__:
        assert hasattr(pullbench, name), name


def test_servers_namespace():
    assert "Misbehavior" in pullbench.servers.__all__
    for name in pullbench.servers.__all__:
        assert hasattr(pullbench.servers, name)


def test_plots_all_lists_every_plot_function():
    import inspect

    import pullbench.plots as plots

    defined = {n for n, f in vars(plots).items() if inspect.isfunction(f)
               and f.__module__ == plots.__name__ and not n.startswith("_")}
    assert defined == set(plots.__all__)
    assert plots.__all__ == sorted(plots.__all__)


def test_every_exception_lives_in_the_one_tree():
    """Every exception and warning class pullbench defines is in _errors.py and its docstring."""
    import ast
    from pathlib import Path

    import pullbench._errors as errors

    package = Path(pullbench.__file__).parent
    outside = []
    for path in package.rglob("*.py"):
        if path.name == "_errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Warning")) or b in errors.__all__
                       for b in bases):
                    outside.append(f"{path.relative_to(package)}:{node.lineno} {node.name}")
    assert outside == []
    # the names drawn in the docstring's trees: each "── Name" and each tree's root line
    drawn = set()
    lines = errors.__doc__.splitlines()
    for i, line in enumerate(lines):
        if "── " in line:
            drawn.add(line.split("── ", 1)[1].split()[0])
        elif line.strip().endswith("::") and i + 2 < len(lines):
            drawn.add(lines[i + 2].split()[0])
    assert drawn - {"RuntimeWarning"} == set(errors.__all__) | {"PullbenchError"}
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), Exception | Warning), name
