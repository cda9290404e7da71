#!/usr/bin/env python3
"""Concurrent pulls: the embedded registry vs Distribution (docker-registry 2.8.2) under load.

At each level (default 1, 4, 16, 64 concurrent clients) every client pulls the same image
(default 64 MiB: four random 16 MiB layers) ``--pulls-per-client`` times; levels with fewer
clients pull more times each so every level has at least ``--min-pulls`` pulls. One pull is one
``curl`` process on one keep-alive connection: manifest, config, then each layer, bodies to
/dev/null (a C client, so that 64 of them measure the server rather than Python). Both
registries run at every level, in turn, over loopback, page cache warm.

While a level runs, ``--stallers`` slowloris connections are held open against the registry
under test: half send a partial request line, half a partial upload body, then nothing. The
embedded registry is started with ``--idle-timeout``/``--request-timeout`` of ``--stall-timeout``
seconds and must drop them all within the level; the table says how many each registry dropped.

Printed per level and registry: pulls, errors, aggregate throughput (MB/s, MB = 10**6 bytes,
image bytes of all pulls / wall time of the level), p50 and p99 of the per-pull wall time, the
registry's peak RSS (kernel's VmHWM of the registry process: the embedded registry runs as
``pullbench registry serve`` in its own process, as Distribution does) and the stalled
connections dropped. The load average is printed before and after. Checks: zero errors
(always judged); RSS bounded (peak RSS at the top level no more than the idle RSS +
``--rss-per-client-mib`` per client, always judged); aggregate throughput embedded /
Distribution >= 1.0 at every level (judged only on a quiet machine). Bounded and self-stopping:
a fixed number of pulls per level, each curl limited to 300 s, and ``--max-seconds`` for the
whole run (then the remaining levels are skipped and said so).

Usage::

    python benchmarks/bench_registry_concurrency.py [--levels 1,4,16,64] [--size-mib 64]
        [--layers 4] [--pulls-per-client 2] [--min-pulls 16] [--stallers 8]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _loadguard import load_text, quiet, verdict

from pullbench import ImageLayout, SyntheticImageSpec, build_image, push_image
from pullbench.servers import DistributionRegistry

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Target:
    """One registry under test: where the image is, and its process."""

    label: str
    url: str
    repo: str
    pid: int


@dataclass
class LevelResult:
    clients: int
    pulls: int = 0
    errors: list[str] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    stalled_dropped: int = 0


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """``VmRSS`` (or ``VmHWM``, the peak) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {key} for pid {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's VmHWM of ``pid`` (writing 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def pull_once(t: Target, layout: ImageLayout) -> tuple[float, str | None]:
    """One pull by one curl process; returns (wall seconds, error or None)."""
    urls = [(f"{t.url}/v2/{t.repo}/manifests/latest", layout.top.size_bytes)]
    manifest = layout.read_json(layout.top.digest)
    for d in [manifest["config"], *manifest["layers"]]:
        urls.append((f"{t.url}/v2/{t.repo}/blobs/{d['digest']}", d["size"]))
    cmd = ["curl", "-sS", "--fail", "--noproxy", "*", "-H", f"Accept: {ACCEPT}",
           "-w", "%{http_code} %{size_download}\\n"]
    for url, _ in urls:
        cmd += [url, "-o", "/dev/null"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, "curl timed out after 300 s"
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        return elapsed, f"curl exit {proc.returncode}: {proc.stderr.strip()[:200]}"
    got = [line.split() for line in proc.stdout.splitlines()]
    want = [["200", str(size)] for _, size in urls]
    if got != want:
        return elapsed, f"unexpected answers {got} (want {want})"
    return elapsed, None


def open_stallers(t: Target, n: int) -> list[socket.socket]:
    """``n`` slowloris connections: half a partial request line, half a partial upload body."""
    host, port = t.url.removeprefix("http://").rsplit(":", 1)
    socks = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        if i % 2 == 0:
            s.sendall(f"GET /v2/{t.repo}/manifests/lat".encode())
        else:
            s.sendall(f"POST /v2/{t.repo}/blobs/uploads/?digest=sha256:{'a' * 64} HTTP/1.1\r\n"
                      f"Host: {host}\r\nContent-Length: {1 << 20}\r\n\r\n".encode() + b"x" * 999)
        socks.append(s)
    return socks


def count_dropped(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (EOF or reset); closes them all."""
    dropped = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(65536) == b"":
                dropped += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            dropped += 1
        s.close()
    return dropped


def run_level(t: Target, layout: ImageLayout, clients: int, pulls_per_client: int,
              stallers: int, stall_wait_s: float, deadline: float) -> LevelResult:
    res = LevelResult(clients)
    socks = open_stallers(t, stallers)
    stall_started = time.monotonic()
    reset_peak_rss(t.pid)
    lock = threading.Lock()

    def client() -> None:
        for _ in range(pulls_per_client):
            if time.monotonic() > deadline:
                with lock:
                    res.errors.append("not run: --max-seconds reached")
                return
            elapsed, err = pull_once(t, layout)
            with lock:
                res.pulls += 1
                res.pull_s.append(elapsed)
                if err:
                    res.errors.append(err)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    res.wall_s = time.perf_counter() - start
    res.peak_rss_mib = rss_mib(t.pid, "VmHWM")
    # give the stallers at least the registry's stall timeout (bounded) before counting drops
    time.sleep(max(0.0, min(stall_wait_s - (time.monotonic() - stall_started), stall_wait_s)))
    res.stalled_dropped = count_dropped(socks)
    return res


def start_embedded(layout: ImageLayout, root: Path, stall_timeout_s: float
                   ) -> tuple[subprocess.Popen[str], Target]:
    """``pullbench registry serve`` in its own process (dies with us), image loaded."""
    cmd = [sys.executable, "-c", "from pullbench.cli import main; main()", "registry", "serve",
           "--root", str(root), "--port", "0", "--push", str(layout.path),
           "--idle-timeout", str(stall_timeout_s), "--request-timeout", str(stall_timeout_s)]
    if shutil.which("setpriv"):
        cmd = ["setpriv", "--pdeathsig", "TERM", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pushed = proc.stdout.readline().split()  # pushed HOST/REPO:latest DIGEST
    serving = proc.stdout.readline().split()  # embedded registry serving URL from ROOT ...
    if len(pushed) < 2 or len(serving) < 4:
        proc.kill()
        raise SystemExit(f"pullbench registry serve did not start: {pushed} {serving}")
    repo = pushed[1].split("/", 1)[1].rsplit(":", 1)[0]
    return proc, Target("embedded", serving[3], repo, proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16,64", help="client counts (default 1,4,16,64)")
    parser.add_argument("--size-mib", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--layers", type=int, default=4, help="layers (default 4)")
    parser.add_argument("--pulls-per-client", type=int, default=2, help="default 2")
    parser.add_argument("--min-pulls", type=int, default=16, help="pulls per level at least")
    parser.add_argument("--stallers", type=int, default=8,
                        help="slowloris connections held during each level (default 8)")
    parser.add_argument("--stall-timeout", type=float, default=5.0,
                        help="embedded --idle-timeout/--request-timeout, seconds (default 5)")
    parser.add_argument("--rss-per-client-mib", type=float, default=2.0,
                        help="RSS bound: growth per client allowed, MiB (default 2)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="stop starting pulls after this long (default 900)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if shutil.which("curl") is None:
        raise SystemExit("curl is required: apt-get install curl")
    print(f"before: {load_text()}")
    quiet_before = quiet()
    deadline = time.monotonic() + args.max_seconds

    each = (args.size_mib << 20) // args.layers
    layout = build_image(SyntheticImageSpec((each,) * args.layers, seed=6464))
    image_bytes = layout.total_size_bytes
    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    emb_proc, emb = start_embedded(layout, tmp / "embedded", args.stall_timeout)
    results: dict[tuple[str, int], LevelResult] = {}
    idle_rss: dict[str, float] = {}
    try:
        with DistributionRegistry(tmp / "distribution") as dist:
            push_image(layout, f"{dist.host}/bench/image:latest")
            assert dist.pid is not None
            targets = [emb, Target("distribution", dist.url, "bench/image", dist.pid)]
            print(f"image {image_bytes / 1e6:.1f} MB in {args.layers} layers; "
                  f"{args.stallers} stalled connections per level; "
                  f"embedded --idle-timeout/--request-timeout {args.stall_timeout:g} s; "
                  f"Distribution {dist.version}")
            for t in targets:  # warm-up: page cache, first-connection costs
                _, err = pull_once(t, layout)
                if err:
                    raise SystemExit(f"{t.label}: warm-up pull failed: {err}")
                idle_rss[t.label] = rss_mib(t.pid)
            for level_i, clients in enumerate(levels):
                if time.monotonic() > deadline:
                    print(f"--max-seconds reached: levels from {clients} clients skipped")
                    break
                per_client = max(args.pulls_per_client, -(-args.min_pulls // clients))
                order = targets if level_i % 2 == 0 else targets[::-1]
                for t in order:
                    r = run_level(t, layout, clients, per_client, args.stallers,
                                  args.stall_timeout + 2.0, deadline)
                    results[(t.label, clients)] = r
                    print(f"  {t.label:<12} {clients:3d} clients: {r.pulls} pulls in "
                          f"{r.wall_s:.1f} s, {len(r.errors)} errors", flush=True)
    finally:
        emb_proc.send_signal(signal.SIGINT)
        try:
            emb_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            emb_proc.kill()
            emb_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'registry':<12} {'clients':>7} {'pulls':>5} {'errors':>6} {'MB/s':>8} "
          f"{'p50 s':>7} {'p99 s':>7} {'peak RSS MiB':>12} {'stalled dropped':>15}")
    ratios = []
    for clients in levels:
        for label in ("embedded", "distribution"):
            r = results.get((label, clients))
            if r is None:
                continue
            mbs = r.pulls * image_bytes / r.wall_s / 1e6 if r.wall_s else 0.0
            q = statistics.quantiles(r.pull_s, n=100, method="inclusive") if len(r.pull_s) > 1 \
                else [r.pull_s[0]] * 99
            print(f"{label:<12} {clients:7d} {r.pulls:5d} {len(r.errors):6d} {mbs:8.1f} "
                  f"{q[49]:7.2f} {q[98]:7.2f} {r.peak_rss_mib:12.1f} "
                  f"{r.stalled_dropped:>8d}/{args.stallers}")
        e, d = results.get(("embedded", clients)), results.get(("distribution", clients))
        if e and d and e.wall_s and d.wall_s:
            ratios.append((clients, (e.pulls / e.wall_s) / (d.pulls / d.wall_s)))
    print("aggregate throughput embedded/distribution: "
          + ", ".join(f"{c} clients {x:.2f}" for c, x in ratios))
    errors = [(k, msg) for k, r in results.items() for msg in r.errors]
    for (label, clients), msg in errors[:10]:
        print(f"error: {label} {clients} clients: {msg}")
    top = max(c for _, c in results) if results else 0
    emb_top = results.get(("embedded", top))
    rss_bound = idle_rss.get("embedded", 0.0) + args.rss_per_client_mib * top
    print(f"embedded RSS: idle {idle_rss.get('embedded', 0):.1f} MiB, peak at {top} clients "
          f"{emb_top.peak_rss_mib if emb_top else float('nan'):.1f} MiB, bound "
          f"{rss_bound:.1f} MiB (idle + {args.rss_per_client_mib:g} MiB per client)")
    print(f"after: {load_text()}")
    print(f"zero errors: {'met' if not errors else 'NOT met'} ({len(errors)} errors)")
    print(f"embedded RSS bounded: "
          f"{'met' if emb_top and emb_top.peak_rss_mib <= rss_bound else 'NOT met'}")
    emb_drops = [r.stalled_dropped for (label, _), r in results.items() if label == "embedded"]
    print(f"embedded dropped every stalled connection: "
          f"{'met' if emb_drops and all(x == args.stallers for x in emb_drops) else 'NOT met'}")
    print(f"throughput ratio >= 1.0 at every level: "
          f"{verdict(bool(ratios) and all(x >= 1.0 for _, x in ratios), quiet_before)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
