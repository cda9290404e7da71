"""Interference probes and unstable verdicts: what they cost and how often they are right.

Four questions, answered side by side in one run on one machine (ratios and rates, never
absolute times; the load average is printed before and after each part, the machine may be
shared):

1. **Probe cost.** Pulls with the interference probe on vs off (its sampler thread runs during
   the pull; the counters are read just outside the timed section), interleaved in randomized
   pairs in fresh worker processes: the paired ratio of the pull's wall time and of the worker's
   CPU, with a 95 % CI (on a loaded machine far too wide to resolve 0.5 %), and the probe's
   costs measured directly, as shares of the pull: the sampler thread's CPU during the pull
   (inside the timed section) and the wall time of the probe's start and stop (outside it).
   Target: < 0.5 % of a pull.
2. **Quiet A/A.** go-iocopy against ``tunable`` with identical parameters, no injected load:
   the share of blocks flagged disturbed (false flags) -- by the score pullbench uses (the
   scheduler's nanosecond runtime accounting, ``cpu_time_source``) and, side by side on the
   same runs, by the same rule applied to the tick-sampled ``/proc/stat`` estimate recorded
   beside it (``other_cpu_ticks_s``), for floors 0.1-0.35 cores -- the share of verdicts
   faster/slower (false positives), and per diagnostic the share of arm analyses that raise it (the
   diagnostics are calibrated to <= 10 % here).
3. **Detection under injected load.** The same A/A with a CPU burner pinned to the puller's CPU,
   on in half of the blocks (a seeded pattern): the share of loaded blocks flagged, and of
   unloaded blocks flagged, by both scores.
4. **A/A under load.** From part 3's repeats: the false faster/slower rate, all and unflagged
   (not marked unstable). Target <= 0.05 over >= 20 repeats.

Usage::

    python benchmarks/bench_interference.py [--pairs 30] [--quiet 10] [--loaded 20] [--blocks 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

import pullbench
from pullbench.experiment._analysis import _interference_summary, analyze_folder
from pullbench.experiment._burner import CpuBurner
from pullbench.experiment._isolation import plan_cpus
from pullbench.experiment._runner import _run_in_worker
from pullbench.experiment._system import system_check
from pullbench.servers import EmbeddedRegistry
from pullbench.stats._interference import DISTURBANCE_FLOOR_CORES

ARMS = ("go-iocopy", "tunable")


def _load(label: str) -> None:
    check = system_check(0.5)
    one, five, fifteen = os.getloadavg()
    print(f"   [{label}: load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs; "
          f"other processes {check.other_cpu_cores:.2f} cores; "
          f"{'quiet' if check.quiet else 'NOT quiet'}]")


def probe_cost(image: str, pairs: int, work: Path) -> None:
    print(f"1. probe cost: {pairs} randomized pairs of {image}, interference probe on vs off, "
          "fresh worker processes")
    _load("start")
    layout = pullbench.build_image(image)
    rng = np.random.default_rng(2)
    wall = {True: [], False: []}
    cpu = {True: [], False: []}
    reading: list[float] = []
    sampler: list[float] = []
    with EmbeddedRegistry(work / "registry") as reg:
        reference = f"{reg.host}/bench/{image}:latest"
        pullbench.push_image(layout, reference)
        task = {"pull_function": "pullbench.puller._pipeline:pull", "reference": reference,
                "strategy": "go-iocopy", "params": {}, "concurrency": 3, "plain_http": True,
                "ca_bundle": None, "probes": True, "measured_pids": {"registry": os.getpid()}}
        for i in range(pairs + 1):  # pair 0 is a warm-up
            order = [True, False] if rng.random() < 0.5 else [False, True]
            for on in order:
                dest = work / f"store-{i}-{on}"
                status, row = _run_in_worker({**task, "run_index": i, "dest": str(dest),
                                              "interference": on}, 600)
                shutil.rmtree(dest, ignore_errors=True)
                if status != "ok":
                    raise SystemExit(f"pull failed: {row}")
                if i:
                    wall[on].append(row["pull_wall_s"])
                    cpu[on].append(row["worker_cpu_user_s"] + row["worker_cpu_sys_s"])
                    if on:
                        reading.append(row["probe_overhead_s"] / row["pull_wall_s"] * 100)
                        sampler.append(row["probe_sampler_cpu_s"] / row["pull_wall_s"] * 100)
    for name, data in (("pull wall time", wall), ("worker CPU", cpu)):
        cmp = pullbench.compare_samples(np.array(data[False]), np.array(data[True]),
                                        margin=0.005, paired=True, rng=3,
                                        names=("probe off", "probe on"))
        print(f"   {name}: paired ratio on/off {cmp.ratio:.4f} [95% CI {cmp.ratio_ci_low:.4f}, "
              f"{cmp.ratio_ci_high:.4f}]; verdict at a 0.5% margin: {cmp.verdict}")
    print(f"   median pull {np.median(wall[True]):.3f} s; the sampler thread's CPU (inside the "
          f"timed section): median {np.median(sampler):.3f}% of a pull, max "
          f"{np.max(sampler):.3f}%; the probe's start and stop (outside the timed section): "
          f"median {np.median(reading):.3f}% of a pull, max {np.max(reading):.3f}%")
    _load("end")


FLOORS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35)


def _scores(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The analysed runs with their score: as pullbench computes it (``ns``), and the same
    with the machine's side from /proc/stat's ticks (``ticks``)."""
    runs = rows[(~rows["warmup"].astype(bool)) & (rows["status"] == "ok")].copy()
    wall = runs["other_cpu_s"] / runs["other_cpu_cores"]
    steal = runs["interference_cores"] - runs["other_cpu_cores"]
    ticks = runs.copy()
    ticks["other_cpu_cores"] = runs["other_cpu_ticks_s"] / wall
    ticks["interference_cores"] = ticks["other_cpu_cores"] + steal
    return {"ns": runs, "ticks": ticks}


def _flags(runs: pd.DataFrame, floor: float) -> set[int]:
    """Blocks pullbench's rule flags (other CPU and steal, each against its own baseline) when
    the threshold's floor is ``floor``."""
    summary = _interference_summary(runs, floor_cores=floor)
    return set(summary.disturbed_blocks) if summary is not None else set()


def _floor_table(counts: dict[tuple[str, float], list[int]], label: str) -> None:
    print(f"   {label} by floor (the same runs re-thresholded; pullbench's floor is "
          f"{DISTURBANCE_FLOOR_CORES:g}):")
    for score in ("ns", "ticks"):
        cells = []
        for floor in FLOORS:
            got, total = counts[(score, floor)]
            cells.append(f"{floor:g}: {got}/{total} = {got / max(total, 1):.0%}")
        print(f"     {score:>5} score  " + "   ".join(cells))


def _experiment(work: Path, name: str, image: str, blocks: int, seed: int,
                loaded: set[int] | None) -> tuple[pullbench.Analysis, dict[str, pd.DataFrame],
                                                  str]:
    """The analysis, the scored runs (:func:`_scores`) and the score's source."""
    spec = pullbench.ExperimentSpec(name=name, images=(image,), arms=ARMS, blocks=blocks,
                                    warmup_blocks=1, seed=seed)
    out = work / name
    if loaded is None:
        pullbench.run_experiment(spec, out, progress=False)
    else:
        cpu = (plan_cpus("auto").puller or (None,))[0]
        with CpuBurner([cpu], seconds=900, paused=True) as burner:
            def switch(planned: pullbench.PlannedRun) -> None:
                if planned.block in loaded:
                    burner.resume()
                else:
                    burner.pause()

            pullbench.run_experiment(spec, out, progress=False, before_run=switch)
    analysis = analyze_folder(out, n_resamples=999)
    rows = pullbench.load_results(out)
    shutil.rmtree(out, ignore_errors=True)
    return analysis, _scores(rows), ",".join(sorted(set(rows["cpu_time_source"].dropna())))


def _verdicts(analysis: pullbench.Analysis) -> tuple[int, int, int]:
    """(analyses, faster/slower verdicts, of those not marked unstable) over metrics."""
    n = hits = unflagged = 0
    for block in analysis.images.values():
        for result in block.metrics.values():
            stab = {r.arm: r for r in result.stability}
            for row in result.table:
                n += 1
                if row.verdict in ("faster", "slower"):
                    hits += 1
                    unflagged += not (row.arm in stab and stab[row.arm].unstable)
    return n, hits, unflagged


def quiet_aa(image: str, repeats: int, blocks: int, work: Path) -> None:
    print(f"2. quiet A/A: {repeats} experiments of go-iocopy vs tunable (identical parameters), "
          f"{blocks} blocks of {image}, no injected load")
    _load("start")
    flagged = total = 0
    busy = 0
    flagged_load: list[float] = []
    thresholds: list[float] = []
    verdicts = [0, 0, 0]
    kinds: Counter[str] = Counter()
    explained = 0
    arm_analyses = 0
    by_floor = {(score, floor): [0, 0] for score in ("ns", "ticks") for floor in FLOORS}
    sources: set[str] = set()
    by_steal = 0
    for r in range(repeats):
        analysis, scored, source = _experiment(work, f"quiet-{r}", image, blocks, 100 + r, None)
        sources.add(source)
        for (score, floor), cell in by_floor.items():
            cell[0] += len(_flags(scored[score], floor))
            cell[1] += blocks
        intf = analysis.image().interference
        assert intf is not None
        flagged += len(intf.disturbed_blocks)
        by_steal += intf.n_disturbed_by_steal
        flagged_load += [intf.block_interference[b] for b in intf.disturbed_blocks]
        thresholds.append(intf.threshold_cores)
        total += blocks
        busy += intf.busy_machine
        verdicts = [a + b for a, b in zip(verdicts, _verdicts(analysis), strict=True)]
        for result in analysis.image().metrics.values():
            arm_analyses += len(ARMS)
            seen = {(d.arm or "").split(" vs ")[0] + "|" + d.kind for d in result.diagnostics
                    if d.severity == "warning"}
            kinds.update(s.split("|", 1)[1] for s in seen)
            explained += len({d.arm for d in result.diagnostics if d.kind == "outliers"
                              and d.severity == "info"} - {d.arm for d in result.diagnostics
                                                           if d.kind == "outliers"
                                                           and d.severity == "warning"})
    print(f"   blocks flagged disturbed: {flagged}/{total} = {flagged / total:.1%} "
          f"(score from {'/'.join(sorted(sources))}; runs above the host-steal threshold: "
          f"{by_steal}; experiments on a machine busy throughout: {busy}/{repeats})")
    _floor_table(by_floor, "quiet blocks flagged (false flags)")
    if flagged_load:
        print(f"   flagged blocks' interference (other processes' CPU + steal): median "
              f"{np.median(flagged_load):.2f} cores, min {np.min(flagged_load):.2f}; "
              f"other-CPU thresholds: "
              f"median {np.median(thresholds):.2f} cores")
    print(f"   false faster/slower verdicts: {verdicts[1]}/{verdicts[0]} = "
          f"{verdicts[1] / verdicts[0]:.1%} (not marked unstable: {verdicts[2]})")
    few = kinds.pop("too_few_runs", 0)
    shown = ", ".join(f"{k} {v}/{arm_analyses} = {v / arm_analyses:.1%}"
                      for k, v in sorted(kinds.items())) or "none"
    print(f"   warnings per arm analysis (false alarms; target <= 10% each): {shown}")
    print(f"   outliers all in disturbed blocks (explained by the probes, shown as info): "
          f"{explained}/{arm_analyses} = {explained / arm_analyses:.1%}")
    if few:
        print(f"   (too_few_runs {few}/{arm_analyses}: true, with {blocks} < 10 blocks)")
    _load("end")


def loaded_aa(image: str, repeats: int, blocks: int, work: Path) -> None:
    print(f"3./4. A/A under load: {repeats} experiments, a CPU burner pinned to the puller's CPU "
          f"in half of the {blocks} blocks (seeded pattern)")
    _load("start")
    hit = loaded_total = false_flag = unloaded_total = busy = 0
    hits = {(score, floor): [0, 0] for score in ("ns", "ticks") for floor in FLOORS}
    misses = {(score, floor): [0, 0] for score in ("ns", "ticks") for floor in FLOORS}
    verdicts = [0, 0, 0]
    started = time.monotonic()
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        loaded = {int(b) for b in rng.choice(blocks, blocks // 2, replace=False)}
        analysis, scored, _ = _experiment(work, f"loaded-{r}", image, blocks, 200 + r, loaded)
        for key in hits:
            got = _flags(scored[key[0]], key[1])
            hits[key][0] += len(got & loaded)
            hits[key][1] += len(loaded)
            misses[key][0] += len(got - loaded)
            misses[key][1] += blocks - len(loaded)
        intf = analysis.image().interference
        assert intf is not None
        flagged = set(intf.disturbed_blocks)
        busy += intf.busy_machine
        hit += len(flagged & loaded)
        loaded_total += len(loaded)
        false_flag += len(flagged - loaded)
        unloaded_total += blocks - len(loaded)
        verdicts = [a + b for a, b in zip(verdicts, _verdicts(analysis), strict=True)]
        if r == repeats // 2:
            _load(f"after {r + 1} repeats, {time.monotonic() - started:.0f} s")
    print(f"   detection: loaded blocks flagged {hit}/{loaded_total} = {hit / loaded_total:.1%}; "
          f"unloaded blocks flagged {false_flag}/{unloaded_total} = "
          f"{false_flag / unloaded_total:.1%} (machine busy throughout in {busy}/{repeats})")
    _floor_table(hits, "loaded blocks flagged (detection)")
    _floor_table(misses, "unloaded blocks flagged")
    print(f"   A/A false faster/slower under load: {verdicts[1]}/{verdicts[0]} = "
          f"{verdicts[1] / verdicts[0]:.1%}; not marked unstable: {verdicts[2]}/{verdicts[0]} = "
          f"{verdicts[2] / verdicts[0]:.1%} (target <= 5%)")
    _load("end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe-image", default="synthetic-64m")
    parser.add_argument("--image", default="synthetic-small")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--quiet", type=int, default=10)
    parser.add_argument("--loaded", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pullbench-interference-") as tmp:
        work = Path(tmp)
        if args.pairs:
            probe_cost(args.probe_image, args.pairs, work)
        if args.quiet:
            quiet_aa(args.image, args.quiet, args.blocks, work)
        if args.loaded:
            loaded_aa(args.image, args.loaded, args.blocks, work)


if __name__ == "__main__":
    main()
