"""Building dockerd from source: cold and variant build times, and the disk it takes.

Prints:

1. build times, in a fresh cache folder (its own GOCACHE): ``stock`` cold (source fetched and
   unpacked, every package compiled), then ``pr48602`` and ``bufio`` (write_size=1m) as variants
   (the overlay GOPATH entry: only ``distribution`` and what imports it are recompiled), then a
   cache hit; the variant/cold ratio is the number to read;
2. disk: the Go toolchain (/usr/lib/go-1.19), the Go libraries ``apt-get build-dep docker.io``
   installs (/usr/share/gocode), and the cache's parts (source, GOCACHE, overlays, binaries).

Run (root not needed once ``pullbench dockerd setup`` reports nothing missing)::

    python benchmarks/bench_dockerd_build.py [--keep DIR]

The machine is shared: the load average is printed before and after; build times scale with it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _loadguard import load_text

from pullbench.arms._dockerd_build import build_dockerd
from pullbench.arms._gotoolchain import find_go


def du_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None,
                        help="use (and keep) this cache folder instead of a temporary one")
    args = parser.parse_args()
    go = find_go()
    print(f"# pullbench dockerd build benchmark · {go.version} · {load_text()}")
    tmp = None
    if args.keep is None:
        tmp = tempfile.mkdtemp(prefix="bench-dockerd-")
        cache = Path(tmp)
    else:
        cache = args.keep
    try:
        rows = []
        for label, variant, params in [("stock (cold)", "stock", {}),
                                       ("pr48602 (variant)", "pr48602", {}),
                                       ("bufio write_size=1m (variant)", "bufio",
                                        {"write_size": "1m"}),
                                       ("pr48602 (cached)", "pr48602", {})]:
            start = time.perf_counter()
            built = build_dockerd(variant, params, cache_dir=cache)
            wall = time.perf_counter() - start
            rows.append((label, wall, built.build_s, built.cached))
            print(f"  {label}: {wall:.1f} s ({load_text()})", flush=True)
        print()
        print(f"| {'build':<31} | {'wall s':>8} | {'go build s':>10} | cached |")
        print(f"|{'-' * 33}|{'-' * 10}|{'-' * 12}|--------|")
        for label, wall, build_s, cached in rows:
            hit = "yes" if cached else "no"
            print(f"| {label:<31} | {wall:>8.1f} | {build_s:>10.1f} | {hit:<6} |")
        cold = rows[0][1]
        print(f"\nvariant / cold: pr48602 {rows[1][1] / cold:.3f}×, bufio {rows[2][1] / cold:.3f}×"
              f"; cache hit {rows[3][1]:.2f} s")
        print()
        parts = [("Go toolchain (go.goroot)", go.goroot.resolve()),
                 ("Go libraries (/usr/share/gocode)", Path("/usr/share/gocode")),
                 ("cache: source", cache / "dockerd" / "source"),
                 ("cache: GOCACHE", cache / "dockerd" / "gocache"),
                 ("cache: overlays", cache / "dockerd" / "overlay"),
                 ("cache: binaries", cache / "dockerd" / "bin")]
        print(f"| {'disk':<34} | {'MB':>8} |")
        print(f"|{'-' * 36}|{'-' * 10}|")
        total = 0
        for label, path in parts:
            size = du_bytes(path)
            total += size
            print(f"| {label:<34} | {size / 1e6:>8.1f} |")
        print(f"| {'total':<34} | {total / 1e6:>8.1f} |")
        print(f"\n# done · {load_text()}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
