#!/usr/bin/env python3
"""Decompression and unpack rates, side by side with the command-line tools, and stage shares.

What it does, for each image (gzip catalog images; their layers are also re-encoded as zstd
level 3 here, so gzip and zstd decode the same tars):

1. Decompression rate of every decompressor strategy (``zlib``, ``isal``, ``zlib-ng``,
   ``unpigz``; zstd layers through ``zstandard``) on the same stored layer blobs, in MB/s of
   compressed input and of uncompressed output (MB = 10^6 bytes; wall time of reading the whole
   :class:`pullbench.LayerReader`, hashing the diff_id included), and in the same run the
   command-line rates of ``pigz -d -c`` and ``zstd -d -c`` on the same files (output to
   /dev/null), each the median of ``--runs`` interleaved repeats.
2. Unpack rate: the uncompressed tar applied to a fresh root (files/s and MB/s of tar), codec
   ``tar`` so nothing is decompressed.
3. Stage shares: ``pullbench.pull`` with ``UnpackPlan(decompressor, "after")`` from the embedded
   registry, over loopback and through the ``wan-200m`` shaping proxy; resolve, transfer and the
   unpack tail as shares of the pull's wall time, and the decompress/unpack split of the stage.

The load average is printed before and after: this machine is shared; read ratios.

Usage::

    python benchmarks/bench_decompress.py [--images synthetic-text-64m,synthetic-small-files]
        [--runs 3] [--profiles loopback,wan-200m]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _loadguard import load_text

from pullbench import (
    DecompressionLimits,
    ImageLayout,
    RootfsUnpacker,
    UnpackPlan,
    build_image,
    image_layers,
    list_decompressors,
    open_layer,
    pull,
    push_image,
)
from pullbench.servers import EmbeddedRegistry, ShapingProxy

MiB = 1 << 20
NO_CAPS = DecompressionLimits(max_ratio=None, max_uncompressed_bytes=None)


def _read_rate(path: Path, media_type: str, decompressor: str) -> tuple[float, int, int]:
    """Seconds to read the whole uncompressed stream, compressed bytes, uncompressed bytes."""
    with path.open("rb") as f:
        t0 = time.perf_counter()
        reader = open_layer(f, media_type, decompressor=decompressor, limits=NO_CAPS)
        buf = bytearray(MiB)
        while reader.readinto(buf):
            pass
        reader.close()
        return time.perf_counter() - t0, path.stat().st_size, reader.uncompressed_bytes


def _cli_rate(cmd: list[str], path: Path) -> float:
    with path.open("rb") as fin, Path(os.devnull).open("wb") as fout:
        t0 = time.perf_counter()
        subprocess.run(cmd, stdin=fin, stdout=fout, check=True)
        return time.perf_counter() - t0


def _zstd_copy(gz: Path, out: Path) -> tuple[Path, Path]:
    """The layer's tar, and its zstd level-3 encoding (what recompress_image writes)."""
    import zlib

    import zstandard

    tar = out.with_suffix(".tar")
    inflate = zlib.decompressobj(31)
    with gz.open("rb") as fin, tar.open("wb") as fout:
        while chunk := fin.read(MiB):
            fout.write(inflate.decompress(chunk))
        fout.write(inflate.flush())
    with tar.open("rb") as fin, out.open("wb") as fout:
        zstandard.ZstdCompressor(level=3).copy_stream(fin, fout)
    return tar, out


def _mb(n: int, s: float) -> float:
    return n / s / 1e6 if s > 0 else float("nan")


def bench_image(name: str, runs: int, profiles: list[str], work: Path) -> None:
    layout = build_image(name)
    layers = image_layers(layout.path)
    print(f"\n=== {name}: {len(layers)} layer(s), "
          f"{sum(s for _, _, s, _ in layers) / 1e6:.1f} MB compressed")
    # 1. decompression rates, per layer set (all layers concatenated in the totals)
    gz_blobs = [(layout.blob_path(d), mt) for mt, d, _, _ in layers]
    zst_blobs, tars = [], []
    for i, (blob, _mt) in enumerate(gz_blobs):
        tar, zst = _zstd_copy(blob, work / f"{name}-{i}.zst")
        zst_blobs.append(zst)
        tars.append(tar)
    arms: dict[str, list[float]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    pigz = shutil.which("unpigz") or shutil.which("pigz")
    zstd_cli = shutil.which("zstd")
    for _ in range(runs):  # interleaved: every arm once per round
        for dec in list_decompressors():
            total_s = comp = unc = 0
            for blob, mt in gz_blobs:
                s, c, u = _read_rate(blob, mt, dec)
                total_s, comp, unc = total_s + s, comp + c, unc + u
            arms.setdefault(f"gzip/{dec}", []).append(total_s)
            sizes[f"gzip/{dec}"] = (comp, unc)
        total_s = comp = unc = 0
        for zst in zst_blobs:
            s, c, u = _read_rate(zst, "application/vnd.oci.image.layer.v1.tar+zstd", "zlib")
            total_s, comp, unc = total_s + s, comp + c, unc + u
        arms.setdefault("zstd/zstandard", []).append(total_s)
        sizes["zstd/zstandard"] = (comp, unc)
        if pigz:
            arms.setdefault("gzip/`pigz -d` CLI", []).append(
                sum(_cli_rate([pigz, "-d", "-c"], b) for b, _ in gz_blobs))
            sizes["gzip/`pigz -d` CLI"] = sizes["gzip/zlib"]
        if zstd_cli:
            arms.setdefault("zstd/`zstd -d` CLI", []).append(
                sum(_cli_rate([zstd_cli, "-d", "-c", "-q"], z) for z in zst_blobs))
            sizes["zstd/`zstd -d` CLI"] = sizes["zstd/zstandard"]
    base = statistics.median(arms["gzip/zlib"])
    print(f"{'decompressor':24s} {'median s':>9s} {'MB/s in':>9s} {'MB/s out':>9s} "
          f"{'vs zlib':>8s}")
    for arm, times in arms.items():
        med = statistics.median(times)
        comp, unc = sizes[arm]
        print(f"{arm:24s} {med:9.3f} {_mb(comp, med):9.1f} {_mb(unc, med):9.1f} "
              f"{base / med:7.2f}x")
    # 2. unpack rate from the plain tars
    rates = []
    for r in range(runs):
        root = work / f"root-{name}-{r}"
        unpacker = RootfsUnpacker(root, privileged=False)
        t0 = time.perf_counter()
        files = nbytes = 0
        for tar in tars:
            res = unpacker.apply(tar, "application/vnd.oci.image.layer.v1.tar")
            files += res.files
            nbytes += res.uncompressed_bytes
        rates.append((time.perf_counter() - t0, files, nbytes))
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median(x[0] for x in rates)
    files, nbytes = rates[0][1], rates[0][2]
    print(f"unpack (tar → root, no decompression): {med:.3f} s, {files / med:,.0f} files/s, "
          f"{_mb(nbytes, med):.1f} MB/s of tar ({files} files)")
    # 3. stage shares of whole pulls
    with EmbeddedRegistry(work / f"registry-{name}") as reg:
        ref_path = f"unpack/{name}:bench"
        push_image(ImageLayout(layout.path), f"{reg.host}/{ref_path}")
        print(f"{'profile':10s} {'decomp':8s} {'total s':>8s} {'resolve':>8s} {'transfer':>9s} "
              f"{'unpack tail':>12s} | {'decompress':>10s} {'unpack':>8s} (of the stage, CPU)")
        for profile in profiles:
            proxy = ShapingProxy(reg.host, profile).start() if profile != "loopback" else None
            host = proxy.address if proxy is not None else reg.host
            try:
                for dec in ("zlib", "isal"):
                    results = []
                    for r in range(runs):
                        dest = work / f"store-{name}-{profile}-{dec}-{r}"
                        results.append(pull(f"{host}/{ref_path}", "containerd-1m", dest,
                                            plain_http=True,
                                            unpack=UnpackPlan(decompressor=dec,
                                                              privileged=False)))
                        shutil.rmtree(dest, ignore_errors=True)
                    res = sorted(results, key=lambda x: x.duration_s)[len(results) // 2]
                    total = res.duration_s
                    stage_cpu = (res.decompress_cpu_s or 0) + (res.unpack_cpu_s or 0)
                    print(f"{profile:10s} {dec:8s} {total:8.2f} {res.resolve_s / total:8.0%} "
                          f"{res.transfer_s / total:9.0%} {(res.unpack_tail_s or 0) / total:12.0%}"
                          f" | {(res.decompress_cpu_s or 0) / stage_cpu:10.0%} "
                          f"{(res.unpack_cpu_s or 0) / stage_cpu:8.0%}")
            finally:
                if proxy is not None:
                    proxy.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default="synthetic-text-64m,synthetic-small-files"
                    + (",debian-minbase" if os.geteuid() == 0 else ""))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profiles", default="loopback,wan-200m")
    args = ap.parse_args(argv)
    print(f"before: {load_text()}")
    print(f"python {sys.version.split()[0]}; decompressors {', '.join(list_decompressors())}")
    with tempfile.TemporaryDirectory(prefix="pullbench-bench-decompress-") as tmp:
        for name in args.images.split(","):
            bench_image(name.strip(), args.runs, args.profiles.split(","), Path(tmp))
    print(f"\nafter: {load_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
