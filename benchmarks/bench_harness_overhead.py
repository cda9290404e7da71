"""Harness overhead of ``pullbench bench``: is the time we record the time of the pull?

Two questions, answered side by side in one run on one machine (ratios, not absolute times):

1. **Timer placement.** Each run records three timers: ``duration_s`` (the puller's own timer),
   ``pull_wall_s`` (the worker's timer around the ``pull()`` call: what the harness adds inside
   the measurement) and ``harness_wall_s`` (the parent's timer around the whole worker: fork from
   the fork server, IPC, teardown -- the isolation cost, which is *not* inside the measurement).
   Reported as % of the pull time.
2. **Probes.** Pulls with probes on vs off (``pull(probes=False)`` skips the per-thread CPU and
   ``/proc/thread-self/io`` snapshots of every worker and hashing thread, the process rusage and
   the strategy's counting of every read and write), interleaved in randomized pairs in fresh
   worker processes; the ratio of wall times with a 95% CI and the verdict at a 1% margin
   (``pullbench.compare_samples``, paired). The script checks that the "off" runs really
   measured nothing (no CPU, counters or histograms in their rows).

Target: both overheads < 1% of the pull time for a 256 MiB image.

Usage::

    python benchmarks/bench_harness_overhead.py [--image synthetic-256m] [--runs 20] [--pairs 80]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import pullbench
from pullbench.experiment._runner import _run_in_worker
from pullbench.servers import EmbeddedRegistry


def _pct(x: np.ndarray) -> str:
    return f"median {np.median(x):7.3f}%  mean {np.mean(x):7.3f}%  max {np.max(x):7.3f}%"


def timers(image: str, runs: int, work: Path) -> None:
    spec = pullbench.ExperimentSpec(
        name="overhead", images=(image,), arms=("go-iocopy", "containerd-1m"),
        blocks=runs // 2, warmup_blocks=1, seed=1,
    )
    result = pullbench.run_experiment(spec, work / "timers", progress=False)
    df = pullbench.load_results(result.directory)
    df = df[df["status"] == "ok"]
    inside = (df["pull_wall_s"] - df["duration_s"]) / df["duration_s"] * 100
    outside = (df["harness_wall_s"] - df["pull_wall_s"]) / df["pull_wall_s"] * 100
    print(f"1. timers over {len(df)} runs of {image} ({df['bytes'].iloc[0] / 2**20:.0f} MiB) "
          f"in fresh worker processes; median pull {df['duration_s'].median():.3f} s")
    print(f"   worker timer around pull() vs puller's own timer  (in the measurement): "
          f"{_pct(inside.to_numpy())}")
    print(f"   parent timer around the worker vs worker timer (isolation, not measured): "
          f"{_pct(outside.to_numpy())}")
    cost_ms = np.median(df["harness_wall_s"] - df["pull_wall_s"]) * 1e3
    print(f"   isolation cost per run: median {cost_ms:.1f} ms")


def probes(image: str, pairs: int, work: Path) -> None:
    layout = pullbench.build_image(image)
    rng = np.random.default_rng(2)
    on: list[float] = []
    off: list[float] = []
    cpu_on: list[float] = []
    cpu_off: list[float] = []
    off_unmeasured: list[bool] = []
    with EmbeddedRegistry(work / "registry") as reg:
        reference = f"{reg.host}/bench/{image}:latest"
        pullbench.push_image(layout, reference)
        task = {"pull_function": "pullbench.puller._pipeline:pull", "reference": reference,
                "strategy": "go-iocopy", "params": {}, "concurrency": 3, "plain_http": True,
                "ca_bundle": None}
        for i in range(pairs + 1):  # pair 0 is a warm-up
            order = [True, False] if rng.random() < 0.5 else [False, True]
            for probe in order:
                dest = work / f"store-{i}-{probe}"
                status, row = _run_in_worker({**task, "run_index": i, "dest": str(dest),
                                              "probes": probe}, 600)
                if status != "ok":
                    raise SystemExit(f"pull failed: {row}")
                if not probe:
                    off_unmeasured.append(all(row[k] is None for k in (
                        "cpu_user_s", "syscw", "write_count", "write_size_hist",
                        "peak_rss_bytes")))
                if i:
                    (on if probe else off).append(row["pull_wall_s"])
                    (cpu_on if probe else cpu_off).append(row["worker_cpu_user_s"]
                                                          + row["worker_cpu_sys_s"])
                import shutil

                shutil.rmtree(dest, ignore_errors=True)
    a, b = np.array(off), np.array(on)
    cmp = pullbench.compare_samples(a, b, margin=0.01, paired=True, rng=3,
                                    names=("probes off", "probes on"))
    print(f"2. probes on vs off, {pairs} randomized pairs of {image} in fresh worker processes")
    print(f"   'off' runs measured nothing (CPU, counters, histograms, RSS all None): "
          f"{all(off_unmeasured)} ({sum(off_unmeasured)}/{len(off_unmeasured)})")
    print(f"   median wall: off {np.median(a):.3f} s, on {np.median(b):.3f} s; "
          f"overhead {(np.median(b) / np.median(a) - 1) * 100:+.2f}% (ratio of medians)")
    print(f"   wall time: paired ratio on/off {cmp.ratio:.4f} [95% CI {cmp.ratio_ci_low:.4f}, "
          f"{cmp.ratio_ci_high:.4f}]; verdict at a 1% margin: {cmp.verdict}")
    ca, cb = np.array(cpu_off), np.array(cpu_on)
    cpu = pullbench.compare_samples(ca, cb, margin=0.01, paired=True, rng=4,
                                    names=("probes off", "probes on"))
    print(f"   worker CPU (user+sys): median off {np.median(ca):.3f} s, on {np.median(cb):.3f} s; "
          f"paired ratio {cpu.ratio:.4f} [95% CI {cpu.ratio_ci_low:.4f}, "
          f"{cpu.ratio_ci_high:.4f}]; verdict at a 1% margin: {cpu.verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="synthetic-256m")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pullbench-overhead-") as tmp:
        timers(args.image, args.runs, Path(tmp))
        probes(args.image, args.pairs, Path(tmp))


if __name__ == "__main__":
    main()
