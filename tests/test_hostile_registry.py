"""Hostile and flaky peers: each fault is injected by a real local server misbehaving on purpose
(the embedded registry's Misbehavior seam, HostileHost on 127.0.0.2 / 127.0.0.3 as the second and
third host), never by patching the client."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullbench import (
    AuthenticationError,
    ImageNotFound,
    ManifestError,
    RegistryClient,
    RegistryError,
    ResponseTooLarge,
    pull,
)
from pullbench.servers import HostileHost, HostileReply, Misbehavior

USER, PASSWORD = "alice", "correct horse battery staple"
MiB = 1024 * 1024


def _basic_authorizer(user: str = USER, password: str = PASSWORD):
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def authorize(method, path, headers):
        if headers.get("Authorization") == expected:
            return None
        return 401, {"WWW-Authenticate": 'Basic realm="registry"'}

    return authorize


def _files(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- 1 credentials


def test_cdn_challenge_after_redirect_never_gets_the_credentials(fresh_pushed_image, tmp_path):
    """Registry (Basic) → 307 to a CDN on 127.0.0.2 → 401 Bearer with a realm on 127.0.0.3."""
    reg = fresh_pushed_image.registry
    with HostileHost({"/token": HostileReply(200, {}, b'{"token": "t"}')},
                     host="127.0.0.3") as third, HostileHost(host="127.0.0.2") as cdn:
        cdn.routes["/blobs/*"] = HostileReply(
            401, {"WWW-Authenticate": f'Bearer realm="{third.url}/token",service="cdn"'})
        reg.authorizer = _basic_authorizer()
        reg.blob_redirect = lambda name, digest: f"{cdn.url}/blobs/{digest}"
        with pytest.raises(AuthenticationError) as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    message = str(info.value)
    assert cdn.requests, "the blob request never reached the CDN"
    assert cdn.credentials_seen() == [], "credentials were forwarded to the CDN"
    assert third.requests == [], "the CDN's realm on a third host was contacted"
    # the error says which host asked for what
    assert cdn.netloc in message
    assert reg.host in message
    assert f"{third.url}/token" in message
    assert "Bearer" in message
    assert PASSWORD not in message


def test_registry_named_realm_redirecting_elsewhere_loses_the_credentials(fresh_pushed_image,
                                                                           tmp_path):
    """The registry's own realm (127.0.0.2) redirects the token request to 127.0.0.3: the
    redirect is followed, the Basic credentials are not."""
    reg = fresh_pushed_image.registry
    with HostileHost({"/token": HostileReply(401, {"WWW-Authenticate": 'Basic realm="x"'})},
                     host="127.0.0.3") as third, HostileHost(host="127.0.0.2") as realm:
        realm.routes["/token"] = HostileReply(307, {"Location": f"{third.url}/token"})
        reg.authorizer = lambda m, p, h: (
            401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="registry"'})
        with pytest.raises(AuthenticationError, match="token request to realm"):
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    assert [r.authorization for r in realm.requests] == ["Basic"]  # the realm it named: yes
    assert third.requests, "the realm's redirect was not followed"
    assert third.credentials_seen() == [], "credentials followed the realm's redirect"


# ----------------------------------------------------------------------------- 2 memory


def test_endless_error_body_is_read_only_up_to_its_cap(fresh_pushed_image, tmp_path):
    mis = Misbehavior(error_body_bytes=200 * MiB)
    fresh_pushed_image.registry.misbehavior = mis
    ref = f"{fresh_pushed_image.registry.host}/fixtures/small:absent"
    with pytest.raises(ImageNotFound, match=r"error body passed pullbench's 64 KiB cap"):
        pull(ref, "go-iocopy", tmp_path / "out", plain_http=True)
    # the client hung up after the cap: the server could not push the 200 MiB
    assert mis.seen.filler_bytes < 32 * MiB


def test_endless_token_answer_is_refused_at_its_cap(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as realm:
        realm.routes["/token"] = HostileReply(
            200, {"Content-Type": "application/json"}, b'{"token": "', endless_bytes=200 * MiB)
        reg.authorizer = lambda m, p, h: (
            401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="registry"'})
        with pytest.raises(ResponseTooLarge, match=r"1 MiB cap for a token body") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    assert info.value.cap_bytes == MiB
    assert realm.filler_bytes < 32 * MiB


def test_endless_manifest_is_refused_at_its_cap():
    with HostileHost(host="127.0.0.2") as host:
        host.routes["/v2/app/manifests/big"] = HostileReply(
            200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, b'{"layers": [',
            endless_bytes=200 * MiB)
        client = RegistryClient(host.netloc, plain_http=True)
        with pytest.raises(ResponseTooLarge, match=r"manifest .*4 MiB cap"):
            client.fetch_manifest("app", "big")
    assert host.filler_bytes < 32 * MiB


# ----------------------------------------------------------------------------- 3 digests


@pytest.mark.parametrize("algorithm", ["md5", "shake_128", "sha1"])
def test_unregistered_layer_digest_algorithm_is_a_manifest_error(fresh_pushed_image, tmp_path,
                                                                 algorithm):
    fresh_pushed_image.registry.misbehavior = Misbehavior(digest_algorithm=algorithm)
    dest = tmp_path / "out"
    with pytest.raises(ManifestError, match=rf"digest algorithm '{algorithm}'.*sha256 and sha512"):
        pull(fresh_pushed_image.reference, "go-iocopy", dest, plain_http=True)
    assert not (dest / "blobs" / algorithm).exists()
    assert not any(p.startswith(f"blobs/{algorithm}") for p in _files(dest)) if dest.exists() \
        else True


def test_unregistered_content_digest_header_is_a_manifest_error(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(content_digest="shake_256:" + "ab" * 32)
    with pytest.raises(ManifestError, match=r"digest algorithm 'shake_256'"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)


def test_cli_reports_an_unregistered_algorithm_without_a_traceback(fresh_pushed_image, tmp_path):
    from pullbench.cli import main

    fresh_pushed_image.registry.misbehavior = Misbehavior(digest_algorithm="shake_128")
    result = CliRunner().invoke(main, ["pull", "--plain-http", "--dest", str(tmp_path / "o"),
                                       fresh_pushed_image.reference])
    assert result.exit_code == 1, result.output
    assert "ManifestError" in result.output
    assert "shake_128" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, TypeError)


def test_sha512_layers_are_still_accepted_by_the_descriptor_check():
    from pullbench import Descriptor

    data = b"layer"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    desc = Descriptor.from_json({"digest": digest, "size": len(data), "mediaType": "x"})
    assert desc.digest == digest


# ----------------------------------------------------------------------------- 8 redirects


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.2/blob"])
def test_redirect_to_another_scheme_names_the_refused_scheme(fresh_pushed_image, tmp_path,
                                                             target):
    reg = fresh_pushed_image.registry
    reg.blob_redirect = lambda name, digest: target
    with pytest.raises(RegistryError) as info:
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    message = str(info.value)
    scheme = target.split(":")[0]
    assert f"redirected to a {scheme}: URL" in message
    assert "only http and https" in message
    assert "is the registry running" not in message
    assert "plain-http" not in message


def test_redirect_loop_names_the_chain(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as a, HostileHost(host="127.0.0.3") as b:
        a.routes["/a"] = HostileReply(302, {"Location": f"{b.url}/b"})
        b.routes["/b"] = HostileReply(302, {"Location": f"{a.url}/a"})
        reg.blob_redirect = lambda name, digest: f"{a.url}/a"
        with pytest.raises(RegistryError, match="redirect loop") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    message = str(info.value)
    assert f"{a.url}/a → {b.url}/b → {a.url}/a" in message
    assert "is the registry running" not in message


def test_too_many_redirects_names_the_chain(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as a:
        for i in range(20):
            a.routes[f"/hop/{i}"] = HostileReply(302, {"Location": f"/hop/{i + 1}"})
        reg.blob_redirect = lambda name, digest: f"{a.url}/hop/0"
        with pytest.raises(RegistryError, match=r"too many redirects \(more than 10\)") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    assert f"{a.url}/hop/9 → {a.url}/hop/10" in str(info.value)
