"""Registry client against real loopback servers: auth, manifests, platforms, redirects, TLS."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from pullbench import (
    AuthenticationError,
    ImageNotFound,
    ManifestError,
    Platform,
    RegistryClient,
    RegistryUnavailable,
    pull,
)
from pullbench._media import MANIFEST_ACCEPT
from pullbench.puller._client import ClientConfigError, parse_challenge

SECRET = "s3cr3t-Pa55word"


# --------------------------------------------------------------------------- helper servers


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def add(self, method: str, path: str, headers) -> None:
        with self.lock:
            self.requests.append((method, path, {k.lower(): v for k, v in headers.items()}))


@contextlib.contextmanager
def _serve(handler_factory, host: str = "127.0.0.1"):
    server = ThreadingHTTPServer((host, 0), handler_factory)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class TokenServer:
    """A real token endpoint: GET ?service=&scope= → JSON token (Docker token spec)."""

    def __init__(
        self,
        *,
        key: str = "token",
        expires_in: int | None = 300,
        require_basic: tuple[str, str] | None = None,
    ) -> None:
        self.key = key
        self.expires_in = expires_in
        self.require_basic = require_basic
        self.issued: list[tuple[str, str]] = []  # (scope, token)
        self.valid: set[str] = set()
        self.recorder = _Recorder()
        self._n = 0
        self._lock = threading.Lock()

    def handler(self):
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.recorder.add("GET", self.path, self.headers)
                q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if outer.require_basic is not None:
                    want = (
                        "Basic " + base64.b64encode(":".join(outer.require_basic).encode()).decode()
                    )
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                with outer._lock:
                    outer._n += 1
                    token = f"tok-{outer._n}"
                    outer.issued.append((q.get("scope", ""), token))
                    outer.valid.add(token)
                body = {outer.key: token}
                if outer.expires_in is not None:
                    body["expires_in"] = outer.expires_in
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H


def _bearer_authorizer(tokens: TokenServer, realm: str, seen: _Recorder):
    def authorize(method, path, headers):
        seen.add(method, path, headers)
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in tokens.valid:
            return None
        repo = path[len("/v2/") :].rsplit("/", 2)[0] if path.count("/") > 3 else ""
        scope = f',scope="repository:{repo}:pull"' if repo else ""
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="pullbench-test"{scope}'}

    return authorize


def _basic_authorizer(user: str, password: str, seen: _Recorder, realm: str = "pullbench-basic"):
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def authorize(method, path, headers):
        seen.add(method, path, headers)
        if headers.get("Authorization") == want:
            return None
        return 401, {"WWW-Authenticate": f'Basic realm="{realm}"'}

    return authorize


# --------------------------------------------------------------------------- basics


def test_ping_and_manifest_accept(pushed_image):
    reg = pushed_image.registry
    seen = _Recorder()
    reg.authorizer = lambda m, p, h: seen.add(m, p, h)
    try:
        with RegistryClient(reg.host, plain_http=True) as client:
            assert client.ping()["status"] == "200"
            manifest = client.get_manifest(pushed_image.repository, pushed_image.tag)
    finally:
        reg.authorizer = None
    assert manifest.digest == pushed_image.digest
    assert len(manifest.layers) == 3
    assert manifest.config.size_bytes > 0
    manifest_req = [h for m, p, h in seen.requests if "/manifests/" in p]
    assert manifest_req
    accept = {a.strip() for a in manifest_req[0]["accept"].split(",")}
    assert accept == {a.strip() for a in MANIFEST_ACCEPT.split(",")}
    assert len(accept) == 4


def test_blob_request_asks_for_identity(pushed_image):
    reg = pushed_image.registry
    seen = _Recorder()
    reg.authorizer = lambda m, p, h: seen.add(m, p, h)
    try:
        with RegistryClient(reg.host, plain_http=True) as client:
            manifest = client.get_manifest(pushed_image.repository, pushed_image.tag)
            resp = client.open_blob(pushed_image.repository, manifest.layers[0])
            data = resp.raw.read(decode_content=False)
            resp.close()
    finally:
        reg.authorizer = None
    assert hashlib.sha256(data).hexdigest() == manifest.layers[0].digest[7:]
    blob_req = [h for m, p, h in seen.requests if "/blobs/" in p]
    assert blob_req[0]["accept-encoding"] == "identity"


def test_manifest_by_digest_is_verified(pushed_image):
    with RegistryClient(pushed_image.registry.host, plain_http=True) as client:
        fetched = client.fetch_manifest(pushed_image.repository, pushed_image.digest)
        assert fetched.digest == pushed_image.digest
        assert not fetched.is_index


def test_platform_selection_from_index(pushed_multiarch_image):
    img = pushed_multiarch_image
    with RegistryClient(img.registry.host, plain_http=True) as client:
        arm = client.get_manifest(img.repository, img.tag, "linux/arm64")
        amd = client.get_manifest(img.repository, img.tag, "linux/amd64")
        assert arm.platform == Platform("linux", "arm64")
        assert amd.platform == Platform("linux", "amd64")
        assert arm.digest != amd.digest
        assert arm.index is not None
        assert arm.index.digest == img.digest
        # aarch64 is normalized to arm64, as containerd does
        assert client.get_manifest(img.repository, img.tag, "linux/aarch64").digest == arm.digest
        host = client.get_manifest(img.repository, img.tag)
        assert host.platform == Platform.host()
        with pytest.raises(
            ManifestError,
            match=r"no manifest for platform linux/s390x.*available: "
            r"linux/amd64, linux/arm64",
        ):
            client.get_manifest(img.repository, img.tag, "linux/s390x")
        with pytest.raises(ManifestError, match="invalid platform"):
            client.get_manifest(img.repository, img.tag, "linux")


def test_index_without_media_type_and_generic_content_type(fresh_pushed_image, multiarch_image):
    """An index lacking the top-level mediaType, served as application/json, still resolves."""
    reg = fresh_pushed_image.registry
    from pullbench import push_image

    push_image(multiarch_image, f"{reg.host}/fixtures/multi:latest")
    with RegistryClient(reg.host, plain_http=True) as client:
        original = client.fetch_manifest("fixtures/multi", "latest")
    doc = dict(original.document)
    doc.pop("mediaType", None)
    data = json.dumps(doc).encode()
    put = requests.put(
        f"{reg.url}/v2/fixtures/multi/manifests/bare",
        data=data,
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        timeout=10,
    )
    assert put.status_code == 201, put.text
    from pullbench.servers import Misbehavior

    reg.misbehavior = Misbehavior(manifest_media_type="application/json")
    with RegistryClient(reg.host, plain_http=True) as client:
        fetched = client.fetch_manifest("fixtures/multi", "bare")
        assert fetched.is_index
        assert "mediaType" not in fetched.document
        manifest = client.get_manifest("fixtures/multi", "bare", "linux/arm64")
    assert manifest.platform == Platform("linux", "arm64")


def test_not_found_names_reference(pushed_image):
    with RegistryClient(pushed_image.registry.host, plain_http=True) as client:
        with pytest.raises(ImageNotFound, match=r"fixtures/nothing:v9"):
            client.get_manifest("fixtures/nothing", "v9")
        with pytest.raises(ImageNotFound, match="blob not found"):
            client.open_blob(
                "fixtures/small", {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1}
            )


def test_unreachable_registry_is_clear():
    with socket_closed_port() as port, RegistryClient(f"127.0.0.1:{port}", plain_http=True) as c:
        with pytest.raises(RegistryUnavailable, match="cannot reach"):
            c.ping()


@contextlib.contextmanager
def socket_closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


def test_client_config_errors(tmp_path):
    with pytest.raises(ClientConfigError, match="does not exist"):
        RegistryClient("127.0.0.1:1", ca_bundle=tmp_path / "nope.pem")
    with pytest.raises(ClientConfigError, match="either credentials or a token"):
        RegistryClient("127.0.0.1:1", credentials=("u", "p"), token="t")


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("key", ["token", "access_token"])
def test_anonymous_bearer_flow_caches_token_per_scope(pushed_image, tmp_path, key):
    reg = pushed_image.registry
    tokens = TokenServer(key=key)
    seen = _Recorder()
    with _serve(tokens.handler()) as ts:
        realm = f"http://127.0.0.1:{ts.server_address[1]}/token"
        reg.authorizer = _bearer_authorizer(tokens, realm, seen)
        try:
            result = pull(pushed_image.reference, "go-iocopy", tmp_path / "store", plain_http=True)
        finally:
            reg.authorizer = None
    assert result.total_bytes > 0
    # one token for the repository scope, reused for the manifest and all 4 blobs
    scopes = [s for s, _ in tokens.issued]
    assert scopes == ["repository:fixtures/small:pull"]
    q = parse_qs(urlsplit(tokens.recorder.requests[0][1]).query)
    assert q["service"] == ["pullbench-test"]
    unauthorized = [p for m, p, h in seen.requests if "authorization" not in h]
    assert len(unauthorized) == 1  # only the very first manifest GET went without a token


def test_bearer_token_expiry_and_refresh_on_401(pushed_image):
    reg = pushed_image.registry
    tokens = TokenServer(expires_in=300)
    seen = _Recorder()
    with _serve(tokens.handler()) as ts:
        realm = f"http://127.0.0.1:{ts.server_address[1]}/token"
        reg.authorizer = _bearer_authorizer(tokens, realm, seen)
        try:
            with RegistryClient(reg.host, plain_http=True) as client:
                client.get_manifest(pushed_image.repository, pushed_image.tag)
                assert len(tokens.issued) == 1
                client.get_manifest(pushed_image.repository, pushed_image.tag)
                assert len(tokens.issued) == 1  # cached (valid 295 s: no race on a slow machine)
                # the registry revokes every token: the client gets a new one on 401, once
                tokens.expires_in = 1  # ...and that one lives 1 s
                tokens.valid.clear()
                client.get_manifest(pushed_image.repository, pushed_image.tag)
                assert len(tokens.issued) == 2
                # expires_in=1 s: the client stops using it after 0.5 s (refresh early rule), while
                # the registry would still accept it; sleeping longer only makes this surer
                time.sleep(0.6)
                client.get_manifest(pushed_image.repository, pushed_image.tag)
                assert len(tokens.issued) == 3
        finally:
            reg.authorizer = None


def test_bearer_with_credentials_sends_basic_to_realm_only(pushed_image):
    reg = pushed_image.registry
    tokens = TokenServer(require_basic=("alice", SECRET))
    seen = _Recorder()
    with _serve(tokens.handler()) as ts:
        realm = f"http://127.0.0.1:{ts.server_address[1]}/token"
        reg.authorizer = _bearer_authorizer(tokens, realm, seen)
        try:
            with RegistryClient(reg.host, plain_http=True, credentials=("alice", SECRET)) as client:
                client.get_manifest(pushed_image.repository, pushed_image.tag)
            with (
                RegistryClient(reg.host, plain_http=True) as anon,
                pytest.raises(AuthenticationError, match=f"realm {realm}") as info,
            ):
                anon.get_manifest(pushed_image.repository, pushed_image.tag)
            assert "pass credentials" in str(info.value)
            with (
                RegistryClient(reg.host, plain_http=True, credentials=("alice", "wrong")) as bad,
                pytest.raises(AuthenticationError, match="refused") as info,
            ):
                bad.get_manifest(pushed_image.repository, pushed_image.tag)
            assert "wrong" not in str(info.value)
        finally:
            reg.authorizer = None
    # the registry itself never saw Basic credentials, only Bearer tokens
    assert all(not h.get("authorization", "").startswith("Basic") for _, _, h in seen.requests)


def test_basic_auth_and_missing_credentials_name_the_realm(pushed_image, tmp_path):
    reg = pushed_image.registry
    seen = _Recorder()
    reg.authorizer = _basic_authorizer("bob", SECRET, seen)
    try:
        result = pull(
            pushed_image.reference,
            "containerd-1m",
            tmp_path / "ok",
            plain_http=True,
            credentials=("bob", SECRET),
        )
        assert result.total_bytes > 0
        with pytest.raises(AuthenticationError, match="realm 'pullbench-basic'"):
            pull(pushed_image.reference, "go-iocopy", tmp_path / "anon", plain_http=True)
        with pytest.raises(AuthenticationError, match="refused") as info:
            pull(
                pushed_image.reference,
                "go-iocopy",
                tmp_path / "bad",
                plain_http=True,
                credentials=("bob", "not-" + SECRET),
            )
        assert SECRET not in str(info.value)
    finally:
        reg.authorizer = None
    # the result, the client and its repr never carry the secret
    assert SECRET not in json.dumps(result.to_dict(), default=str)
    assert SECRET not in json.dumps(result.to_row(), default=str)
    client = RegistryClient(reg.host, plain_http=True, credentials=("bob", SECRET))
    assert SECRET not in repr(client)
    assert SECRET not in repr(vars(client) if hasattr(client, "__dict__") else client)


def test_user_token_is_sent_as_bearer(pushed_image):
    reg = pushed_image.registry
    seen = _Recorder()

    def authorize(method, path, headers):
        seen.add(method, path, headers)
        if headers.get("Authorization") == "Bearer user-token-123":
            return None
        return 401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/unused"'}

    reg.authorizer = authorize
    try:
        with RegistryClient(reg.host, plain_http=True, token="user-token-123") as client:
            assert client.get_manifest(pushed_image.repository, pushed_image.tag).layers
        with (
            RegistryClient(reg.host, plain_http=True, token="other") as client,
            pytest.raises(AuthenticationError, match="refused the Bearer token"),
        ):
            client.get_manifest(pushed_image.repository, pushed_image.tag)
    finally:
        reg.authorizer = None
    assert "user-token-123" not in repr(RegistryClient(reg.host, token="user-token-123"))


# --------------------------------------------------------------------------- redirects


class BlobHost:
    """A second real HTTP server (another loopback address) serving blobs from a layout."""

    def __init__(self, blobs: Path) -> None:
        self.blobs = blobs
        self.recorder = _Recorder()

    def handler(self):
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.recorder.add("GET", self.path, self.headers)
                path = outer.blobs / Path(urlsplit(self.path).path).name
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H


def test_cross_host_redirect_drops_authorization(pushed_image, tmp_path):
    reg = pushed_image.registry
    layout_blobs = Path(pushed_image.layout.path) / "blobs" / "sha256"
    host = BlobHost(layout_blobs)
    seen = _Recorder()
    with _serve(host.handler(), host="127.0.0.2") as blob_server:
        base = f"http://127.0.0.2:{blob_server.server_address[1]}"
        reg.authorizer = _basic_authorizer("carol", SECRET, seen)
        reg.blob_redirect = lambda name, digest: f"{base}/blobs/{digest[7:]}"
        try:
            result = pull(
                pushed_image.reference,
                "go-iocopy",
                tmp_path / "store",
                plain_http=True,
                credentials=("carol", SECRET),
            )
        finally:
            reg.authorizer = None
            reg.blob_redirect = None
    assert len(host.recorder.requests) == len(result.layers) == 4
    assert all("authorization" not in h for _, _, h in host.recorder.requests)
    # the registry itself did get the credentials on the blob requests it redirected
    blob_hits = [h for _, p, h in seen.requests if "/blobs/" in p and "authorization" in h]
    assert len(blob_hits) == 4
    for layer in result.layers:
        stored = tmp_path / "store" / "blobs" / "sha256" / layer.digest[7:]
        assert stored.read_bytes() == (layout_blobs / layer.digest[7:]).read_bytes()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, small_image):
    from pullbench import push_image
    from pullbench.servers import EmbeddedRegistry
    from pullbench.servers._tls import make_tls_material

    material = make_tls_material(tmp_path_factory.mktemp("tls"))
    with EmbeddedRegistry(
        tmp_path_factory.mktemp("tls-reg"), ssl_context=material.server_context()
    ) as reg:
        push_image(
            small_image,
            f"{reg.host}/fixtures/small:latest",
            plain_http=False,
            ca_bundle=material.ca_bundle,
        )
        yield reg, material


@pytest.mark.parametrize("env_bundle", ["system", "unset"])
def test_ca_bundle_wins_over_requests_ca_bundle(tls_registry, tmp_path, monkeypatch, env_bundle):
    reg, material = tls_registry
    if env_bundle == "unset":
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    else:
        # a bundle that does NOT contain our CA: requests would prefer it over Session.verify
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    result = pull(
        f"{reg.host}/fixtures/small:latest",
        "go-iocopy",
        tmp_path / "s",
        ca_bundle=material.ca_bundle,
    )
    assert result.total_bytes > 0
    with pytest.raises(RegistryUnavailable, match="TLS verification"):
        pull(f"{reg.host}/fixtures/small:latest", "go-iocopy", tmp_path / "t")
    if env_bundle == "system":
        # the trap pullbench avoids: Session.verify loses to REQUESTS_CA_BUNDLE in requests
        with requests.Session() as session:
            session.verify = str(material.ca_bundle)
            with pytest.raises(requests.exceptions.SSLError):
                session.get(f"{reg.url}/v2/", timeout=10)


def test_tls_default_verification_uses_environment_bundle(tls_registry, tmp_path, monkeypatch):
    reg, material = tls_registry
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(material.ca_bundle))
    result = pull(f"{reg.host}/fixtures/small:latest", "containerd-1m", tmp_path / "s")
    assert result.total_bytes > 0


def test_plain_http_only_when_asked(pushed_image, tmp_path):
    # the embedded registry speaks plain HTTP: without plain_http the TLS handshake fails clearly
    with pytest.raises(RegistryUnavailable):
        pull(pushed_image.reference, "go-iocopy", tmp_path / "s")


def test_strict_blob_host_never_sees_credentials(fresh_pushed_image, tmp_path):
    """issue 6's CDN-like blob host answers 400 to any Authorization header; pulls succeed."""
    from pullbench.servers import BlobHost

    reg = fresh_pushed_image.registry
    seen = _Recorder()
    with BlobHost(reg.root) as host:
        reg.authorizer = _basic_authorizer("dave", SECRET, seen)
        reg.blob_redirect = host.embedded_redirect()
        result = pull(
            fresh_pushed_image.reference,
            "containerd-1m",
            tmp_path / "s",
            plain_http=True,
            credentials=("dave", SECRET),
        )
        counters = host.counters
    assert counters.served == len(result.layers) == 4
    assert counters.rejected_authorization == 0


def test_credentials_never_logged(pushed_image, tmp_path, caplog):
    reg = pushed_image.registry
    tokens = TokenServer(require_basic=("erin", SECRET))
    seen = _Recorder()
    caplog.set_level("DEBUG")
    with _serve(tokens.handler()) as ts:
        realm = f"http://127.0.0.1:{ts.server_address[1]}/token"
        reg.authorizer = _bearer_authorizer(tokens, realm, seen)
        try:
            pull(
                pushed_image.reference,
                "go-iocopy",
                tmp_path / "s",
                plain_http=True,
                credentials=("erin", SECRET),
            )
            with pytest.raises(AuthenticationError) as info:
                pull(
                    pushed_image.reference,
                    "go-iocopy",
                    tmp_path / "t",
                    plain_http=True,
                    credentials=("erin", SECRET + "x"),
                )
        finally:
            reg.authorizer = None
    assert caplog.records  # debug logging was on
    basic = base64.b64encode(f"erin:{SECRET}".encode()).decode()
    for text in (caplog.text, str(info.value), repr(info.value)):
        assert SECRET not in text
        assert basic not in text
        assert "tok-" not in text  # issued tokens are secrets too


@pytest.mark.parametrize("style", ["distribution", "dockerhub", "ghcr"])
def test_against_the_project_token_server(fresh_pushed_image, tmp_path, style):
    """issue 6's JWT token server in its three challenge styles: private repo, user credentials."""
    from pullbench.servers import TokenServer as RealTokenServer

    reg = fresh_pushed_image.registry
    host = "127.0.0.2" if style == "dockerhub" else "127.0.0.1"
    with RealTokenServer(
        users={"frank": SECRET}, anonymous_pull=False, style=style, host=host, expires_in_s=120
    ) as tokens:
        reg.authorizer = tokens.authorizer()
        try:
            result = pull(
                fresh_pushed_image.reference,
                "containerd-1m",
                tmp_path / "ok",
                plain_http=True,
                credentials=("frank", SECRET),
            )
            assert len(result.layers) == 4
            with pytest.raises(AuthenticationError, match=re.escape(tokens.realm)):
                pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "anon", plain_http=True)
        finally:
            reg.authorizer = None
        # one token for the pull with credentials (cached for the manifest and all blobs)
        assert len([t for t in tokens.issued if t.subject == "frank"]) == 1
