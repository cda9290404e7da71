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
