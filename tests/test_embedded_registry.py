"""The embedded registry against real HTTP clients on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from pullbench import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ServerError,
    push_image,
    sha256_digest,
)
from pullbench.servers import EmbeddedRegistry, Misbehavior
from pullbench.servers._embedded import parse_range


def _layer(pushed):
    return pushed.layout.layers[0]


def _raw(reg, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def _error_code(body: bytes) -> str:
    return json.loads(body)["errors"][0]["code"]


# --- pull side ------------------------------------------------------------------------------
def test_base_endpoint(embedded_registry, session):
    r = session.get(embedded_registry.url + "/v2/")
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert embedded_registry.kind == "embedded"
    assert embedded_registry.url == f"http://{embedded_registry.host}"
    assert embedded_registry.version


def test_manifest_by_tag_and_digest(pushed_image, session):
    reg, layout = pushed_image.registry, pushed_image.layout
    stored = layout.read_blob(layout.manifest_digest)
    for ref in ("latest", pushed_image.digest):
        r = session.get(f"{reg.url}/v2/fixtures/small/manifests/{ref}",
                        headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == stored
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == pushed_image.digest
        assert int(r.headers["Content-Length"]) == len(stored)
        h = session.head(f"{reg.url}/v2/fixtures/small/manifests/{ref}")
        assert h.status_code == 200
        assert h.content == b""
        assert int(h.headers["Content-Length"]) == len(stored)
        assert h.headers["Docker-Content-Digest"] == pushed_image.digest


def test_manifest_accept_negotiation(pushed_image, pushed_multiarch_image, session):
    reg = pushed_image.registry
    url = f"{reg.url}/v2/fixtures/small/manifests/latest"
    r = session.get(url, headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = session.get(url, headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5"})
    assert r.status_code == 200
    r = session.get(url, headers={"Accept": "*/*"})
    assert r.status_code == 200
    # an index is served as an index
    r = session.get(f"{reg.url}/v2/fixtures/multi/manifests/latest",
                    headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}"
                 for m in r.json()["manifests"]}
    assert platforms == {"linux/amd64", "linux/arm64"}


def test_blob_get_head(pushed_image, session):
    reg, layer = pushed_image.registry, _layer(pushed_image)
    url = f"{reg.url}/v2/fixtures/small/blobs/{layer.digest}"
    r = session.get(url)
    assert r.status_code == 200
    assert sha256_digest(r.content) == layer.digest
    assert int(r.headers["Content-Length"]) == layer.size_bytes
    assert r.headers["Docker-Content-Digest"] == layer.digest
    h = session.head(url)
    assert h.status_code == 200
    assert h.content == b""
    assert int(h.headers["Content-Length"]) == layer.size_bytes


def test_blob_ranges(pushed_image):
    reg, layer = pushed_image.registry, _layer(pushed_image)
    full = pushed_image.layout.read_blob(layer.digest)
    size = len(full)
    path = f"/v2/fixtures/small/blobs/{layer.digest}"
    cases = {
        "bytes=100-199": (100, 199),
        f"bytes=100-{size + 50}": (100, size - 1),  # last clipped to the end
        "bytes=1000-": (1000, size - 1),
        "bytes=-100": (size - 100, size - 1),
        f"bytes=-{size * 2}": (0, size - 1),
    }
    for header, (first, last) in cases.items():
        status, headers, body = _raw(reg, "GET", path, {"Range": header})
        assert status == 206, header
        assert headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert int(headers["content-length"]) == last - first + 1 == len(body)
        assert body == full[first:last + 1]
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        status, headers, body = _raw(reg, "GET", path, {"Range": header})
        assert status == 416, header
        assert headers["content-range"] == f"bytes */{size}"
        assert int(headers["content-length"]) == len(body)  # not distribution's stale length
    # multiple ranges or nonsense: the whole blob with 200 (RFC 9110 lets a server ignore Range)
    for header in ("bytes=0-9,20-29", "bytes=9-0", "items=0-9", "bytes=a-b"):
        status, headers, body = _raw(reg, "GET", path, {"Range": header})
        assert status == 200, header
        assert body == full


def test_parse_range_unit():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-3", 0) == "unsatisfiable"
    assert parse_range("bytes=10-", 10) == "unsatisfiable"
    assert parse_range("bytes=3-2", 10) is None


def test_keep_alive_reuses_connection(pushed_image):
    reg, layer = pushed_image.registry, _layer(pushed_image)
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", f"/v2/fixtures/small/blobs/{layer.digest}")
            r = conn.getresponse()
            assert r.status == 200
            assert sha256_digest(r.read()) == layer.digest
            conn.request("GET", "/v2/fixtures/small/blobs/sha256:" + "0" * 64)
            r = conn.getresponse()
            assert r.status == 404
            r.read()
        sock = conn.sock
        assert sock is not None  # still the first connection
    finally:
        conn.close()


def test_tags_list_and_pagination(tmp_path, small_image, session):
    with EmbeddedRegistry(tmp_path) as reg:
        for tag in ("c", "a", "b"):
            push_image(small_image, f"{reg.host}/p/q:{tag}")
        r = session.get(f"{reg.url}/v2/p/q/tags/list")
        assert r.json() == {"name": "p/q", "tags": ["a", "b", "c"]}
        r = session.get(f"{reg.url}/v2/p/q/tags/list?n=2")
        assert r.json()["tags"] == ["a", "b"]
        assert 'rel="next"' in r.headers["Link"]
        r = session.get(f"{reg.url}/v2/p/q/tags/list?n=2&last=b")
        assert r.json()["tags"] == ["c"]
        r = session.get(f"{reg.url}/v2/nope/tags/list")
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        r = session.get(f"{reg.url}/v2/_catalog")
        assert r.json() == {"repositories": ["p/q"]}


# --- errors and hostile input -------------------------------------------------------------
@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v2/fixtures/small/blobs/sha256:" + "a" * 64, 404, "BLOB_UNKNOWN"),
    ("/v2/fixtures/small/manifests/nope", 404, "MANIFEST_UNKNOWN"),
    ("/v2/fixtures/small/manifests/sha256:" + "b" * 64, 404, "MANIFEST_UNKNOWN"),
    ("/v2/Fixtures/small/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/-bad/manifests/latest", 400, "NAME_INVALID"),
    # a tag outside the grammar names no manifest: 404 on GET/HEAD (as the OCI conformance suite
    # and Distribution answer); PUT of one is 400 TAG_INVALID (tests/test_referrers.py)
    ("/v2/fixtures/small/manifests/-tag", 404, "MANIFEST_UNKNOWN"),
    ("/v2/fixtures/small/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
    ("/v2/fixtures/small/manifests/" + "t" * 129, 404, "MANIFEST_UNKNOWN"),
    ("/v2/fixtures/small/blobs/sha256:abc", 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/sha256:totallywrong", 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/notadigest", 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", 400, "DIGEST_INVALID"),
    ("/v2/../../../etc/passwd/blobs/sha256:" + "a" * 64, 400, "NAME_INVALID"),
    ("/v2/%2e%2e/%2e%2e/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/fixtures/small/manifests/..%2f..%2f..%2fetc%2fpasswd", 404, "MANIFEST_UNKNOWN"),
    ("/v2/fixtures/small/blobs/uploads/..%2f..%2fblobs", 404, "BLOB_UPLOAD_UNKNOWN"),
    # grammatical digests of algorithms the registry does not store: 400 (distribution-spec main
    # "SHOULD 400 on unsupported algorithms"; DIGEST_INVALID as Distribution 2.8.2 answers md5)
    ("/v2/fixtures/small/blobs/md5:0123", 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/sha512:" + "a" * 128, 400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/blobs/multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
     400, "DIGEST_INVALID"),
    ("/v2/fixtures/small/manifests/md5:0123", 400, "DIGEST_INVALID"),
])
def test_error_answers(pushed_image, path, status, code):
    got, headers, body = _raw(pushed_image.registry, "GET", path)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert _error_code(body) == code
    got, headers, body = _raw(pushed_image.registry, "HEAD", path)
    assert got == status
    assert body == b""


def test_unsupported_digest_algorithm_is_400_naming_it(tmp_path, small_image, session):
    """GET/HEAD/DELETE of a blob, a manifest by digest and a finished upload, each with a digest
    of an algorithm the registry does not store: 400 DIGEST_INVALID whose message names the
    algorithm and the supported one (sha256); nothing is stored or deleted."""
    data = b"some blob"
    with EmbeddedRegistry(tmp_path / "root") as reg:
        digest = push_image(small_image, f"{reg.host}/a/b:v1")
        blob = small_image.layers[0].digest
        for algorithm, encoded in (("md5", "0123"), ("sha512", "a" * 128)):
            other = f"{algorithm}:{encoded}"
            for method in ("GET", "DELETE"):
                r = session.request(method, f"{reg.url}/v2/a/b/blobs/{other}")
                assert r.status_code == 400, (method, other)
                error = r.json()["errors"][0]
                assert error["code"] == "DIGEST_INVALID"
                assert repr(algorithm) in error["message"]
                assert "sha256" in error["message"]
            assert session.head(f"{reg.url}/v2/a/b/blobs/{other}").status_code == 400
            r = session.get(f"{reg.url}/v2/a/b/manifests/{other}")
            assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "DIGEST_INVALID")
            r = session.post(f"{reg.url}/v2/a/b/blobs/uploads/?digest={other}", data=data)
            assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "DIGEST_INVALID")
        assert session.head(f"{reg.url}/v2/a/b/blobs/{blob}").status_code == 200
        assert session.head(f"{reg.url}/v2/a/b/manifests/{digest}").status_code == 200
        assert not any((tmp_path / "root" / "uploads").iterdir())
        assert session.head(f"{reg.url}/v2/a/b/blobs/{sha256_digest(data)}").status_code == 404


def test_no_write_outside_root(tmp_path, session):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    data = b"escape attempt"
    digest = sha256_digest(data)
    with EmbeddedRegistry(root) as reg:
        for name in ("..%2f..%2foutside", "a/../../outside", "%2e%2e/outside"):
            # (requests removes literal dot segments itself: then the route is unknown, 404)
            r = session.post(f"{reg.url}/v2/{name}/blobs/uploads/?digest={digest}", data=data)
            assert r.status_code in (400, 404), name
            r = session.put(f"{reg.url}/v2/{name}/manifests/latest", data=b"{}")
            assert r.status_code in (400, 404), name
            status, _, _ = _raw(reg, "POST", f"/v2/{name}/blobs/uploads/?digest={digest}",
                                body=data)
            assert status == 400, name
        r = session.put(f"{reg.url}/v2/ok/manifests/..%2f..%2f..%2foutside%2fx", data=b"{}")
        assert r.status_code == 400
        r = session.patch(f"{reg.url}/v2/ok/blobs/uploads/..%2f..%2f..%2foutside", data=data)
        assert r.status_code == 404
    assert list(outside.iterdir()) == []
    assert not any(p.name == "x" for p in tmp_path.rglob("x"))


def test_unknown_endpoint_and_method(embedded_registry, session):
    assert session.get(embedded_registry.url + "/v3/").status_code == 404
    assert session.get(embedded_registry.url + "/v2/a/tags/other").status_code == 404
    assert session.post(embedded_registry.url + "/v2/").status_code == 405


# --- push side ------------------------------------------------------------------------------
def _upload_location(reg, session, name: str) -> str:
    r = session.post(f"{reg.url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Docker-Upload-UUID"]
    return reg.url + r.headers["Location"]


def test_push_monolithic_post_and_put(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        data = b"x" * 1000
        digest = sha256_digest(data)
        r = session.post(f"{reg.url}/v2/r/blobs/uploads/?digest={digest}", data=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201
        assert r.headers["Location"] == f"/v2/r/blobs/{digest}"
        assert r.headers["Docker-Content-Digest"] == digest
        assert session.get(f"{reg.url}/v2/r/blobs/{digest}").content == data
        data2 = b"y" * 2000
        loc = _upload_location(reg, session, "r")
        r = session.put(f"{loc}?digest={sha256_digest(data2)}", data=data2)
        assert r.status_code == 201
        assert session.get(f"{reg.url}/v2/r/blobs/{sha256_digest(data2)}").content == data2
        # blobs are per repository: not visible from another one until mounted
        assert session.head(f"{reg.url}/v2/other/blobs/{digest}").status_code == 404
        r = session.post(f"{reg.url}/v2/other/blobs/uploads/?mount={digest}&from=r")
        assert r.status_code == 201
        assert session.head(f"{reg.url}/v2/other/blobs/{digest}").status_code == 200
        # mount from a repository that lacks it: a normal upload session starts
        r = session.post(f"{reg.url}/v2/third/blobs/uploads/?mount={digest}&from=nope")
        assert r.status_code == 202


def test_push_chunked(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        data = bytes(range(256)) * 400
        digest = sha256_digest(data)
        loc = _upload_location(reg, session, "c")
        r = session.patch(loc, data=data[:50000], headers={
            "Content-Range": "0-49999", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        assert r.headers["Range"] == "0-49999"
        loc = reg.url + r.headers["Location"]
        st = session.get(loc)
        assert st.status_code == 204
        assert st.headers["Range"] == "0-49999"
        # out of order chunk → 416, upload untouched
        r = session.patch(loc, data=b"zz", headers={"Content-Range": "60000-60001"})
        assert r.status_code == 416
        assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        # streamed chunk (Transfer-Encoding: chunked, no Content-Range), like Go clients send
        rest = data[50000:80000]
        r = session.patch(loc, data=(rest[i:i + 7000] for i in range(0, len(rest), 7000)))
        assert r.status_code == 202
        assert r.headers["Range"] == "0-79999"
        # final chunk in the closing PUT
        r = session.put(f"{loc}?digest={digest}", data=data[80000:])
        assert r.status_code == 201
        assert session.get(f"{reg.url}/v2/c/blobs/{digest}").content == data


def test_upload_cancel(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        loc = _upload_location(reg, session, "c")
        session.patch(loc, data=b"abc")
        assert session.delete(loc).status_code == 204
        assert session.get(loc).status_code == 404
        assert list((tmp_path / "uploads").iterdir()) == []


def test_upload_digest_mismatch_stores_nothing(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        data = b"the real bytes"
        wrong = sha256_digest(b"other bytes")
        r = session.post(f"{reg.url}/v2/r/blobs/uploads/?digest={wrong}", data=data)
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        loc = _upload_location(reg, session, "r")
        r = session.put(f"{loc}?digest={wrong}", data=data)
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        r = session.put(f"{loc}?digest={wrong}", data=data)
        assert r.status_code == 404  # the failed session is gone
        for d in (wrong, sha256_digest(data)):
            assert session.head(f"{reg.url}/v2/r/blobs/{d}").status_code == 404
        assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
        assert list((tmp_path / "uploads").iterdir()) == []
        loc = _upload_location(reg, session, "r")
        r = session.put(loc, data=data)  # no ?digest=
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_interrupted_upload_leaves_no_blob(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        data = b"q" * 100_000
        digest = sha256_digest(data)
        with socket.create_connection(("127.0.0.1", reg.port), timeout=10) as s:
            s.sendall((f"POST /v2/r/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
                       f"Host: x\r\nContent-Length: {len(data)}\r\n\r\n").encode())
            s.sendall(data[:1000])
        deadline = time.monotonic() + 10
        while any((tmp_path / "uploads").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "uploads").iterdir()) == []
        assert session.head(f"{reg.url}/v2/r/blobs/{digest}").status_code == 404
        assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def _push_blob(reg, session, name: str, data: bytes) -> str:
    digest = sha256_digest(data)
    r = session.post(f"{reg.url}/v2/{name}/blobs/uploads/?digest={digest}", data=data)
    assert r.status_code == 201
    return digest


def test_manifest_put_checks(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        config = b"{}"
        cfg = _push_blob(reg, session, "m", config)
        missing = "sha256:" + "c" * 64
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cfg, "size": 2},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": missing, "size": 5}]}
        body = json.dumps(manifest).encode()
        url = f"{reg.url}/v2/m/manifests/v1"
        r = session.put(url, data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert r.json()["errors"][0]["detail"] == missing
        r = session.put(url, data=b"{not json", headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
        r = session.put(url, data=b'{"schemaVersion": 2}', headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
        manifest["layers"] = []
        body = json.dumps(manifest).encode()
        r = session.put(f"{reg.url}/v2/m/manifests/sha256:" + "d" * 64, data=body,
                        headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        r = session.put(url, data=body, headers={"Content-Type": DOCKER_MANIFEST})
        assert r.status_code == 400  # mediaType field contradicts Content-Type
        r = session.put(url, data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        assert r.headers["Docker-Content-Digest"] == sha256_digest(body)
        r = session.get(url)
        assert r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST
        # index naming a missing child manifest
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": missing, "size": 10}]}
        r = session.put(f"{reg.url}/v2/m/manifests/idx", data=json.dumps(index),
                        headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        # delete by tag, then by digest
        assert session.delete(url).status_code == 202
        assert session.get(url).status_code == 404
        assert session.delete(f"{reg.url}/v2/m/manifests/{sha256_digest(body)}").status_code == 202
        assert session.get(f"{reg.url}/v2/m/manifests/{sha256_digest(body)}").status_code == 404


def test_persistent_root_survives_restart(tmp_path, small_image, session):
    with EmbeddedRegistry(tmp_path) as reg:
        digest = push_image(small_image, f"{reg.host}/keep:v1")
    with EmbeddedRegistry(tmp_path) as reg:
        r = session.get(f"{reg.url}/v2/keep/manifests/v1")
        assert r.headers["Docker-Content-Digest"] == digest
    assert (tmp_path / "blobs").is_dir()  # a caller's root is kept


def test_temporary_root_removed_and_port_in_use(small_image):
    reg = EmbeddedRegistry().start()
    root, port = reg.root, reg.port
    try:
        busy = EmbeddedRegistry(port=port)
        with pytest.raises(ServerError, match="cannot listen"):
            busy.start()
        assert not busy.root.exists(), "a failed start left its temporary root behind"
        with pytest.raises(ServerError, match="cannot listen"), busy:  # and again, via with
            pass
        assert not busy.root.exists()
    finally:
        reg.close()
    assert not root.exists()
    with busy:  # the port is free now: the same object starts, with its root made again
        push_image(small_image, f"{busy.host}/x/y:v1")
        assert (busy.root / "blobs").is_dir()
    assert not busy.root.exists()
    with pytest.raises(ServerError, match="not running"):
        _ = reg.url


# --- the fault seam ---------------------------------------------------------------------------
def test_misbehavior_blob_faults(fresh_pushed_image, session):
    reg, layer = fresh_pushed_image.registry, _layer(fresh_pushed_image)
    full = fresh_pushed_image.layout.read_blob(layer.digest)
    path = f"/v2/fixtures/small/blobs/{layer.digest}"

    reg.misbehavior = Misbehavior(corrupt_blobs=True)
    status, headers, body = _raw(reg, "GET", path)
    assert status == 200
    assert len(body) == len(full)
    assert body != full
    assert sum(a != b for a, b in zip(body, full, strict=True)) == 1

    reg.misbehavior = Misbehavior(extra_blob_bytes=10)
    status, headers, body = _raw(reg, "GET", path)
    assert int(headers["content-length"]) == len(full) + 10 == len(body)
    assert body[: len(full)] == full

    reg.misbehavior = Misbehavior(blob_content_encoding="gzip")
    r = session.get(reg.url + path, stream=True)
    assert r.headers["Content-Encoding"] == "gzip"
    assert sha256_digest(r.raw.read(decode_content=False)) == layer.digest

    for mis, expect in ((Misbehavior(truncate_blobs_bytes=100), len(full) - 100),
                        (Misbehavior(drop_after_bytes=5000), 5000)):
        reg.misbehavior = mis
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert int(resp.headers["Content-Length"]) == len(full)
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(info.value.partial) == expect
        conn.close()

    reg.misbehavior = None
    assert sha256_digest(session.get(reg.url + path).content) == layer.digest


def test_misbehavior_manifest_faults(fresh_pushed_image, session):
    reg = fresh_pushed_image.registry
    url = f"{reg.url}/v2/fixtures/small/manifests/latest"
    reg.misbehavior = Misbehavior(malformed_manifests=True)
    r = session.get(url)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    reg.misbehavior = Misbehavior(manifest_media_type="text/plain")
    assert session.get(url).headers["Content-Type"] == "text/plain"
    reg.misbehavior = Misbehavior(fail_status=503)
    r = session.get(url)
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "0"
    assert session.get(reg.url + "/v2/").status_code == 200  # only /v2/<name>/ fails
    reg.misbehavior = Misbehavior(latency_s=0.3)
    t0 = time.monotonic()
    assert session.get(url).status_code == 200
    assert time.monotonic() - t0 >= 0.3  # a lower bound, not a speed claim


def test_authorizer_and_redirect(tmp_path, small_image, session):
    def authorizer(method, path, headers):
        if headers.get("Authorization") == "Bearer ok":
            return None
        return 401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/token"'}

    with EmbeddedRegistry(tmp_path, authorizer=authorizer,
                          blob_redirect=lambda name, d: f"http://127.0.0.2:9/{name}/{d}") as reg:
        r = session.get(reg.url + "/v2/")
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
        s = requests.Session()
        s.trust_env = False
        s.headers["Authorization"] = "Bearer ok"
        push_image(small_image, f"{reg.host}/a:v1", session=s)
        layer = small_image.layers[0]
        r = s.get(f"{reg.url}/v2/a/blobs/{layer.digest}", allow_redirects=False)
        assert r.status_code == 307
        assert r.headers["Location"] == f"http://127.0.0.2:9/a/{layer.digest}"
        s.close()


def test_tls(tmp_path, small_image):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with EmbeddedRegistry(tmp_path / "root", ssl_context=ctx) as reg:
        assert reg.url.startswith("https://127.0.0.1:")
        digest = push_image(small_image, f"{reg.host}/tls:v1", plain_http=False,
                            ca_bundle=ca_file)
        s = requests.Session()
        s.trust_env = False
        layer = small_image.layers[-1]
        r = s.get(f"{reg.url}/v2/tls/blobs/{layer.digest}", verify=str(ca_file))
        assert sha256_digest(r.content) == layer.digest
        r = s.get(f"{reg.url}/v2/tls/manifests/v1", verify=str(ca_file))
        assert r.headers["Docker-Content-Digest"] == digest
        s.close()


def test_slow_client_does_not_stall_others(tmp_path, session):
    """One client requests a big blob and never reads; eight others are served meanwhile."""
    with EmbeddedRegistry(tmp_path) as reg:
        big = bytes(8 << 20)  # larger than the socket buffers: the slow send blocks
        digest = _push_blob(reg, session, "big", big)
        small = b"s" * 300_000
        small_digest = _push_blob(reg, session, "big", small)
        slow = socket.create_connection(("127.0.0.1", reg.port), timeout=10)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(f"GET /v2/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        slow.recv(100)  # the server is now sending to a client that does not read
        results: list[str] = []
        errors: list[BaseException] = []

        def fetch() -> None:
            try:
                s = requests.Session()
                s.trust_env = False
                for _ in range(3):
                    r = s.get(f"{reg.url}/v2/big/blobs/{small_digest}", timeout=20)
                    results.append(sha256_digest(r.content))
                s.close()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        slow.close()
        assert not errors
        assert results == [small_digest] * 24


def test_persistent_hash_of_stored_blob_is_content(pushed_image):
    root: Path = pushed_image.registry.root
    for d in pushed_image.layout.descriptors:
        p = root / "blobs" / "sha256" / d.digest[7:]
        assert "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == d.digest


def test_close_cuts_keep_alive_connections(tmp_path):
    reg = EmbeddedRegistry(tmp_path).start()
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)

    def get_v2() -> bytes:
        # the cut shows either on sending (reset already seen) or on reading the reply
        conn.request("GET", "/v2/")
        return conn.getresponse().read()

    get_v2()
    reg.close()
    with pytest.raises((http.client.HTTPException, OSError)):
        get_v2()
    conn.close()


def test_malformed_chunked_body_is_400(tmp_path):
    with EmbeddedRegistry(tmp_path) as reg, \
            socket.create_connection(("127.0.0.1", reg.port), timeout=10) as s:
        s.sendall(b"POST /v2/r/blobs/uploads/?digest=sha256:" + b"a" * 64 + b" HTTP/1.1\r\n"
                  b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\nzz-not-hex\r\n")
        reply = b""
        while chunk := s.recv(65536):  # the server closes after answering
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400")
        assert b"BLOB_UPLOAD_INVALID" in reply
        assert list((tmp_path / "uploads").iterdir()) == []


def test_bad_request_line_and_unknown_method(embedded_registry):
    with socket.create_connection(("127.0.0.1", embedded_registry.port), timeout=10) as s:
        s.sendall(b"GET /v2/ HTTP/x.y\r\n\r\n")
        assert b"Bad request version" in s.recv(1000)  # http.server answers HTTP/0.9-style
    assert _raw(embedded_registry, "GET", "/v2/")[0] == 200  # and keeps serving
    status, _, _ = _raw(embedded_registry, "OPTIONS", "/v2/")
    assert status == 501


def test_load_image_without_http(tmp_path, multiarch_image, session):
    with EmbeddedRegistry(tmp_path) as reg:
        digest = reg.load_image(multiarch_image, "loaded/multi", "v1")
        assert digest == multiarch_image.manifest_digest
        r = session.get(f"{reg.url}/v2/loaded/multi/manifests/v1")
        assert r.headers["Content-Type"] == OCI_INDEX
        assert r.content == multiarch_image.read_blob(digest)
        for d in multiarch_image.descriptors:
            kind = "manifests" if d.media_type in (OCI_INDEX, OCI_MANIFEST) else "blobs"
            r = session.get(f"{reg.url}/v2/loaded/multi/{kind}/{d.digest}")
            assert r.status_code == 200
            assert sha256_digest(r.content) == d.digest
        # the same as a push: pushing afterwards finds everything present
        assert push_image(multiarch_image, f"{reg.host}/loaded/multi:v2") == digest
        with pytest.raises(ServerError, match="invalid repository"):
            reg.load_image(multiarch_image, "Bad/Name")
        with pytest.raises(ServerError, match="invalid tag"):
            reg.load_image(multiarch_image, "ok", "-bad")


def test_failed_tls_handshake_is_quiet_and_harmless(tmp_path, capfd):
    trustme = pytest.importorskip("trustme")
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    with EmbeddedRegistry(tmp_path, ssl_context=ctx) as reg:
        with socket.create_connection(("127.0.0.1", reg.port), timeout=10) as raw:
            raw.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to TLS
            with contextlib.suppress(OSError):
                raw.recv(100)
        s = requests.Session()
        s.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            s.get(reg.url + "/v2/", timeout=10)  # our CA is unknown to the client
        s.close()
    assert "Traceback" not in capfd.readouterr().err

