"""How the embedded registry serves under load: blob send paths, TCP options, stalled clients.

Real sockets on 127.0.0.1 throughout; no timing is asserted in absolute terms (a stalled
client is compared with the idle timeout the test configures).
"""

from __future__ import annotations

import http.client
import os
import socket

import pytest

from pullbench import ServerError, sha256_digest
from pullbench.servers import EmbeddedRegistry


def _push_blob(reg: EmbeddedRegistry, name: str, data: bytes) -> str:
    digest = sha256_digest(data)
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
    conn.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=data)
    assert conn.getresponse().status == 201
    conn.close()
    return digest


def _get(reg: EmbeddedRegistry, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("blob_send", ["copy", "sendfile"])
def test_blob_send_paths_are_byte_exact_across_pieces(tmp_path, blob_send):
    # 256 KiB pieces: a size that is no multiple of them, ranges that start and end inside pieces
    data = os.urandom(3 * 256 * 1024 + 12345)
    with EmbeddedRegistry(tmp_path, blob_send=blob_send) as reg:
        digest = _push_blob(reg, "r", data)
        path = f"/v2/r/blobs/{digest}"
        status, body = _get(reg, path)
        assert status == 200
        assert body == data
        for first, last in ((0, 0), (1, 262144), (262143, 524288), (700000, len(data) - 1)):
            status, body = _get(reg, path, {"Range": f"bytes={first}-{last}"})
            assert status == 206
            assert body == data[first:last + 1], (first, last)


def test_blob_send_must_be_known(tmp_path):
    with pytest.raises(ServerError, match="blob_send must be 'copy' or 'sendfile'"):
        EmbeddedRegistry(tmp_path, blob_send="splice")


def test_connections_have_nagle_off(tmp_path):
    """Headers and body leave in two writes; with Nagle the body would wait for a delayed ACK."""
    with EmbeddedRegistry(tmp_path) as reg:
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        conn.request("GET", "/v2/")
        assert conn.getresponse().read() == b"{}"
        assert reg._server is not None
        (server_side,) = reg._server._open  # type: ignore[attr-defined]
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        conn.close()
