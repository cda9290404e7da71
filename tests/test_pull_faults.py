"""Bad input from a real registry that misbehaves on purpose (Misbehavior), for every read path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pullbench import (
    AuthenticationError,
    DigestMismatch,
    ImageNotFound,
    ManifestError,
    RegistryUnavailable,
    SizeMismatch,
    pull,
)
from pullbench.servers import Misbehavior

# one strategy per read path: readinto, urllib3 read(amt), copyfileobj, splice, read1 + fill,
# recv_into; thread and after hashing
STRATEGIES = [
    "go-iocopy",
    "requests-iter-content",
    "copyfileobj",
    "splice",
    "containerd-1m",
    "tunable:read_path=read1,hash_mode=thread",
    "tunable:read_path=recv_into,hash_mode=after",
]


def _strategy(spec: str):
    from pullbench import get_strategy

    name, _, rest = spec.partition(":")
    params = {}
    for pair in filter(None, rest.split(",")):
        k, _, v = pair.partition("=")
        params[k] = v
    return get_strategy(name, **params)


def _store_files(dest: Path) -> list[Path]:
    root = dest / "blobs" / "sha256"
    return sorted(root.iterdir()) if root.exists() else []


def _blob_files(dest: Path, manifest_digests: set[str]) -> list[str]:
    return [p.name for p in _store_files(dest) if p.name not in manifest_digests]


@pytest.mark.parametrize("spec", STRATEGIES)
def test_corrupted_blob_digest_mismatch_nothing_stored(fresh_pushed_image, tmp_path, spec):
    fresh_pushed_image.registry.misbehavior = Misbehavior(corrupt_blobs=True)
    dest = tmp_path / "store"
    with pytest.raises(DigestMismatch) as info:
        pull(fresh_pushed_image.reference, _strategy(spec), dest, plain_http=True)
    err = info.value
    assert err.expected != err.actual
    assert err.expected in str(err)
    assert err.registry == fresh_pushed_image.registry.host
    # no temp file, and no blob in the store (only the manifest, which was fine)
    names = [p.name for p in _store_files(dest)]
    assert not any(n.startswith(".") for n in names)
    assert names == [fresh_pushed_image.digest[7:]]


@pytest.mark.parametrize("spec", STRATEGIES)
@pytest.mark.parametrize(
    "fault",
    [
        Misbehavior(truncate_blobs_bytes=1000),
        Misbehavior(extra_blob_bytes=7),
        Misbehavior(drop_after_bytes=5000),
    ],
    ids=["short", "long", "dropped"],
)
def test_short_long_or_dropped_body_is_size_mismatch(fresh_pushed_image, tmp_path, spec, fault):
    fresh_pushed_image.registry.misbehavior = fault
    dest = tmp_path / "store"
    with pytest.raises(SizeMismatch) as info:
        pull(fresh_pushed_image.reference, _strategy(spec), dest, plain_http=True)
    err = info.value
    if fault.extra_blob_bytes:
        assert err.actual > err.expected
        assert "long body" in str(err)
    else:
        assert err.actual < err.expected
    assert not any(p.name.startswith(".") for p in _store_files(dest))


@pytest.mark.parametrize("spec", STRATEGIES)
def test_content_encoding_gzip_is_hashed_raw(fresh_pushed_image, tmp_path, spec):
    """A blob sent with Content-Encoding: gzip must not be decoded: the raw bytes are the blob."""
    fresh_pushed_image.registry.misbehavior = Misbehavior(blob_content_encoding="gzip")
    dest = tmp_path / "store"
    result = pull(fresh_pushed_image.reference, _strategy(spec), dest, plain_http=True)
    layout_blobs = Path(fresh_pushed_image.layout.path) / "blobs" / "sha256"
    for layer in result.layers:
        stored = (dest / "blobs" / "sha256" / layer.digest[7:]).read_bytes()
        assert stored == (layout_blobs / layer.digest[7:]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == layer.digest[7:]


def test_missing_image_names_the_reference(pushed_image, tmp_path):
    ref = f"{pushed_image.registry.host}/fixtures/absent:v1"
    with pytest.raises(ImageNotFound, match=r"fixtures/absent:v1") as info:
        pull(ref, "go-iocopy", tmp_path / "s", plain_http=True)
    assert info.value.image_ref is not None
    assert "fixtures/absent" in info.value.image_ref


def test_401_without_credentials_names_the_realm(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    realm = f"http://{reg.host}/token"  # a real endpoint that refuses anonymous token requests
    reg.authorizer = lambda m, p, h: (
        401,
        {"WWW-Authenticate": f'Bearer realm="{realm}",service="fixture"'},
    )
    with pytest.raises(AuthenticationError, match=f"realm {realm}.*anonymous access was refused"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)
    reg.authorizer = lambda m, p, h: (401, {"WWW-Authenticate": 'Basic realm="fixture-realm"'})
    with pytest.raises(AuthenticationError, match=r"realm 'fixture-realm'.*pass credentials"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)
    assert not (tmp_path / "s" / "blobs").exists()


def test_malformed_manifest_quotes_a_snippet(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(malformed_manifests=True)
    with pytest.raises(ManifestError, match=r"not valid JSON .*: '\{") as info:
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)
    assert '"config"' in str(info.value)  # the snippet quotes the document
    assert not (tmp_path / "s").exists()


def test_unknown_media_type_is_clear(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(
        manifest_media_type="application/vnd.example.unknown+json"
    )
    with pytest.raises(
        ManifestError,
        match=r"unknown media type 'application/vnd.example.unknown\+json'; "
        r"pullbench understands .*oci.image.manifest",
    ):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)


def test_contradicting_media_type_is_rejected(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(
        manifest_media_type="application/vnd.oci.image.index.v1+json"
    )
    with pytest.raises(ManifestError, match="contradicts its mediaType"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_registry_unavailable(fresh_pushed_image, tmp_path, status):
    fresh_pushed_image.registry.misbehavior = Misbehavior(fail_status=status)
    with pytest.raises(RegistryUnavailable, match=f"answered {status}"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "s", plain_http=True)
