"""CDN redirects: blob GETs answer 307 to a blob host on 127.0.0.2 that rejects Authorization;
the puller follows without forwarding credentials (a client that forwards them fails here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from pullbench import pull, push_image
from pullbench.servers import BlobHost, DistributionRegistry, EmbeddedRegistry, TokenServer

USER, PASSWORD = "bob", "hunter2-but-longer"


def _check_store(dest: Path) -> int:
    """Every stored blob hashes to its name; returns the number of blobs."""
    blobs = [p for p in (dest / "blobs" / "sha256").iterdir() if p.is_file()]
    for path in blobs:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    return len(blobs)


def test_blob_host_rejects_authorization_and_serves_without(small_image, tmp_path):
    with EmbeddedRegistry(tmp_path / "reg") as reg:
        push_image(small_image, f"{reg.host}/cdn/app:v1")
        digest = small_image.read_json(small_image.manifest_digest)["layers"][0]["digest"]
        with BlobHost(reg.root) as cdn, requests.Session() as s:
            s.trust_env = False
            url = cdn.embedded_redirect()("cdn/app", digest)
            assert url is not None
            assert url.startswith("http://127.0.0.2:")
            refused = s.get(url, headers={"Authorization": "Bearer x"})
            ok = s.get(url)
            part = s.get(url, headers={"Range": "bytes=10-19"})
            outside = s.get(f"{cdn.url}/repositories/cdn/app/_manifests/tags/v1")
    assert refused.status_code == 400
    assert "Authorization" in refused.text
    assert hashlib.sha256(ok.content).hexdigest() == digest.split(":")[1]
    assert part.status_code == 206
    assert part.content == ok.content[10:20]
    assert outside.status_code == 404
    assert cdn.counters.rejected_authorization == 1


@pytest.mark.parametrize("with_tls", [False, True], ids=["http", "https"])
def test_embedded_blob_redirect_with_token_auth(with_tls, small_image, tls_material, tmp_path):
    tls = tls_material if with_tls else None
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=False, tls=tls,
                         directory=tmp_path / "tok").start()
    reg = EmbeddedRegistry(tmp_path / "reg",
                           ssl_context=tls.server_context() if tls else None).start()
    cdn = BlobHost(reg.root, tls=tls).start()
    try:
        push_image(small_image, f"{reg.host}/cdn/app:v1", plain_http=not with_tls,
                   ca_bundle=tls.ca_bundle if tls else None)
        reg.authorizer = tokens.authorizer()
        reg.blob_redirect = cdn.embedded_redirect()
        result = pull(f"{reg.host}/cdn/app:v1", "containerd-1m", tmp_path / "out",
                      plain_http=not with_tls, ca_bundle=tls.ca_bundle if tls else None,
                      credentials=(USER, PASSWORD))
    finally:
        cdn.close()
        reg.close()
        tokens.close()
    stored = _check_store(tmp_path / "out")
    assert cdn.counters.rejected_authorization == 0, "the puller forwarded Authorization"
    assert cdn.counters.served == len(result.layers)  # every blob (layers and config)
    assert stored >= cdn.counters.served
    assert tokens.counters.authorized >= 1


@pytest.mark.peers
def test_distribution_redirect_middleware_with_token_auth(distribution_binary, small_image,
                                                          tmp_path):
    root = tmp_path / "root"
    with DistributionRegistry(root) as plain:
        push_image(small_image, f"{plain.host}/cdn/app:v1")
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=False,
                         directory=tmp_path / "tok").start()
    cdn = BlobHost(root).start()
    extra = {**tokens.distribution_config(), **cdn.distribution_config()}
    reg = DistributionRegistry(root, extra_config=extra).start()
    try:
        with requests.Session() as s:  # Distribution really redirects to the blob host
            s.trust_env = False
            token = s.get(tokens.realm, params={"service": tokens.service,
                                                "scope": "repository:cdn/app:pull"},
                          auth=(USER, PASSWORD)).json()["token"]
            digest = small_image.read_json(small_image.manifest_digest)["layers"][0]["digest"]
            answer = s.get(f"{reg.url}/v2/cdn/app/blobs/{digest}", allow_redirects=False,
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 307
        assert answer.headers["Location"].startswith(f"{cdn.url}/docker/registry/v2/blobs/")
        result = pull(f"{reg.host}/cdn/app:v1", "go-iocopy", tmp_path / "out", plain_http=True,
                      credentials=(USER, PASSWORD))
    finally:
        reg.close()
        cdn.close()
        tokens.close()
    _check_store(tmp_path / "out")
    assert cdn.counters.rejected_authorization == 0, "the puller forwarded Authorization"
    assert cdn.counters.served >= len(result.layers)
