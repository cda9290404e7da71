#!/usr/bin/env python3
"""Blob serving rate: the embedded registry vs Distribution (docker-registry 2.8.2).

Both registries serve the same blob (one random layer, default 256 MiB) from their own storage on
the same disk; ``curl -o /dev/null`` fetches it over loopback, alternating embedded /
Distribution run by run after one warm-up each (page cache warm for both). Prints every run,
the median MB/s of each (MB = 10**6 bytes) and the ratio embedded / Distribution. Target: ≥ 1.0,
so the server is never the bottleneck of a pull measurement.

Usage::

    python benchmarks/bench_registry_serving.py [--runs 7] [--size-mib 256] [--tls]

``--tls`` serves HTTPS from both (a throw-away CA from trustme; curl gets ``--cacert``).
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pullbench import SyntheticImageSpec, build_image, push_image
from pullbench.servers import DistributionRegistry, EmbeddedRegistry


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per registry (default 7)")
    parser.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    parser.add_argument("--tls", action="store_true", help="HTTPS on both registries")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is required: apt-get install curl")

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
    with EmbeddedRegistry(ssl_context=ctx) as emb, DistributionRegistry(**tls_files) as dist:
        urls = {}
        for label, reg in (("embedded", emb), ("distribution", dist)):
            push_image(layout, f"{reg.host}/bench/blob:v1", plain_http=not args.tls,
                       ca_bundle=cacert)
            urls[label] = f"{reg.url}/v2/bench/blob/blobs/{layer.digest}"
        print(f"blob {layer.digest[:19]}… {layer.size_bytes} bytes "
              f"({layer.size_bytes / 2**20:.1f} MiB); embedded {emb.version}, "
              f"Distribution {dist.version}; curl -o /dev/null over loopback"
              f"{' (HTTPS)' if args.tls else ''}")
        for url in urls.values():  # warm-up: both blobs in the page cache
            curl_rate(url, layer.size_bytes, cacert)
        rates: dict[str, list[float]] = {"embedded": [], "distribution": []}
        for i in range(args.runs):
            order = ("embedded", "distribution") if i % 2 == 0 else ("distribution", "embedded")
            for label in order:
                rate = curl_rate(urls[label], layer.size_bytes, cacert)
                rates[label].append(rate)
                print(f"run {i + 1:2d} {label:<12} {rate:8.1f} MB/s")
    shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    for label in ("embedded", "distribution"):
        vals = " ".join(f"{v:.0f}" for v in rates[label])
        print(f"{label:<12} median {med[label]:8.1f} MB/s  (runs: {vals})")
    ratio = med["embedded"] / med["distribution"]
    print(f"ratio embedded/distribution (medians) = {ratio:.2f}  "
          f"[target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
