"""Layer decompression: every strategy gives the same bytes and diff_id; damaged or hostile
streams end in the documented error (truncation, corruption, trailing garbage, bombs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import zlib

import numpy as np
import pytest
import zstandard

from pullbench._errors import (
    DecompressionBomb,
    DecompressionError,
    DiffIdMismatch,
    StrategyError,
)
from pullbench.puller._decompress import (
    DecompressionLimits,
    codec_of,
    get_decompressor,
    list_decompressors,
    open_layer,
)

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"
DECOMPRESSORS = list(list_decompressors())
MiB = 1 << 20


@pytest.fixture(scope="module")
def payload() -> bytes:
    """Half random, half text-like: 6 MiB (several output steps, mixed ratios)."""
    rng = np.random.default_rng(7)
    words = b" ".join(rng.choice([b"def", b"return", b"layer", b"digest", b"self"], 400_000))
    return rng.bytes(3 * MiB) + words[: 3 * MiB]


@pytest.fixture(scope="module")
def gz(payload) -> bytes:
    return gzip.compress(payload, 1)


@pytest.fixture(scope="module")
def zst(payload) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(payload)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_all(blob: bytes, media_type: str, decompressor: str, **kw) -> tuple[bytes, object]:
    reader = open_layer(io.BytesIO(blob), media_type, decompressor=decompressor, **kw)
    try:
        out = reader.read()
        return out, reader
    finally:
        reader.close()


def test_names_and_unknown_ones():
    assert DECOMPRESSORS == ["zlib", "isal", "zlib-ng", "unpigz"]
    with pytest.raises(StrategyError, match=r"unknown decompressor 'gunzip'.*zlib, isal"):
        get_decompressor("gunzip")


def test_media_types_map_to_codecs():
    assert codec_of(GZ) == codec_of(DOCKER_GZ) == "gzip"
    assert codec_of(ZST) == "zstd"
    assert codec_of(TAR) == codec_of("application/vnd.docker.image.rootfs.diff.tar") == "tar"
    with pytest.raises(DecompressionError, match=r"layer sha256:ab.*'application/x-lz4'.*known"):
        codec_of("application/x-lz4", layer="sha256:ab")


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
@pytest.mark.parametrize("media_type", [GZ, DOCKER_GZ, ZST, TAR])
def test_every_strategy_gives_the_same_bytes_and_diff_id(payload, gz, zst, decompressor,
                                                         media_type):
    codec = codec_of(media_type)
    blob = {"gzip": gz, "zstd": zst, "tar": payload}[codec]
    out, reader = _read_all(blob, media_type, decompressor)
    assert out == payload
    assert reader.verify_diff_id(_digest(payload)) == _digest(payload)
    assert reader.compressed_bytes == len(blob)
    assert reader.uncompressed_bytes == len(payload)
    expected_name = {"gzip": decompressor, "zstd": "zstandard", "tar": "none"}[codec]
    assert reader.decompressor_name == expected_name
    if codec != "tar":
        assert reader.decompress_s > 0


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
def test_concatenated_gzip_members_and_zstd_frames_are_read_in_sequence(payload, decompressor):
    a, b = payload[: 2 * MiB], payload[2 * MiB:]
    out, _ = _read_all(gzip.compress(a, 1) + gzip.compress(b, 1), GZ, decompressor)
    assert out == payload
    zc = zstandard.ZstdCompressor(level=1)
    out, _ = _read_all(zc.compress(a) + zc.compress(b), ZST, decompressor)
    assert out == payload


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
@pytest.mark.parametrize("media_type", [GZ, ZST])
@pytest.mark.parametrize("cut", [1, 1000, "half"])
def test_truncated_streams_are_an_error_naming_the_layer(gz, zst, decompressor, media_type,
                                                         cut):
    blob = gz if media_type == GZ else zst
    keep = len(blob) // 2 if cut == "half" else len(blob) - cut
    with pytest.raises(DecompressionError, match=r"layer sha256:cut.*(truncated|exited)") as info:
        _read_all(blob[:keep], media_type, decompressor, layer="sha256:cut")
    assert info.value.layer == "sha256:cut"


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
@pytest.mark.parametrize("media_type", [GZ, ZST])
def test_empty_blob_is_an_error(decompressor, media_type):
    with pytest.raises(DecompressionError, match=r"empty|exited"):
        _read_all(b"", media_type, decompressor)


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
def test_corrupt_deflate_data_is_an_error(payload, decompressor):
    blob = bytearray(gzip.compress(payload[: MiB], 1))
    blob[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)  # zeroed: bad codes or CRC
    with pytest.raises(DecompressionError, match=r"corrupt|exited|crc|CRC"):
        _read_all(bytes(blob), GZ, decompressor)


@pytest.mark.parametrize("decompressor", ["zlib", "isal", "zlib-ng"])
def test_trailing_garbage_after_the_last_gzip_member_is_an_error(payload, decompressor):
    with pytest.raises(DecompressionError, match="trailing garbage"):
        _read_all(gzip.compress(payload[:1000]) + b"not gzip", GZ, decompressor)


@pytest.mark.parametrize("checksum", [False, True])
def test_corrupt_zstd_data_is_an_error(payload, checksum):
    text = payload[3 * MiB:]  # entropy-coded blocks: damage breaks the decoding
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=checksum).compress(text))
    blob[len(blob) // 2: len(blob) // 2 + 100] = os.urandom(100)
    with pytest.raises(DecompressionError, match="corrupt zstd"):
        _read_all(bytes(blob), ZST, "zlib")
    if checksum:  # raw (stored) blocks are only protected by the frame checksum
        blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(payload[:MiB]))
        blob[1000] ^= 0xFF
        with pytest.raises(DecompressionError, match="corrupt zstd"):
            _read_all(bytes(blob), ZST, "zlib")


_ZEROS_GZ = gzip.compress(bytes(64 * MiB), 1)  # deflates ~1000:1 (at any level)


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
def test_ratio_cap_stops_a_gzip_bomb_and_reports_it(decompressor):
    blob = _ZEROS_GZ
    limits = DecompressionLimits(max_ratio=50, ratio_after_bytes=4 * MiB)
    with pytest.raises(DecompressionBomb, match=r"more than 50× .*max_ratio") as info:
        _read_all(blob, GZ, decompressor, limits=limits, layer="sha256:bomb",
                  compressed_size=len(blob))
    err = info.value
    assert (err.cap, err.limit, err.layer) == ("ratio", 50.0, "sha256:bomb")
    # it tripped early: well before the whole 64 MiB was produced
    assert 4 * MiB < err.uncompressed_bytes < 32 * MiB


def test_ratio_cap_stops_a_zstd_bomb_with_bounded_steps():
    # RLE blocks: 256 MiB of zeros in a few kilobytes
    blob = zstandard.ZstdCompressor(level=19).compress(bytes(256 * MiB))
    assert len(blob) < 64 * 1024
    limits = DecompressionLimits(max_ratio=100, ratio_after_bytes=1 * MiB)
    with pytest.raises(DecompressionBomb) as info:
        _read_all(blob, ZST, "zlib", limits=limits)
    assert info.value.cap == "ratio"
    assert info.value.uncompressed_bytes < 200 * MiB  # stopped long before the end


@pytest.mark.parametrize("decompressor", DECOMPRESSORS)
def test_absolute_cap(payload, gz, decompressor):
    limits = DecompressionLimits(max_ratio=None, max_uncompressed_bytes=2 * MiB)
    with pytest.raises(DecompressionBomb, match=r"cap of 2097152 bytes.*max_uncompressed_bytes"):
        _read_all(gz, GZ, decompressor, limits=limits)
    # exactly at the cap is fine
    limits = DecompressionLimits(max_ratio=None, max_uncompressed_bytes=len(payload))
    out, _ = _read_all(gz, GZ, decompressor, limits=limits)
    assert out == payload


def test_limits_are_validated():
    with pytest.raises(StrategyError, match="max_ratio"):
        DecompressionLimits(max_ratio=0)
    with pytest.raises(StrategyError, match="max_uncompressed_bytes"):
        DecompressionLimits(max_uncompressed_bytes=-1)


def test_diff_id_mismatch(payload, gz):
    reader = open_layer(io.BytesIO(gz), GZ, layer="sha256:l")
    wrong = _digest(b"something else")
    with pytest.raises(DiffIdMismatch, match=r"layer sha256:l decompresses to .*rootfs.diff_ids"
                       ) as info:
        reader.verify_diff_id(wrong)
    assert info.value.expected == wrong
    assert info.value.actual == _digest(payload)


def test_unpigz_reads_a_stored_file_itself_and_a_stream_through_a_pipe(payload, gz, tmp_path):
    if shutil.which("unpigz") is None and shutil.which("pigz") is None:
        if os.environ.get("CI"):
            pytest.fail("pigz must be installed in CI")
        pytest.skip("pigz not installed")
    blob = gz
    stored = tmp_path / "blob"
    stored.write_bytes(blob)
    with stored.open("rb") as f:
        reader = open_layer(f, GZ, decompressor="unpigz")
        assert reader.read() == payload
        reader.close()
    assert reader.compressed_bytes == len(blob)
    assert reader.decompress_cpu_s > 0  # the child's rusage
    # a pipe (what a download feeds while streaming) goes through the feeder thread
    r, w = os.pipe()
    writer = subprocess.Popen(["cat", str(stored)], stdout=w)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        reader = open_layer(pipe, GZ, decompressor="unpigz")
        assert reader.read() == payload
        reader.close()
    writer.wait()
    assert reader.compressed_bytes == len(blob)


def test_zlib_default_window_is_what_images_use():
    # a raw zlib stream (wbits 15) is not gzip: refused, not guessed at
    with pytest.raises(DecompressionError):
        _read_all(zlib.compress(b"x" * 1000), GZ, "zlib")
