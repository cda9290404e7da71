"""The pull pipeline: content store, PullResult, unpack seam, CLI, and real input vs skopeo."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullbench import LayerResult, PullResult, StrategyError, get_strategy, pull
from pullbench.cli import main

PRESETS = [
    "go-iocopy",
    "pr48602",
    "pools-bufio32k",
    "containerd-1m",
    "requests-iter-content",
    "copyfileobj",
    "splice",
]


def test_content_store_layout_and_result(pushed_image, tmp_path):
    dest = tmp_path / "store"
    result = pull(pushed_image.reference, "go-iocopy", dest, plain_http=True, concurrency=2)
    assert isinstance(result, PullResult)
    assert result.reference == pushed_image.reference
    assert result.registry == pushed_image.registry.host
    assert result.manifest_digest == pushed_image.digest
    assert result.platform is None
    assert result.concurrency == 2
    assert result.params["read_size"] == 32 * 1024
    assert all(isinstance(layer, LayerResult) for layer in result.layers)
    # config first, then layers in manifest order
    manifest = json.loads((dest / "blobs" / "sha256" / pushed_image.digest[7:]).read_bytes())
    expected = [manifest["config"]["digest"], *[d["digest"] for d in manifest["layers"]]]
    assert [layer.digest for layer in result.layers] == expected
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pushed_image.digest
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.total_bytes = 0  # type: ignore[misc]
    assert result.throughput_mb_s == pytest.approx(result.total_bytes / result.duration_s / 1e6)


def test_to_row_is_flat(pushed_image, tmp_path):
    result = pull(pushed_image.reference, "pr48602", tmp_path / "s", plain_http=True)
    row = result.to_row()
    assert "layers" not in row
    assert row["layer_count"] == 4
    for key, value in row.items():
        assert isinstance(value, (str, int, float, type(None))), key
    hist = json.loads(row["write_size_hist"])
    assert {int(k): v for k, v in hist.items()} == result.write_size_hist
    assert json.loads(row["params"])["write_size"] == 512 * 1024
    json.dumps(result.to_dict())


def test_multiarch_platform_choice(pushed_multiarch_image, tmp_path):
    result = pull(
        pushed_multiarch_image.reference,
        "containerd-1m",
        tmp_path / "s",
        plain_http=True,
        platform="linux/arm64",
    )
    assert result.platform == "linux/arm64"
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    # index.json names what was pulled, so every blob it reaches is in the store (the index's
    # other platforms are not); the index's own bytes are stored too
    top = index["manifests"][0]
    assert top["digest"] == result.manifest_digest
    assert top["platform"] == {"architecture": "arm64", "os": "linux"}
    assert (tmp_path / "s" / "blobs" / "sha256" / result.manifest_digest[7:]).exists()
    assert (tmp_path / "s" / "blobs" / "sha256" / pushed_multiarch_image.digest[7:]).exists()


def test_unpack_seam_is_called_per_layer(pushed_image, tmp_path):
    calls = []

    def unpack(descriptor, path: Path) -> None:
        assert path.exists()
        calls.append((descriptor.digest, path.stat().st_size))

    result = pull(
        pushed_image.reference,
        "go-iocopy",
        tmp_path / "s",
        plain_http=True,
        unpack=unpack,
        concurrency=1,
    )
    assert [d for d, _ in calls] == [layer.digest for layer in result.layers[1:]]  # not the config
    assert [s for _, s in calls] == [layer.size_bytes for layer in result.layers[1:]]


def test_bad_arguments_fail_before_network(tmp_path):
    with pytest.raises(StrategyError, match="concurrency"):
        pull("127.0.0.1:1/a:b", "go-iocopy", tmp_path, concurrency=0)
    with pytest.raises(StrategyError, match="unknown strategy"):
        pull("127.0.0.1:1/a:b", "no-such", tmp_path)
    with pytest.raises(StrategyError, match="params= only applies"):
        pull("127.0.0.1:1/a:b", get_strategy("go-iocopy"), tmp_path, params={"read_size": 1})


# --------------------------------------------------------------------------- CLI


def test_cli_pull_json_and_text(pushed_image, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "pull",
            pushed_image.reference,
            "--strategy",
            "go-iocopy",
            "--param",
            "read_size=16Ki",
            "--plain-http",
            "--json",
            "--dest",
            str(tmp_path / "j"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["params"]["read_size"] == 16384
    assert data["write_count"] > 0
    res = runner.invoke(
        main,
        [
            "pull",
            pushed_image.reference,
            "-s",
            "containerd-1m",
            "--plain-http",
            "--dest",
            str(tmp_path / "t"),
        ],
    )
    assert res.exit_code == 0, res.output
    for word in ("bytes", "MB/s", "reads", "writes", "median"):
        assert word in res.output


def test_cli_pull_without_dest_leaves_no_store_behind(pushed_image, tmp_path, monkeypatch):
    """Without --dest the blobs go to a temporary store that is removed after the report."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    res = CliRunner().invoke(main, ["pull", pushed_image.reference, "--plain-http"])
    assert res.exit_code == 0, res.output
    assert "temporary store (removed" in res.output
    assert list(scratch.iterdir()) == []


def test_cli_errors(pushed_image, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main, ["pull", pushed_image.reference, "--strategy", "nope", "--plain-http"]
    )
    assert res.exit_code == 2
    assert "unknown strategy 'nope'" in res.output
    res = runner.invoke(
        main, ["pull", pushed_image.reference, "--param", "read_size=lots", "--plain-http"]
    )
    assert res.exit_code == 2
    assert "is not a size; accepted" in res.output
    res = runner.invoke(main, ["pull", pushed_image.reference, "--param", "oops", "--plain-http"])
    assert res.exit_code == 2
    res = runner.invoke(
        main,
        [
            "pull",
            f"{pushed_image.registry.host}/fixtures/absent:x",
            "--plain-http",
            "--dest",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 1
    assert "ImageNotFound" in res.output
    assert "fixtures/absent:x" in res.output


def test_cli_strategies_lists_presets():
    res = CliRunner().invoke(main, ["strategies"])
    assert res.exit_code == 0
    for name in PRESETS:
        assert name in res.output
    assert "containerd/containerd:core/content/helpers.go" in res.output
    data = json.loads(CliRunner().invoke(main, ["strategies", "--json"]).output)
    assert {d["name"] for d in data} >= set(PRESETS)


# --------------------------------------------------------------------------- real input


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI")
        pytest.skip(f"{tool} not installed")
    return path


def _skopeo_oci(reference: str, out: Path) -> dict[str, bytes]:
    skopeo = _need("skopeo")
    subprocess.run(
        [
            skopeo,
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{reference}",
            f"oci:{out}:fetched",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.name: p.read_bytes() for p in (out / "blobs" / "sha256").iterdir()}


def _assert_matches_skopeo(result: PullResult, dest: Path, skopeo_blobs: dict[str, bytes]) -> None:
    """The pull stored exactly skopeo's blobs, both ways: the image manifest, the config and
    every layer, byte for byte; nothing missing, nothing extra."""
    ours = {p.name: p.read_bytes() for p in (dest / "blobs" / "sha256").iterdir()}
    missing, extra = sorted(set(skopeo_blobs) - set(ours)), sorted(set(ours) - set(skopeo_blobs))
    assert (missing, extra) == ([], []), "blobs (missing, extra) against skopeo copy"
    for name, data in skopeo_blobs.items():
        assert ours[name] == data, name
    # and they are the blobs of this image: its manifest plus everything the pull reported
    reported = {result.manifest_digest[7:], *(layer.digest[7:] for layer in result.layers)}
    assert reported == set(ours)


@pytest.mark.peers
def test_every_preset_matches_skopeo_embedded_and_distribution(
    pushed_image, distribution_pushed_image, tmp_path
):
    for image in (pushed_image, distribution_pushed_image):
        skopeo_blobs = _skopeo_oci(image.reference, tmp_path / f"skopeo-{image.registry.kind}")
        for name in PRESETS:
            dest = tmp_path / f"{image.registry.kind}-{name}"
            result = pull(image.reference, name, dest, plain_http=True)
            _assert_matches_skopeo(result, dest, skopeo_blobs)


@pytest.fixture(scope="module")
def debian_minbase():
    from pullbench import build_image
    from pullbench._errors import ImageBuildError

    try:
        return build_image("debian-minbase")
    except ImageBuildError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"debian-minbase cannot be built here: {exc}")


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.root
def test_debian_minbase_every_preset_matches_skopeo(
    debian_minbase, embedded_registry, distribution_registry, tmp_path
):
    from pullbench import push_image

    for reg in (embedded_registry, distribution_registry):
        reference = f"{reg.host}/fixtures/debian:minbase"
        push_image(debian_minbase, reference)
        skopeo_blobs = _skopeo_oci(reference, tmp_path / f"skopeo-{reg.kind}")
        for name in PRESETS:
            dest = tmp_path / f"{reg.kind}-{name}"
            result = pull(reference, name, dest, plain_http=True)
            assert result.total_bytes > 10 * 1024 * 1024
            _assert_matches_skopeo(result, dest, skopeo_blobs)
            shutil.rmtree(dest)
