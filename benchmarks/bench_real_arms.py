"""What managing and tracing the real pullers costs, as ratios to their pull time.

For each real arm (docker, ctr-fetch, ctr-pull, skopeo) pulling the same image from the
embedded registry on 127.0.0.1, side by side in one run on one machine:

1. **Management overhead per run**: ``prepare_s`` (removing what the last run stored and
   verifying the state is cold) and, inside it, ``cold_check_s`` (the verification alone), as a
   fraction of the pull's wall time. Neither is inside the measurement (the runner times the
   client process only), but they set how long an experiment takes.
2. **Tracing overhead**: the same arm with ``trace=true`` (strace attached to the daemon tree,
   or wrapping the client) against the untraced arm, in alternating pairs: ratio of medians of
   wall time and of CPU (client + daemon tree). This is why traced runs are a separate arm and
   never pooled with untraced ones.

The load average is printed before and after (the machine is shared: read ratios, not times).

Usage::

    python benchmarks/bench_real_arms.py [--image synthetic-256m] [--pairs 5] [--kinds docker,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import pullbench
from pullbench.arms import PullTarget, make_arm
from pullbench.servers import EmbeddedRegistry

KINDS = ("docker", "ctr-fetch", "ctr-pull", "skopeo")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def _cpu(row: dict) -> float:
    return float(row["cpu_user_s"]) + float(row["cpu_sys_s"])


def bench(kind: str, target: PullTarget, pairs: int, work: Path) -> dict[str, float]:
    plain = make_arm(kind, kind, {})
    traced = make_arm(kind, f"{kind}[trace=True]", {"trace": True})
    rows: dict[str, list[dict]] = {"plain": [], "traced": []}
    with plain, traced:
        plain.start([target])
        traced.start([target])
        for arm, key in ((plain, "plain"), (traced, "traced")):  # one warm-up run each
            arm.run(target, work / f"warm-{key}")
        for i in range(pairs):
            order = (("plain", plain), ("traced", traced))
            for key, arm in order if i % 2 == 0 else order[::-1]:
                row = arm.run(target, work / f"{key}-{i}", timeout_s=900)
                if row["status"] != "ok":
                    raise SystemExit(f"{kind} ({key}) run failed: {row['error']}")
                rows[key].append(row)
    p, t = rows["plain"], rows["traced"]
    pull = _median(p, "duration_s")
    return {
        "pull_s": pull,
        "prepare_s": _median(p, "prepare_s"),
        "prepare_ratio": statistics.median(r["prepare_s"] / r["duration_s"] for r in p),
        "cold_check_ratio": statistics.median(r["cold_check_s"] / r["duration_s"] for r in p),
        "traced_pull_s": _median(t, "duration_s"),
        "trace_wall_ratio": _median(t, "duration_s") / pull,
        "trace_cpu_ratio": statistics.median(_cpu(r) for r in t)
        / statistics.median(_cpu(r) for r in p),
        "traced_writes": statistics.median(r["write_count"] for r in t),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="synthetic-256m")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    layout = pullbench.build_image(args.image)
    print(f"load average before: {_load()}  ({os.cpu_count()} CPUs)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-real-arms-") as tmp, \
            EmbeddedRegistry(Path(tmp) / "registry") as registry:
        ref = f"{registry.host}/bench/{args.image}:latest"
        digest = pullbench.push_image(layout, ref)
        target = PullTarget.from_reference(ref, digest=str(digest),
                                           size_bytes=layout.total_size_bytes)
        for kind in args.kinds.split(","):
            results[kind] = bench(kind, target, args.pairs, Path(tmp) / kind)
    print(f"load average after:  {_load()}")
    mib = layout.total_size_bytes / 2**20
    print(f"\n{args.image} ({mib:.0f} MiB), embedded registry on loopback, plain HTTP; "
          f"{args.pairs} untraced/traced pairs per arm (medians)\n")
    header = (f"{'arm':<10} {'pull s':>7} {'prepare s':>9} {'prepare/pull':>12} "
              f"{'check/pull':>10} {'traced s':>8} {'trace wall x':>12} {'trace CPU x':>11} "
              f"{'writes':>7}")
    print(header)
    print("-" * len(header))
    for kind, r in results.items():
        print(f"{kind:<10} {r['pull_s']:7.3f} {r['prepare_s']:9.3f} "
              f"{r['prepare_ratio']:11.1%} {r['cold_check_ratio']:10.1%} "
              f"{r['traced_pull_s']:8.3f} {r['trace_wall_ratio']:12.2f} "
              f"{r['trace_cpu_ratio']:11.2f} {r['traced_writes']:7.0f}")
    print("\nprepare = remove the last run's image/content/snapshots + verify cold (untimed); "
          "check = the verification alone.\ntrace x = traced / untraced (wall time; CPU of client "
          "+ daemon tree, strace's own CPU included for wrapped clients).")


if __name__ == "__main__":
    main()
