#!/usr/bin/env python3
"""Blob serving rate: the embedded registry vs Distribution (docker-registry 2.8.2).

Both registries serve the same blob (one random layer, default 256 MiB) from their own storage on
the same disk; ``curl -o /dev/null`` fetches it over loopback, in a random order per round after
one warm-up each (page cache warm for all). Three servers: the embedded registry as shipped
(``blob_send="copy"``: 256 KiB pread/sendall pieces), the embedded registry with
``blob_send="sendfile"`` (``sendfile(2)``, its former default), and Distribution. Prints every
run, the median MB/s of each (MB = 10**6 bytes), the server's and curl's CPU seconds per GB
served (less sensitive to machine load than rates), and the ratios to Distribution. Target:
embedded / Distribution >= 1.0, so the server is never the bottleneck of a pull measurement.
The load average is printed before and after; on a loaded machine (1-minute load >= 1 per
core) the target is not judged.

Usage::

    python benchmarks/bench_registry_serving.py [--runs 7] [--size-mib 256] [--tls]

``--tls`` serves HTTPS from all (a throw-away CA from trustme; curl gets ``--cacert``).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _loadguard import load_text, quiet, verdict

from pullbench import SyntheticImageSpec, build_image, push_image
from pullbench.servers import DistributionRegistry, EmbeddedRegistry
from pullbench.servers._proxy import proc_stat_fields

LABELS = ("embedded", "embedded-sendfile", "distribution")


def curl_rate(url: str, size: int, cacert: str | None = None) -> float:
    """Fetch ``url`` with curl into /dev/null; return MB/s (10**6 bytes per second)."""
    tls = ["--cacert", cacert] if cacert else []
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--noproxy", "*", *tls, "-o", "/dev/null", "-w",
         "%{size_download} %{time_total}", url],
        capture_output=True, text=True, check=True, timeout=300).stdout.split()
    got, seconds = int(out[0]), float(out[1])
    if got != size:
        raise SystemExit(f"curl got {got} bytes from {url}, expected {size}")
    return got / seconds / 1e6


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = proc_stat_fields(pid)  # fields after the command name: utime is [11], stime [12]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's reaped children (the curl runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per registry (default 7)")
    parser.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    parser.add_argument("--tls", action="store_true", help="HTTPS on all registries")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is required: apt-get install curl")
    print(f"before: {load_text()}")
    quiet_before = quiet()

    spec = SyntheticImageSpec((args.size_mib << 20,), seed=4242)
    layout = build_image(spec)
    (layer,) = layout.layers
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    ctx, cacert, tls_files = None, None, {}
    if args.tls:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
        ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        cacert = str(tmp / "ca.pem")
        tls_files = {"tls_cert": tmp / "cert.pem", "tls_key": tmp / "key.pem"}
    rates: dict[str, list[float]] = {label: [] for label in LABELS}
    server_cpu = dict.fromkeys(LABELS, 0.0)
    client_cpu = dict.fromkeys(LABELS, 0.0)
    with EmbeddedRegistry(ssl_context=ctx) as emb, \
            EmbeddedRegistry(ssl_context=ctx, blob_send="sendfile") as emb_sf, \
            DistributionRegistry(**tls_files) as dist:
        regs = {"embedded": emb, "embedded-sendfile": emb_sf, "distribution": dist}
        pids = {"embedded": os.getpid(), "embedded-sendfile": os.getpid(),
                "distribution": dist.pid}
        urls = {}
        for label, reg in regs.items():
            push_image(layout, f"{reg.host}/bench/blob:v1", plain_http=not args.tls,
                       ca_bundle=cacert)
            urls[label] = f"{reg.url}/v2/bench/blob/blobs/{layer.digest}"
        print(f"blob {layer.digest[:19]}… {layer.size_bytes} bytes "
              f"({layer.size_bytes / 2**20:.1f} MiB); embedded {emb.version}, "
              f"Distribution {dist.version}; curl -o /dev/null over loopback"
              f"{' (HTTPS)' if args.tls else ''}")
        for url in urls.values():  # warm-up: every blob in the page cache
            curl_rate(url, layer.size_bytes, cacert)
        rng = random.Random(4242)
        for i in range(args.runs):
            order = list(LABELS)
            rng.shuffle(order)
            for label in order:
                pid = pids[label]
                assert pid is not None
                s0, c0 = cpu_s(pid), children_cpu_s()
                rate = curl_rate(urls[label], layer.size_bytes, cacert)
                server_cpu[label] += cpu_s(pid) - s0
                client_cpu[label] += children_cpu_s() - c0
                rates[label].append(rate)
                print(f"run {i + 1:2d} {label:<18} {rate:8.1f} MB/s")
    shutil.rmtree(tmp, ignore_errors=True)
    gb = args.runs * layer.size_bytes / 1e9
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{'server':<18} {'median MB/s':>11} {'/ Distribution':>14} {'server CPU s/GB':>16} "
          f"{'curl CPU s/GB':>14}  runs")
    for label in LABELS:
        vals = " ".join(f"{v:.0f}" for v in rates[label])
        print(f"{label:<18} {med[label]:11.1f} {med[label] / med['distribution']:14.2f} "
              f"{server_cpu[label] / gb:16.3f} {client_cpu[label] / gb:14.3f}  {vals}")
    ratio = med["embedded"] / med["distribution"]
    print(f"after: {load_text()}")
    print(f"ratio embedded/distribution (medians) = {ratio:.2f}  "
          f"[target >= 1.0: {verdict(ratio >= 1.0, quiet_before)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
