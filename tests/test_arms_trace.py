"""strace output -> the strategies' histograms, from a real traced process.

A child process (several threads, so strace interleaves ``<unfinished ...>`` and ``resumed``
lines when they overlap) reads known sizes from a real TCP socket and writes known sizes to a
layer-like temp file and to another file that must not be counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

WRITER = textwrap.dedent("""
    import os, socket, sys, threading
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port)); peer, _ = srv.accept()
    peer.sendall(b"x" * (3 * 4096))
    got = 0
    while got < 3 * 4096:
        got += len(cli.recv(4096))  # recvfrom on a socket connected to `port`
    folder = sys.argv[1]
    layer = os.open(os.path.join(folder, "GetImageBlob123456"), os.O_WRONLY | os.O_CREAT)
    other = os.open(os.path.join(folder, "config.json"), os.O_WRONLY | os.O_CREAT)
    def work(n):
        for _ in range(200):
            os.write(layer, b"a" * 32768)
        for _ in range(n):
            os.write(layer, b"b" * 1000)
    threads = [threading.Thread(target=work, args=(n,)) for n in (5, 7)]
    [t.start() for t in threads]; [t.join() for t in threads]
    os.writev(layer, [b"c" * 10, b"d" * 6])
    os.write(other, b"z" * 32768)
    print(port, flush=True)
""")


def test_histograms_from_a_real_trace(tmp_path, need_tool):
    from pullbench.arms._trace import StraceSession

    need_tool("strace", "strace")
    session = StraceSession(tmp_path / "trace", file_pattern=re.compile(r"/GetImageBlob"),
                            registry_port=None)
    argv = session.wrap([sys.executable, "-c", WRITER, str(tmp_path)])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    port = int(out.stdout.split()[-1])
    result = session.stop()
    assert result.write_sizes == {32768: 400, 1000: 12, 16: 1}
    assert result.syscall_counts["write"] == 412
    assert result.syscall_counts["writev"] == 1
    assert result.read_sizes == {}  # registry_port=None: reads are not kept
    # the same trace, keeping the reads from the socket to `port`
    from pullbench.arms._trace import parse_strace

    outputs = sorted((tmp_path / "trace").glob("*.strace"))
    with_reads = parse_strace(outputs[0], file_pattern=re.compile(r"/GetImageBlob"),
                              registry_port=port)
    assert sum(with_reads.read_sizes.values()) >= 3
    assert sum(s * c for s, c in with_reads.read_sizes.items()) == 3 * 4096
    row = with_reads.to_row()
    assert row["write_size_hist"] == {16: 1, 1024: 12, 32768: 400}
    assert row["write_count"] == 413
    assert row["median_write_bytes"] == 32768
    session.close()
    assert not (tmp_path / "trace").exists()


def test_attach_to_a_running_process_and_detach(tmp_path, need_tool):
    from pullbench.arms._trace import StraceSession

    need_tool("strace", "strace")
    script = textwrap.dedent("""
        import os, sys, time
        sys.stdin.readline()                      # wait until traced
        fd = os.open(sys.argv[1] + "/data", os.O_WRONLY | os.O_CREAT)
        for _ in range(8):
            os.write(fd, b"q" * 1048576)
        print("done", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        session = StraceSession(tmp_path / "trace", file_pattern=re.compile(r"/data$"),
                                registry_port=None)
        session.attach([proc.pid])
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline().strip() == "done"  # type: ignore[union-attr]
        result = session.stop()
        assert result.write_sizes == {1048576: 8}
        session.close()
        assert proc.poll() is None  # detached, not killed
    finally:
        proc.kill()
        proc.wait()


def test_attach_failure_is_a_clear_error(tmp_path, need_tool):
    from pullbench import ServerError
    from pullbench.arms._trace import StraceSession

    need_tool("strace", "strace")
    session = StraceSession(tmp_path / "trace", file_pattern=re.compile("x"), registry_port=None)
    with pytest.raises(ServerError, match="strace could not attach"):
        session.attach([2**22 + 12345], timeout_s=5)  # no such process
