"""The package layout keeps its rules: no import cycles, no upward imports, pure statistics.

Every import statement in ``pullbench/`` counts, including imports inside functions (a lazy
import is still a dependency, and a lazy cycle is still a cycle); only the facade's
``if TYPE_CHECKING:`` block is skipped (it exists for type checkers, not at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pullbench"

#: subpackage -> the subpackages (and top-level modules) it must never import
FORBIDDEN = {
    "servers": {"experiment", "puller", "cli", "arms", "stats", "plots"},
    "puller": {"experiment", "servers", "cli", "arms", "stats", "plots", "images"},
    "images": {"experiment", "servers", "cli", "arms", "stats", "plots"},
    "stats": {"experiment", "servers", "cli", "arms", "puller", "images", "plots"},
    "arms": {"experiment", "cli", "plots"},
    "experiment": {"cli"},
    "plots": {"cli", "experiment", "servers", "puller", "arms", "images"},
}
#: what statistics must not touch: HTTP, sockets, subprocesses, files
IMPURE_MODULES = {"requests", "urllib3", "http", "socket", "subprocess", "shutil", "pathlib",
                  "tempfile", "os", "io", "multiprocessing"}
IMPURE_CALLS = {"open"}


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, is_pkg = _module_name(path)
        out[name] = (path, is_pkg)
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING") or (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")


def _walk_imports(tree: ast.AST):
    """Import nodes, skipping ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The pullbench modules ``module`` imports (submodules named in ``from X import y`` too)."""
    path, is_pkg = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in _walk_imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            target = _resolve(module, is_pkg, node)
            targets = [target]
            targets += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
        for target in targets:
            if target == "pullbench" or target.startswith("pullbench."):
                while target not in MODULES and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in MODULES and target != module:
                    found.add(target)
    return found


def external_imports_of(module: str) -> set[str]:
    path, _ = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in _walk_imports(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_lazy_and_relative_imports():
    # guards the guard: a function-level relative import and a submodule named in `from . import`
    assert "pullbench.puller._client" in imports_of("pullbench.experiment._endpoints")
    assert "pullbench.cli._bench" in imports_of("pullbench.cli")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer):
    bad = []
    for module, targets in _graph().items():
        if _layer(module) != layer:
            continue
        for target in sorted(targets):
            if _layer(target) in FORBIDDEN[layer]:
                bad.append(f"{module} imports {target}")
    assert bad == []


def test_nothing_outside_the_cli_imports_it():
    bad = [f"{m} imports {t}" for m, ts in _graph().items() if _layer(m) != "cli"
           for t in ts if _layer(t) == "cli"]
    assert bad == []


def test_statistics_do_no_io():
    for module in MODULES:
        if _layer(module) != "stats":
            continue
        impure = external_imports_of(module) & IMPURE_MODULES
        assert impure == set(), f"{module} imports {impure}"
        tree = ast.parse(MODULES[module][0].read_text())
        calls = {n.func.id for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert calls & IMPURE_CALLS == set(), f"{module} calls {calls & IMPURE_CALLS}"


def test_the_facade_table_and_type_checking_block_agree():
    """Every lazily exported name is also imported for type checkers, from the same module."""
    import pullbench

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    checked: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for sub in node.body:
                if isinstance(sub, ast.ImportFrom) and sub.module:
                    for alias in sub.names:
                        checked[alias.name] = "." + sub.module
    assert checked == dict(pullbench._LAZY)
