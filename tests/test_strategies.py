"""Copy strategies: registry of presets, parameter validation, custom strategies, real copies."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from pullbench import (
    CopyStrategy,
    RegistryClient,
    StrategyError,
    get_strategy,
    list_strategies,
    pull,
    register_strategy,
)
from pullbench.puller.strategies._registry import SocketCopy, parse_strategy_param

PRESETS = [
    "go-iocopy",
    "pr48602",
    "pools-bufio32k",
    "containerd-1m",
    "requests-iter-content",
    "copyfileobj",
    "splice",
]
MiB = 1024 * 1024


def _stored(dest: Path, digest: str) -> bytes:
    return (dest / "blobs" / "sha256" / digest[7:]).read_bytes()


def _layout_blob(layout, digest: str) -> bytes:
    return (Path(layout.path) / "blobs" / "sha256" / digest[7:]).read_bytes()


def test_presets_are_listed_with_sources():
    infos = {i.name: i for i in list_strategies()}
    for name in PRESETS:
        assert name in infos, name
        assert infos[name].description
    assert "moby/moby:distribution/pull_v2.go" in infos["go-iocopy"].mirrors
    assert "golang/go:src/io/io.go" in infos["go-iocopy"].mirrors
    assert "containerd/containerd:core/content/helpers.go" in infos["containerd-1m"].mirrors
    assert "moby/moby#48602" in infos["pr48602"].mirrors
    assert infos["requests-iter-content"].params["chunk_size"] == 8192
    assert infos["go-iocopy"].params["read_size"] == 32 * 1024
    assert infos["pr48602"].params == {
        "read_path": "readinto",
        "read_size": 512 * 1024,
        "write_mode": "bufio",
        "write_size": 512 * 1024,
        "hash_mode": "inline",
    }
    assert infos["containerd-1m"].params["write_mode"] == "fill"


def test_get_strategy_overrides_and_validation():
    s = get_strategy("go-iocopy", read_size=16384)
    assert s.name == "go-iocopy"
    assert s.params["read_size"] == 16384
    assert s.params["write_mode"] == "per-read"
    with pytest.raises(StrategyError, match=r"unknown strategy 'nope'; registered: .*go-iocopy"):
        get_strategy("nope")
    with pytest.raises(StrategyError, match=r"no parameter 'chunk'; valid: chunk_size, hash_mode"):
        get_strategy("requests-iter-content", chunk=1)
    with pytest.raises(
        StrategyError, match="read_path='socket' is not one of readinto, read1, recv_into"
    ):
        get_strategy("go-iocopy", read_path="socket")
    with pytest.raises(StrategyError, match="read_size=0 must be a positive number of bytes"):
        get_strategy("go-iocopy", read_size=0)
    with pytest.raises(StrategyError, match="must be an integer number of bytes"):
        get_strategy("go-iocopy", read_size=1.5)
    with pytest.raises(StrategyError, match="hash_mode"):
        get_strategy("requests-iter-content", hash_mode="later")


def test_parse_param_value():
    assert parse_strategy_param("go-iocopy", "read_size", "512Ki") == 512 * 1024
    assert parse_strategy_param("go-iocopy", "read_size", "1Mi") == MiB
    assert parse_strategy_param("go-iocopy", "read_size", "0x4000") == 16384
    assert parse_strategy_param("go-iocopy", "hash_mode", "thread") == "thread"
    with pytest.raises(StrategyError, match="'lots' is not a size; accepted: 32768, 0x8000"):
        parse_strategy_param("go-iocopy", "read_size", "lots")
    with pytest.raises(StrategyError, match="no parameter 'size'"):
        parse_strategy_param("go-iocopy", "size", "1")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_stores_identical_bytes(pushed_image, tmp_path, name):
    result = pull(pushed_image.reference, name, tmp_path / "store", plain_http=True)
    assert result.strategy == name
    assert len(result.layers) == 4  # config + 3 layers
    for layer in result.layers:
        assert _stored(tmp_path / "store", layer.digest) == _layout_blob(
            pushed_image.layout, layer.digest
        )
    assert result.total_bytes == sum(layer.size_bytes for layer in result.layers)
    assert result.read_count > 0
    assert result.write_count > 0
    leftovers = [
        p for p in (tmp_path / "store" / "blobs" / "sha256").iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    "params",
    [
        {"read_path": "read1"},
        {"read_path": "recv_into"},
        {"hash_mode": "thread"},
        {"hash_mode": "after"},
        {"write_mode": "fill", "write_size": 1 << 20, "read_size": 1 << 20, "hash_mode": "on-read"},
        {"hash_mode": "on-read"},
        {
            "read_path": "recv_into",
            "write_mode": "bufio",
            "write_size": 100_000,
            "hash_mode": "thread",
        },
        {
            "read_path": "read1",
            "write_mode": "fill",
            "write_size": 300_000,
            "read_size": 7000,
            "hash_mode": "thread",
        },
        {"read_size": 1000, "write_mode": "bufio", "write_size": 4096},
    ],
)
def test_tunable_dimensions_copy_correctly(pushed_image, tmp_path, params):
    result = pull(
        pushed_image.reference, get_strategy("tunable", **params), tmp_path / "s", plain_http=True
    )
    for layer in result.layers:
        assert _stored(tmp_path / "s", layer.digest) == _layout_blob(
            pushed_image.layout, layer.digest
        )
    read_size = params.get("read_size", 32 * 1024)
    assert max(result.read_size_hist) <= max(read_size, 8192) * 2  # buckets round up
    if params.get("write_mode") == "fill":
        # every write is a full buffer except each blob's last one
        full = sum(layer.size_bytes // params["write_size"] for layer in result.layers)
        assert result.write_count <= full + len(result.layers)
        for layer in result.layers:
            assert layer.write_count == -(-layer.size_bytes // params["write_size"])


@pytest.mark.parametrize("name", ["requests-iter-content", "copyfileobj"])
def test_iter_content_and_copyfileobj_read_exact_chunks(pushed_image, tmp_path, name):
    chunk = 4096
    result = pull(
        pushed_image.reference,
        get_strategy(name, chunk_size=chunk),
        tmp_path / "s",
        plain_http=True,
    )
    for layer in result.layers:
        # urllib3 read(amt) accumulates: all reads are exactly `chunk` except the last of each blob
        full, rest = divmod(layer.size_bytes, chunk)
        assert layer.read_count == full + (1 if rest else 0)
        assert layer.write_count == layer.read_count


def test_loopback_go_iocopy_small_writes_vs_containerd_1m(pushed_image, tmp_path):
    """The seed's mechanism: io.Copy gives many ≤32 KiB writes, containerd writes 1 MiB."""
    go = pull(pushed_image.reference, "go-iocopy", tmp_path / "go", plain_http=True)
    ctd = pull(pushed_image.reference, "containerd-1m", tmp_path / "ctd", plain_http=True)
    assert go.total_bytes == ctd.total_bytes
    assert max(go.write_size_hist) <= 32 * 1024
    assert go.write_count >= go.total_bytes // (32 * 1024)
    # containerd: one 1 MiB write per full MiB of each blob, then one tail write per blob
    full = sum(layer.size_bytes // MiB for layer in ctd.layers)
    assert ctd.write_size_hist.get(MiB, 0) >= full
    assert max(ctd.write_size_hist) == MiB
    # ceil(size / 1 MiB) writes per blob: every write but the last is a full MiB
    assert all(layer.write_count == -(-layer.size_bytes // MiB) for layer in ctd.layers)
    assert ctd.write_count <= full + len(ctd.layers)
    assert go.write_count > 10 * ctd.write_count
    assert ctd.median_write_bytes > 8 * go.median_write_bytes
    assert go.median_write_bytes <= 32 * 1024


def test_register_custom_strategy_without_touching_the_puller(pushed_image, tmp_path):
    class HalfMeg(CopyStrategy):
        """Reads 512 KiB with urllib3 and writes each chunk twice as two halves."""

        name = "test-halves"
        mirrors = "nothing (test)"
        defaults: ClassVar[dict[str, int]] = {"chunk_size": 512 * 1024}

        def buffer_bytes(self) -> int:
            return self.params["chunk_size"]

        def transfer(self, response, fd, meter, *, limit, hasher):
            for chunk in response.raw.stream(self.params["chunk_size"], decode_content=False):
                meter.read(len(chunk))
                hasher.update(chunk)
                half = len(chunk) // 2
                meter.write(fd, chunk[:half])
                meter.write(fd, chunk[half:])
            return hasher

    register_strategy(HalfMeg, replace=True)
    assert "test-halves" in {i.name for i in list_strategies()}
    result = pull(
        pushed_image.reference,
        "test-halves",
        tmp_path / "s",
        plain_http=True,
        params={"chunk_size": 256 * 1024},
    )
    assert result.strategy == "test-halves"
    assert result.params == {"chunk_size": 256 * 1024}
    assert result.write_count == 2 * result.read_count - sum(
        1 for layer in result.layers if layer.size_bytes == 1
    )
    for layer in result.layers:
        assert _stored(tmp_path / "s", layer.digest) == _layout_blob(
            pushed_image.layout, layer.digest
        )
    with pytest.raises(StrategyError, match="already registered"):
        register_strategy(HalfMeg)

    # a plain factory works too
    def factory(read_size: int = 65536) -> CopyStrategy:
        return SocketCopy(read_size=read_size, write_mode="fill", write_size=read_size)

    register_strategy(factory, "test-fill64k", mirrors="test", replace=True)
    assert get_strategy("test-fill64k", read_size=8192).params["write_size"] == 8192
    with pytest.raises(StrategyError, match="valid: read_size"):
        get_strategy("test-fill64k", chunk=1)
    with pytest.raises(StrategyError, match="needs a name"):
        register_strategy(factory)


def test_copy_cleans_up_and_rejects_bad_digest(pushed_image, tmp_path):
    """CopyStrategy.copy directly: a wrong expected digest leaves nothing behind."""
    from pullbench import DigestMismatch

    with RegistryClient(pushed_image.registry.host, plain_http=True) as client:
        manifest = client.get_manifest(pushed_image.repository, pushed_image.tag)
        layer = manifest.layers[0]
        resp = client.open_blob(pushed_image.repository, layer)
        dest = tmp_path / "blobs" / "sha256" / ("f" * 64)
        with pytest.raises(DigestMismatch):
            get_strategy("go-iocopy").copy(
                resp, dest, expected_size=layer.size_bytes, expected_digest="sha256:" + "f" * 64
            )
        assert list(dest.parent.iterdir()) == []
        resp = client.open_blob(pushed_image.repository, layer)
        stats = get_strategy("pr48602").copy(
            resp,
            tmp_path / "x" / "blob",
            expected_size=layer.size_bytes,
            expected_digest=layer.digest,
        )
        assert stats.size_bytes == layer.size_bytes
        assert stats.write_count >= stats.size_bytes // (512 * 1024)
        assert max(stats.write_sizes) <= 512 * 1024
        assert (tmp_path / "x" / "blob").stat().st_size == layer.size_bytes


@pytest.mark.parametrize("name", ["go-iocopy", "pr48602", "containerd-1m", "copyfileobj"])
def test_copy_with_null_meter_counts_nothing_and_verifies(pushed_image, tmp_path, name):
    """A NullMeter (probes=False) turns off counting, not verification."""
    from pullbench import DigestMismatch
    from pullbench.puller._probes import NullMeter

    with RegistryClient(pushed_image.registry.host, plain_http=True) as client:
        manifest = client.get_manifest(pushed_image.repository, pushed_image.tag)
        layer = max(manifest.layers, key=lambda d: d.size_bytes)
        threaded = get_strategy(name, hash_mode="thread") if name != "copyfileobj" else None
        for strategy in filter(None, (get_strategy(name), threaded)):
            meter = NullMeter()
            out = tmp_path / strategy.params.get("hash_mode", "x") / "blob"
            got = strategy.copy(
                client.open_blob(pushed_image.repository, layer),
                out,
                expected_size=layer.size_bytes,
                expected_digest=layer.digest,
                probe=meter,
            )
            assert got.read_sizes is None
            assert got.write_sizes is None
            assert got.helper is None
            assert got.read_count is None
            assert got.write_size_hist is None
            assert got.median_write_bytes is None
            assert meter.reads == {}
            assert meter.writes == {}
            assert got.buffer_bytes == strategy.buffer_bytes() > 0
            assert out.read_bytes() == _layout_blob(pushed_image.layout, layer.digest)
        with pytest.raises(DigestMismatch):
            get_strategy(name).copy(
                client.open_blob(pushed_image.repository, layer),
                tmp_path / "bad" / "blob",
                expected_size=layer.size_bytes,
                expected_digest="sha256:" + "e" * 64,
                probe=NullMeter(),
            )
        assert list((tmp_path / "bad").iterdir()) == []


def test_splice_refuses_tls(tmp_path, small_image):
    from pullbench import push_image
    from pullbench.servers import EmbeddedRegistry
    from pullbench.servers._tls import make_tls_material

    material = make_tls_material(tmp_path / "tls")
    with EmbeddedRegistry(tmp_path / "reg", ssl_context=material.server_context()) as reg:
        push_image(
            small_image, f"{reg.host}/f/s:latest", plain_http=False, ca_bundle=material.ca_bundle
        )
        with pytest.raises(StrategyError, match=r"splice.*TLS"):
            pull(f"{reg.host}/f/s:latest", "splice", tmp_path / "s", ca_bundle=material.ca_bundle)
        # short reads over TLS are at most one record (16 KiB of plaintext)
        result = pull(
            f"{reg.host}/f/s:latest",
            get_strategy("go-iocopy", read_size=1024 * 1024),
            tmp_path / "g",
            ca_bundle=material.ca_bundle,
        )
        assert max(result.read_size_hist) <= 16384
    assert not any(p.name.startswith(".") for p in (tmp_path / "s" / "blobs" / "sha256").iterdir())


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("go-iocopy", {}),
        ("go-iocopy", {"read_path": "read1"}),
        ("go-iocopy", {"read_path": "recv_into"}),
        ("containerd-1m", {}),
        ("requests-iter-content", {}),
        ("copyfileobj", {}),
        ("splice", {}),
    ],
)
def test_connection_is_reused_across_blobs(pushed_image, tmp_path, name, params):
    """Reading below urllib3 still hands the keep-alive connection back to its pool."""
    import requests

    with requests.Session() as session:
        pull(
            pushed_image.reference,
            get_strategy(name, **params),
            tmp_path / "s",
            plain_http=True,
            session=session,
            concurrency=1,
        )
        pools = session.adapters["http://"].poolmanager.pools
        counts = [pool.num_connections for pool in pools._container.values()]
    assert counts == [1]  # manifest + 4 blobs over one connection
