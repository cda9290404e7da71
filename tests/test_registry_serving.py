"""How the embedded registry serves under load: blob send paths, TCP options, stalled clients.

Real sockets on 127.0.0.1 throughout; no timing is asserted in absolute terms (a stalled
client is compared with the idle timeout the test configures).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pullbench import ServerError, sha256_digest
from pullbench.cli import main
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


# --- stalled clients (slowloris) -----------------------------------------------------------
def _closed_by_server(sock: socket.socket, within_s: float) -> float | None:
    """Wait (bounded) until the server closes ``sock``; return when (monotonic), or None."""
    end = time.monotonic() + within_s
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic()
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic()
    return None


def _others_are_served(reg: EmbeddedRegistry, digest: str, data: bytes, n: int = 8) -> float:
    """``n`` fresh clients fetch the blob; all must get it whole. Returns when they finished."""
    for _ in range(n):
        status, body = _get(reg, f"/v2/r/blobs/{digest}")
        assert status == 200
        assert body == data
    return time.monotonic()


@pytest.mark.parametrize("head", [b"GET /v2/ HT", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAcc"])
def test_partial_request_head_is_dropped_after_request_timeout(tmp_path, head):
    data = os.urandom(300_000)
    with EmbeddedRegistry(tmp_path, request_timeout_s=3.0, idle_timeout_s=60.0) as reg:
        digest = _push_blob(reg, "r", data)
        with socket.create_connection(("127.0.0.1", reg.port), timeout=10) as stalled:
            stalled.sendall(head)
            started = time.monotonic()
            served_at = _others_are_served(reg, digest, data)
            closed_at = _closed_by_server(stalled, within_s=30)
        assert closed_at is not None  # dropped, long before the 60 s idle timeout
        assert served_at < closed_at  # the others did not wait for it
        assert closed_at - started >= 3.0 * 0.9


def test_trickled_request_head_is_dropped_although_it_keeps_sending(tmp_path):
    """One header byte every 0.25 s never trips the idle timeout; the head deadline cuts it."""
    with EmbeddedRegistry(tmp_path, request_timeout_s=1.5, idle_timeout_s=60.0) as reg, \
            socket.create_connection(("127.0.0.1", reg.port), timeout=10) as s:
        s.sendall(b"GET /v2/ HTTP/1.1\r\n")
        started = time.monotonic()
        sent, closed = 0, False
        for _ in range(200):  # bounded: 50 s of trickle at most
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            if _closed_by_server(s, within_s=0.25) is not None:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    assert elapsed >= 1.5 * 0.9
    assert sent >= 3  # it really was trickling when it was cut


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_stalled_upload_body_is_dropped_and_discarded(tmp_path, method):
    data = os.urandom(300_000)
    with EmbeddedRegistry(tmp_path, idle_timeout_s=2.0) as reg:
        digest = _push_blob(reg, "r", data)
        if method == "POST":
            target = f"/v2/r/blobs/uploads/?digest=sha256:{'a' * 64}"
        else:
            conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
            conn.request("POST", "/v2/r/blobs/uploads/")
            r = conn.getresponse()
            r.read()
            target = r.headers["Location"]
            conn.close()
        with socket.create_connection(("127.0.0.1", reg.port), timeout=10) as stalled:
            stalled.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n"
                            f"Content-Length: {1 << 20}\r\n\r\n".encode() + b"x" * 1000)
            started = time.monotonic()
            served_at = _others_are_served(reg, digest, data)
            closed_at = _closed_by_server(stalled, within_s=30)
        assert closed_at is not None
        assert served_at < closed_at
        assert closed_at - started >= 2.0 * 0.9
        deadline = time.monotonic() + 10  # the handler cleans up just after closing
        while list((tmp_path / "uploads").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "uploads").iterdir()) == []  # the partial upload is gone


def test_silent_connection_is_dropped_after_idle_timeout(tmp_path):
    with EmbeddedRegistry(tmp_path, idle_timeout_s=1.0, request_timeout_s=30.0) as reg, \
            socket.create_connection(("127.0.0.1", reg.port), timeout=10) as s:
        started = time.monotonic()
        closed_at = _closed_by_server(s, within_s=20)
        assert closed_at is not None  # before the 30 s head deadline could apply
        assert closed_at - started >= 1.0 * 0.9
        assert _get(reg, "/v2/")[0] == 200


def test_client_that_stops_reading_is_dropped(tmp_path):
    data = os.urandom(8 << 20)  # far more than the socket buffers hold
    with EmbeddedRegistry(tmp_path, idle_timeout_s=1.0) as reg:
        digest = _push_blob(reg, "r", data)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", reg.port))
            s.sendall(f"GET /v2/r/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(3)  # stop reading for longer than the idle timeout
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(1 << 20):  # what was already buffered, then EOF
                    got += len(chunk)
        assert got < len(data)  # the body was cut: the server gave up on this client
        assert _get(reg, f"/v2/r/blobs/{digest}") == (200, data)


@pytest.mark.parametrize("kwargs", [{"idle_timeout_s": 0}, {"request_timeout_s": -1},
                                    {"idle_timeout_s": float("inf")}, {"request_timeout_s": "5"}])
def test_timeouts_must_be_positive_numbers(tmp_path, kwargs):
    with pytest.raises(ServerError, match="must be a positive number of seconds"):
        EmbeddedRegistry(tmp_path, **kwargs)


def test_cli_serve_timeouts(tmp_path):
    """``pullbench registry serve --idle-timeout`` reaches the registry: a silent client is cut."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pullbench.cli import main; main()", "registry", "serve",
         "--root", str(tmp_path / "root"), "--port", "0", "--idle-timeout", "1",
         "--request-timeout", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert _closed_by_server(s, within_s=20) is not None  # not the 60 s default
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_cli_serve_rejects_non_positive_timeouts(tmp_path):
    r = CliRunner().invoke(main, ["registry", "serve", "--root", str(tmp_path),
                                  "--idle-timeout", "0"])
    assert r.exit_code == 2
    assert "--idle-timeout" in r.output


def test_an_answer_that_ends_the_connection_says_so(tmp_path):
    """A 416 for an out-of-order chunk closes the connection: the answer carries
    ``Connection: close`` so that no client reuses it (and meets EOF on its next request)."""
    with EmbeddedRegistry(tmp_path) as reg:
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        conn.request("POST", "/v2/r/blobs/uploads/")
        r = conn.getresponse()
        r.read()
        location = r.headers["Location"]
        conn.request("PATCH", location, body=b"abc", headers={"Content-Range": "5-7"})
        r = conn.getresponse()
        r.read()
        assert r.status == 416
        assert r.headers["Connection"] == "close"
        assert r.will_close
        conn.close()
