"""Compare two results folders: the same arm before (run A) and after (run B) a change.

What ``pullbench compare RUN_A RUN_B`` does. Runs of two folders were not interleaved in blocks,
so each arm is compared unpaired (Welch's test, Fieller's CI of the ratio, TOST against the
margin; :func:`pullbench.compare_samples`), and the p-values of the arms of one image and metric
are Holm-adjusted together, as :func:`pullbench.analyze_grid` does across arms. A difference
between the runs may come from the change or from the machine: the environment records of both
folders are compared and every difference is listed (:attr:`RunComparison.environment_differences`).

Convention as everywhere in pullbench: A is the baseline (before), B the candidate (after);
ratios are B / A.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import StatsInputError
from ..stats._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN
from ._results import (
    ENVIRONMENT_JSON,
    SPEC_JSON,
    ResultsStore,
    _jsonable,
    load_results,
    resolve_results_path,
)

__all__ = ["EnvironmentDifference", "RunComparison", "RunComparisonRow", "compare_runs",
           "environment_differences", "format_run_comparison"]

#: Environment keys that differ between any two runs and say nothing about the machine.
_VOLATILE_KEYS = frozenset({
    "captured_at", "destination.path", "registry.host", "registry.url", "sessions_ended", "seed",
    "spec.seed", "spec.name", "spec.dest_dir", "spec.blocks", "spec.warmup_blocks",
    "host.cgroup.path", "preflight.window_s", "preflight.top_processes",
    "registry.details.network.upstream",
})
# keys that differ between any two runs, whatever their parent (process ids, thread counts,
# time stamps, temp paths, a memory reading taken at one instant)
_VOLATILE_LEAVES = frozenset({"pid", "proxy_pid", "threads", "captured_at", "ca_bundle",
                              "mem_available_bytes", "workdir"})


@dataclass(frozen=True, slots=True)
class EnvironmentDifference:
    """One ``environment.json`` entry that differs between the two runs.

    Attributes
    ----------
    key : str
        Dotted path (``host.cpu_model``, ``packages.numpy``, ``pullbench.commit``).
    a, b : str or None
        The value in run A and in run B as JSON text (None: absent in that run).
    """

    key: str
    a: str | None
    b: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class RunComparisonRow:
    """One arm on one image and metric: run A (baseline) against run B (candidate).

    Attributes
    ----------
    image, arm, metric : str
    n_a, n_b : int
        Successful, non-warm-up runs of the arm in A and in B.
    mean_a, mean_b, sd_a, sd_b, median_a, median_b, min_a, min_b, max_a, max_b : float
        Descriptives of the metric (its units; sd with ddof=1).
    ratio, ratio_ci_low, ratio_ci_high : float or None
        ``mean_b / mean_a`` and Fieller's ``1 - alpha`` CI (None: unbounded).
    p, p_holm : float
        Welch's two-sided p-value, and Holm-adjusted across the arms of this image and metric.
    tost_p, tost_p_holm : float
        TOST p-value for equivalence within the margin, raw and Holm-adjusted.
    verdict : str
        ``faster``, ``slower``, ``equivalent`` or ``inconclusive`` (from the adjusted p-values):
        B compared with A.
    """

    image: str
    arm: str
    metric: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    median_a: float
    median_b: float
    min_a: float
    min_b: float
    max_a: float
    max_b: float
    ratio: float | None
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    p: float
    p_holm: float
    tost_p: float
    tost_p_holm: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable({f.name: getattr(self, f.name) for f in fields(self)})
        return out


@dataclass(frozen=True, slots=True)
class RunComparison:
    """Every arm both runs share, on every image both share, per metric.

    Attributes
    ----------
    run_a, run_b : str
        The two results folders (A: baseline, before; B: candidate, after).
    metrics : tuple of str
    margin, alpha : float
    rows : tuple of RunComparisonRow
    environment_differences : tuple of EnvironmentDifference
    notes : tuple of str
        Arms and images only one run has, metrics skipped, and why.
    """

    run_a: str
    run_b: str
    metrics: tuple[str, ...]
    margin: float
    alpha: float
    rows: tuple[RunComparisonRow, ...]
    environment_differences: tuple[EnvironmentDifference, ...]
    notes: tuple[str, ...]

    def table(self) -> pd.DataFrame:
        """The rows as a DataFrame (one row per image, metric and arm)."""
        return pd.DataFrame([r.to_dict() for r in self.rows],
                            columns=[f.name for f in fields(RunComparisonRow)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, ``rows``, ``environment_differences``, ``notes``."""
        return {"run_a": self.run_a, "run_b": self.run_b, "metrics": list(self.metrics),
                "margin": self.margin, "alpha": self.alpha,
                "rows": [r.to_dict() for r in self.rows],
                "environment_differences": [d.to_dict() for d in self.environment_differences],
                "notes": list(self.notes)}


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], data


def environment_differences(env_a: Mapping[str, Any], env_b: Mapping[str, Any],
                            ) -> tuple[EnvironmentDifference, ...]:
    """The entries of two ``environment.json`` records that differ (volatile ones left out).

    Time stamps, result and temp paths, registry ports, process ids, thread counts, seeds, the
    block counts and one-instant readings (available memory, the preflight's busiest processes)
    are left out; the host, kernel, CPU, load average, package versions, git commit, registry,
    network profile, images and the rest of the spec are compared.
    """
    flat_a, flat_b = dict(_flatten(env_a)), dict(_flatten(env_b))
    out = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if (key in _VOLATILE_KEYS or key.split(".", 1)[0] in _VOLATILE_KEYS
                or key.rsplit(".", 1)[-1] in _VOLATILE_LEAVES):
            continue
        a = json.dumps(_jsonable(flat_a[key]), sort_keys=True) if key in flat_a else None
        b = json.dumps(_jsonable(flat_b[key]), sort_keys=True) if key in flat_b else None
        if a != b:
            out.append(EnvironmentDifference(key, a, b))
    return tuple(out)


def _ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    if "warmup" in df.columns:
        df = df[~df["warmup"].astype(bool)]
    return df[df["status"] == "ok"]


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    margin: float | None = None,
    alpha: float | None = None,
    seed: int = 0,
    n_resamples: int = 9999,
) -> RunComparison:
    """Compare each arm of results folder ``run_b`` with the same arm of ``run_a``.

    Parameters
    ----------
    run_a, run_b : path or str
        Results folders (or names :func:`pullbench.resolve_results_path` knows, ``"shipped"``):
        A is the baseline (before), B the candidate (after).
    metrics : sequence of str, optional
        Columns to compare; default: run A's spec metrics (wall time and CPU per byte).
    arms : sequence of str, optional
        Arms to compare (default: every arm both runs have).
    margin, alpha : float, optional
        Default: run A's spec (else 0.02 and 0.05).
    seed, n_resamples : int
        Bootstrap seed and resamples (the bootstrap CI is a secondary estimate here).

    Returns
    -------
    RunComparison

    Raises
    ------
    ResultSchemaError
        A folder is not a results folder.
    StatsInputError
        The runs share no image or no arm, an arm named in ``arms`` is missing from one run, a
        metric is not a column of both, or an arm has fewer than 2 runs in one of them.
    """
    from ..stats._stats import adjust_pvalues, compare_samples, decide_verdict
    from ._analysis import _unmeasured, lower_is_better

    dirs = [resolve_results_path(r) for r in (run_a, run_b)]
    stores = [ResultsStore(d if d.is_dir() else d.parent) for d in dirs]
    spec = stores[0].read_json(SPEC_JSON) or {}
    metrics = tuple(metrics or spec.get("metrics") or ("duration_s", "cpu_ns_per_byte"))
    margin = float(margin if margin is not None else spec.get("margin") or DEFAULT_MARGIN)
    alpha = float(alpha if alpha is not None else spec.get("alpha") or DEFAULT_ALPHA)
    frames = [_ok_runs(load_results(d, include_warmup=True)) for d in dirs]
    notes: list[str] = []
    images = [i for i in dict.fromkeys(frames[0]["image"]) if i in set(frames[1]["image"])]
    if not images:
        raise StatsInputError(
            f"the runs share no image: A has {sorted(set(frames[0]['image']))}, B has "
            f"{sorted(set(frames[1]['image']))}")
    for which, mine, other in (("A", 0, 1), ("B", 1, 0)):
        only = sorted(set(frames[mine]["image"]) - set(frames[other]["image"]))
        if only:
            notes.append(f"image(s) only in run {which}, not compared: {', '.join(only)}")
    rows: list[RunComparisonRow] = []
    rng = np.random.default_rng(seed)
    for image in images:
        subs = [f[f["image"] == image] for f in frames]
        shared = [a for a in dict.fromkeys(subs[0]["arm"]) if a in set(subs[1]["arm"])]
        if arms:
            missing = [a for a in arms if a not in shared]
            if missing:
                raise StatsInputError(
                    f"{image}: arm(s) {missing} not in both runs; shared arms: {shared}")
            shared = [a for a in shared if a in arms]
        if not shared:
            raise StatsInputError(
                f"{image}: the runs share no arm: A has {sorted(set(subs[0]['arm']))}, B has "
                f"{sorted(set(subs[1]['arm']))}")
        for which, mine, other in (("A", 0, 1), ("B", 1, 0)):
            only = sorted(set(subs[mine]["arm"]) - set(subs[other]["arm"]))
            if only:
                notes.append(f"{image}: arm(s) only in run {which}, not compared: "
                             f"{', '.join(only)}")
        for metric in metrics:
            for sub, which in zip(subs, "AB", strict=True):
                if metric not in sub.columns:
                    raise StatsInputError(f"metric {metric!r} is not a column of run {which}")
            reasons = [_unmeasured(sub[sub["arm"].isin(shared)], metric, shared[0])
                       for sub in subs]
            if any(reasons):
                why = next(r for r in reasons if r)
                notes.append(f"{image}: {metric} not compared: {why}")
                continue
            family = []
            for arm in shared:
                a, b = (pd.to_numeric(s.loc[s["arm"] == arm, metric], errors="coerce")
                        .dropna().to_numpy(dtype=float) for s in subs)
                family.append((arm, a, b, compare_samples(
                    a, b, margin=margin, alpha=alpha, rng=rng, n_resamples=n_resamples,
                    lower_is_better=lower_is_better(metric), names=(f"A:{arm}", f"B:{arm}"))))
            p_holm = adjust_pvalues([c.p_value for *_, c in family], "holm")
            tost_holm = adjust_pvalues([c.tost.p_value for *_, c in family], "holm")
            better = [c.ratio < 1 if lower_is_better(metric) else c.ratio > 1
                      for *_, c in family]
            verdicts = decide_verdict(p_holm, tost_holm, better, alpha)
            for i, (arm, a, b, c) in enumerate(family):
                rows.append(RunComparisonRow(
                    image=str(image), arm=str(arm), metric=metric, n_a=len(a), n_b=len(b),
                    mean_a=c.mean_a, mean_b=c.mean_b, sd_a=c.sd_a, sd_b=c.sd_b,
                    median_a=float(np.median(a)), median_b=float(np.median(b)),
                    min_a=float(a.min()), min_b=float(b.min()),
                    max_a=float(a.max()), max_b=float(b.max()),
                    ratio=_finite(c.ratio), ratio_ci_low=_finite(c.ratio_ci_low),
                    ratio_ci_high=_finite(c.ratio_ci_high), p=float(c.p_value),
                    p_holm=float(p_holm[i]), tost_p=float(c.tost.p_value),
                    tost_p_holm=float(tost_holm[i]), verdict=str(verdicts[i])))
    envs = [s.read_json(ENVIRONMENT_JSON) or {} for s in stores]
    return RunComparison(run_a=str(dirs[0]), run_b=str(dirs[1]), metrics=metrics,
                         margin=margin, alpha=alpha, rows=tuple(rows),
                         environment_differences=environment_differences(*envs),
                         notes=tuple(notes))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def format_run_comparison(comparison: RunComparison) -> str:
    """The text ``pullbench compare`` prints: one table per image and metric, the phrase per
    arm, the environment differences, the notes."""
    from ._analysis import lower_is_better
    from ._report import METRIC_LABELS, _fmt, _fmt_p, ratio_phrase, text_table

    c = comparison
    out = [f"A (baseline, before): {c.run_a}", f"B (candidate, after): {c.run_b}",
           f"each arm B vs A, unpaired (Welch; ratio B/A with Fieller's CI; Holm across arms); "
           f"equivalence margin ±{c.margin:.0%}, alpha {c.alpha}"]
    table = c.table()
    for (image, metric), group in table.groupby(["image", "metric"], sort=False):
        better = "ratio < 1 is better" if lower_is_better(str(metric)) else "ratio > 1 is better"
        out += ["", f"{image}: {metric} = {METRIC_LABELS.get(str(metric), metric)} ({better})"]
        header = ["arm", "n A/B", "A mean ± sd", "B mean ± sd", "B min … max", "ratio B/A [95% CI]",
                  "p (Holm)", "verdict"]
        rows = [[str(r.arm), f"{r.n_a}/{r.n_b}", f"{_fmt(r.mean_a, '.4g')} ± {_fmt(r.sd_a, '.2g')}",
                 f"{_fmt(r.mean_b, '.4g')} ± {_fmt(r.sd_b, '.2g')}",
                 f"{_fmt(r.min_b, '.4g')} … {_fmt(r.max_b, '.4g')}",
                 f"{_fmt(r.ratio, '.3f')} [{_fmt(r.ratio_ci_low, '.3f')}, "
                 f"{_fmt(r.ratio_ci_high, '.3f')}]", _fmt_p(r.p_holm), str(r.verdict)]
                for r in group.itertuples()]
        out += text_table(header, rows)
        out += [f"  {r.arm}: B is " + ratio_phrase(r.ratio, r.ratio_ci_low, r.ratio_ci_high,
                                                    metric=str(metric), reference="A")
                for r in group.itertuples()]
    if c.environment_differences:
        out += ["", f"environment differences (A → B; {len(c.environment_differences)}): the "
                "runs differ in more than the change if any of these matter"]
        out += [f"  {d.key}: " + " → ".join(_short_pair(d.a, d.b))
                for d in c.environment_differences]
    else:
        out += ["", "environment: no differences recorded (host, packages, commit, registry, "
                "network, spec)"]
    out += [f"note: {n}" for n in c.notes]
    return "\n".join(out)


def _short_pair(a: str | None, b: str | None, width: int = 60) -> tuple[str, str]:
    """Both values shortened around where they first differ (a long common start is elided,
    so two values that differ late do not print the same)."""
    if a is None or b is None or (len(a) <= width and len(b) <= width):
        return _short(a, width), _short(b, width)
    pairs = zip(a, b, strict=False)
    first = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))
    start = max(0, first - 20)
    if start == 0:
        return _short(a, width), _short(b, width)
    return _short("…" + a[start:], width), _short("…" + b[start:], width)


def _short(value: str | None, width: int = 60) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= width else value[: width - 1] + "…"
