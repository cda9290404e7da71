"""Shared test fixtures. Each area keeps its fixtures inside its own marked section."""

from __future__ import annotations

import os
import shutil as _shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass as _dataclass
from pathlib import Path as _Path

import pytest
import requests

# The machine sets REQUESTS_CA_BUNDLE; tests that care set or unset it themselves.


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def is_root() -> bool:
    return _is_root()


# --- section: shared test helpers ---
@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A plain requests session that ignores proxy and CA settings from the environment."""
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture
def process_running() -> Callable[[int], bool]:
    """``process_running(pid)``: the process exists and is not a zombie (a container's pid 1
    may not reap orphans)."""
    from pullbench.servers._proxy import proc_stat_fields

    def running(pid: int) -> bool:
        try:
            return proc_stat_fields(pid)[0] != "Z"
        except OSError:
            return False

    return running


# --- end section: shared test helpers ---

# --- section: registries and images (issue 2) ---
# Fixtures (all real servers on 127.0.0.1):
#   embedded_registry       session  EmbeddedRegistry (shared: never set .misbehavior on it)
#   distribution_registry   session  DistributionRegistry (docker-registry 2.8.2); skipped only
#                                    when the binary is missing and CI is not set
#   small_image             session  ImageLayout of catalog "synthetic-small" (3 layers, 3.5 MiB)
#   multiarch_image         session  ImageLayout of catalog "multiarch-small" (amd64 + arm64 index)
#   pushed_image            session  PushedImage: small_image in embedded_registry
#                                    at fixtures/small:latest
#   pushed_multiarch_image  session  PushedImage: multiarch_image in embedded_registry
#                                    at fixtures/multi:latest
#   distribution_pushed_image session PushedImage: small_image in distribution_registry
#   fresh_pushed_image      function PushedImage in a private EmbeddedRegistry: set
#                                    .registry.misbehavior freely (faults, latency)


@_dataclass(frozen=True, slots=True)
class PushedImage:
    """An image pushed into a running registry (test fixture record)."""

    registry: object  # EmbeddedRegistry | DistributionRegistry
    repository: str  # "fixtures/small"
    tag: str
    digest: str  # top manifest digest
    layout: object  # pullbench.ImageLayout

    @property
    def reference(self) -> str:
        """``127.0.0.1:PORT/fixtures/small:latest``."""
        return f"{self.registry.host}/{self.repository}:{self.tag}"  # type: ignore[attr-defined]


def _tool_or_skip(name: str) -> str:
    path = _shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but not installed")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="session")
def embedded_registry(tmp_path_factory: pytest.TempPathFactory):
    from pullbench.servers import EmbeddedRegistry

    with EmbeddedRegistry(tmp_path_factory.mktemp("embedded-registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def distribution_registry(tmp_path_factory: pytest.TempPathFactory):
    from pullbench.servers import DistributionRegistry

    if _shutil.which("docker-registry") is None and _shutil.which("registry") is None:
        _tool_or_skip("docker-registry")
    with DistributionRegistry(tmp_path_factory.mktemp("distribution-registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def small_image():
    from pullbench import build_image

    return build_image("synthetic-small")


@pytest.fixture(scope="session")
def multiarch_image():
    from pullbench import build_image

    return build_image("multiarch-small")


@pytest.fixture(scope="session")
def pushed_image(embedded_registry, small_image) -> PushedImage:
    from pullbench import push_image

    digest = push_image(small_image, f"{embedded_registry.host}/fixtures/small:latest")
    return PushedImage(embedded_registry, "fixtures/small", "latest", digest, small_image)


@pytest.fixture(scope="session")
def pushed_multiarch_image(embedded_registry, multiarch_image) -> PushedImage:
    from pullbench import push_image

    digest = push_image(multiarch_image, f"{embedded_registry.host}/fixtures/multi:latest")
    return PushedImage(embedded_registry, "fixtures/multi", "latest", digest, multiarch_image)


@pytest.fixture(scope="session")
def distribution_pushed_image(distribution_registry, small_image) -> PushedImage:
    from pullbench import push_image

    digest = push_image(small_image, f"{distribution_registry.host}/fixtures/small:latest")
    return PushedImage(distribution_registry, "fixtures/small", "latest", digest, small_image)


@pytest.fixture
def fresh_pushed_image(tmp_path: _Path, small_image):
    from pullbench import push_image
    from pullbench.servers import EmbeddedRegistry

    with EmbeddedRegistry(tmp_path / "registry") as reg:
        digest = push_image(small_image, f"{reg.host}/fixtures/small:latest")
        yield PushedImage(reg, "fixtures/small", "latest", digest, small_image)


# --- end section: registries and images ---

# --- section: puller (issue 3) ---
# --- end section: puller ---

# --- section: experiments (issue 5) ---
# --- end section: experiments ---

# --- section: remote (issue 6) ---
# Fixtures (real servers on loopback; 127.0.0.2 is "another host" for redirects and realms):
#   tls_material         session  pullbench.servers.TLSMaterial (trustme CA + server cert)
#   distribution_binary  session  path of docker-registry (skip only when missing and CI unset)
#   scan_for_secrets     function returns a checker: no password / Basic value / JWT in text


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory):
    from pullbench.servers import make_tls_material

    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def distribution_binary() -> str:
    import shutil

    path = shutil.which("docker-registry") or shutil.which("registry")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("docker-registry is required in CI but not installed")
        pytest.skip("docker-registry not installed")
    return path


@pytest.fixture
def scan_for_secrets():
    import base64
    import re

    def check(text: str, *secrets: str) -> None:
        for secret in secrets:
            assert secret not in text, "a credential leaked"
            pair = base64.b64encode(secret.encode()).decode()
            assert pair not in text, "a Basic credential leaked"
        # a JWT (header.payload.signature, base64url of '{"') must never be written anywhere
        jwt_like = r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."
        assert not re.search(jwt_like, text), "a token leaked"

    return check


# --- end section: remote ---

# --- section: real pullers as arms (issue 11) ---
# Fixtures (real servers on 127.0.0.1, real skopeo/ctr/containerd/dockerd/strace):
#   need_tool            session   need_tool(path_or_name, package) -> path; skip when missing,
#                                  fail under CI
#   arm_targets          session   {"plain": PullTarget, "tls": PullTarget}: synthetic-small in
#                                  the shared embedded registry / in a TLS embedded registry


def _need_tool(binary: str, package: str) -> str:
    found = binary if os.sep in binary and os.access(binary, os.X_OK) else _shutil.which(binary)
    if found is None:
        message = f"{binary} (Debian package {package}) is required"
        if os.environ.get("CI"):
            pytest.fail(f"{message} in CI but not installed (.ci/install-test-deps)")
        pytest.skip(f"{message}: not installed")
    return found


@pytest.fixture(scope="session")
def need_tool() -> Callable[[str, str], str]:
    return _need_tool


@pytest.fixture(scope="session")
def arm_targets(pushed_image, small_image, tls_material, tmp_path_factory):
    from pullbench import push_image
    from pullbench.arms import PullTarget
    from pullbench.servers import EmbeddedRegistry

    size = small_image.total_size_bytes
    plain = PullTarget.from_reference(pushed_image.reference, digest=str(pushed_image.digest),
                                      plain_http=True, size_bytes=size)
    with EmbeddedRegistry(tmp_path_factory.mktemp("tls-registry"),
                          ssl_context=tls_material.server_context()) as reg:
        ref = f"{reg.host}/fixtures/small:latest"
        digest = push_image(small_image, ref, plain_http=False,
                            ca_bundle=str(tls_material.ca_bundle))
        tls = PullTarget.from_reference(ref, digest=str(digest), plain_http=False,
                                        ca_bundle=str(tls_material.ca_bundle), size_bytes=size)
        yield {"plain": plain, "tls": tls}


# --- end section: real pullers as arms ---

# --- section: test hygiene ---
# Tests never write to the user's home: build_image()'s default cache ($PULLBENCH_CACHE/images,
# else ~/.cache/pullbench/images) is pointed, for this session and every subprocess it starts
# (CLI, notebooks, workers), at <rootdir>/.pytest_cache/d/pullbench-cache unless PULLBENCH_CACHE
# is already set. .pytest_cache is gitignored and survives between runs, so the expensive
# fixture images (debian-minbase) are built once per checkout.
_SET_PULLBENCH_CACHE = pytest.StashKey[bool]()


def _point_jupyter_at_this_python(config: pytest.Config) -> None:
    """Notebooks run in kernel "python3": make that this interpreter, whatever the user has.

    A kernelspec under JUPYTER_PATH wins over the user's and the system's, so a stale
    ``~/.local/share/jupyter/kernels/python3`` (e.g. one left by a deleted virtualenv) cannot
    break the notebook tests, and nothing is written to the home folder.
    """
    import json
    import sys

    spec_dir = config.rootpath / ".pytest_cache" / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    jupyter_path = str(spec_dir.parents[1])
    rest = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = jupyter_path + (os.pathsep + rest if rest else "")


def pytest_configure(config: pytest.Config) -> None:
    _point_jupyter_at_this_python(config)
    if os.environ.get("PULLBENCH_CACHE"):
        return
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        folder = cache.mkdir("pullbench-cache")  # <rootdir>/.pytest_cache/d/pullbench-cache
    else:
        folder = config.rootpath / ".pytest_cache" / "pullbench-cache"
        folder.mkdir(parents=True, exist_ok=True)
    config.stash[_SET_PULLBENCH_CACHE] = True
    os.environ["PULLBENCH_CACHE"] = str(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_SET_PULLBENCH_CACHE, False):
        os.environ.pop("PULLBENCH_CACHE", None)


# --- end section: test hygiene ---
