"""Benchmark: analyse 20 arms x 200 runs against a baseline, 9,999 BCa resamples each, Holm/BH.

Target (issue 4): under 5 s on the 2-core CI machine. Prints the wall time, the ratio to the
target, and -- measured side by side in the same run -- the time of one arm with
scipy.stats.bootstrap(method="BCa", vectorized=True) for the ratio of means alone, so the
result can be read as a ratio on a noisy shared machine.

    python benchmarks/bench_stats.py [--arms 20] [--runs 200] [--resamples 9999]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

import pullbench

TARGET_S = 5.0


def make_table(arms: int, runs: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = ["baseline"] + [f"arm{i:02d}" for i in range(arms)]
    effects = np.concatenate([[1.0], rng.choice([0.9, 0.97, 1.0, 1.0, 1.03], size=arms)])
    rows = []
    for name, eff in zip(names, effects, strict=True):
        d = rng.lognormal(np.log(10 * eff), 0.05, runs)
        rows.append(pd.DataFrame({"arm": name, "run": np.arange(runs), "duration_s": d}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=9999)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    df = make_table(args.arms, args.runs)

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = pullbench.analyze_grid(df, baseline="baseline", block=None, rng=1,
                                     n_resamples=args.resamples, correction="holm")
        times.append(time.perf_counter() - t0)
    best = min(times)

    base = df.loc[df["arm"] == "baseline", "duration_s"].to_numpy()
    cand = df.loc[df["arm"] == "arm00", "duration_s"].to_numpy()
    t0 = time.perf_counter()
    stats.bootstrap((cand, base), lambda y, x, axis=-1: y.mean(axis=axis) / x.mean(axis=axis),
                    method="BCa", n_resamples=args.resamples, vectorized=True, rng=1)
    scipy_one = time.perf_counter() - t0

    counts = res.table["verdict"].value_counts().to_dict()
    print(f"grid: {args.arms} arms x {args.runs} runs vs baseline, {args.resamples} resamples "
          "per arm (BCa: ratio of means, median difference, median ratio), Holm + BH")
    print(f"verdicts: {counts}")
    print(f"analyze_grid wall time: best {best:.3f} s of {args.repeat} "
          f"({', '.join(f'{t:.3f}' for t in times)})")
    print(f"ratio to the {TARGET_S:.0f} s target: {best / TARGET_S:.3f} "
          f"({'PASS' if best < TARGET_S else 'FAIL'})")
    print(f"side by side: scipy.stats.bootstrap BCa, ratio of means only, one arm: "
          f"{scipy_one:.3f} s -> x{args.arms} = {scipy_one * args.arms:.3f} s; "
          f"pullbench per arm (3 CIs + tests): {best / args.arms:.3f} s")


if __name__ == "__main__":
    main()
