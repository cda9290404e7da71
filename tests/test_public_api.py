"""The public namespace is exactly what __all__ says (httpx pattern)."""

import pullbench
import pullbench.servers


def test_all_is_sorted_and_complete():
    public = sorted(
        n for n in dir(pullbench) if not n.startswith("_") and n not in {"annotations", "logging"}
    )
    # submodules that are public on purpose
    public = [n for n in public if n not in {"cli", "servers", "plots"}]
    assert pullbench.__all__ == sorted(pullbench.__all__)
    assert set(public) <= set(pullbench.__all__) | {"cli", "servers", "plots"}
    for name in pullbench.__all__:
        assert hasattr(pullbench, name), name


def test_servers_namespace():
    assert "Misbehavior" in pullbench.servers.__all__
    for name in pullbench.servers.__all__:
        assert hasattr(pullbench.servers, name)
