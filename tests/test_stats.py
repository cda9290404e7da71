"""Statistics: the PR 48602 worked example, cross-checks with SciPy/statsmodels, grids, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

import pullbench
import pullbench.plots
from pullbench import (
    DegenerateSampleWarning,
    StatsInputError,
    adjust_pvalues,
    analyze_grid,
    bca_interval,
    compare_batch,
    compare_from_summary,
    compare_samples,
    decide_verdict,
    diagnose,
    factorial_anova,
    minimum_detectable_effect,
    plan_from_pilot,
    power_at_n,
    runs_needed,
)
from pullbench.cli import main

# moby/moby#48602: before (baseline, a) and after (candidate, b).
PR = dict(mean_a=39.294, sd_a=2.167, n_a=10, mean_b=38.288, sd_b=0.634, n_b=10)


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def _with_moments(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


# --------------------------------------------------------------------------- worked example


def test_worked_example_from_summary_to_3_significant_figures():
    r = compare_from_summary(*PR.values(), margin=0.05)
    # difference is b - a (candidate minus baseline): the PR's change made pulls 1.006 s shorter
    assert sig3(abs(r.welch_t)) == 1.41
    assert r.welch_t < 0
    assert sig3(r.welch_df) == 10.5
    assert round(r.welch_df, 2) == 10.53
    assert sig3(r.welch_p) == 0.188
    # 95% CI of the difference (a - b) = [-0.574, +2.586] s, i.e. b - a = [-2.586, +0.574]
    assert sig3(-r.difference_ci_high) == -0.574
    assert sig3(-r.difference_ci_low) == 2.59
    assert round(-r.difference_ci_low, 3) == 2.586
    assert sig3(r.tost_p_value) == 0.115
    assert sig3(compare_from_summary(*PR.values(), margin=0.10).tost_p_value) == 0.00123
    assert sig3(compare_from_summary(*PR.values(), margin=0.02).tost_p_value) == 0.628
    assert round(r.power, 2) == 0.25
    assert r.runs_needed_per_arm == 42
    for margin in (0.02, 0.05):
        assert compare_from_summary(*PR.values(), margin=margin).verdict == "inconclusive"
    # at ±10 % the 90 % CI fits inside the margin: equivalence, not "no difference"
    assert compare_from_summary(*PR.values(), margin=0.10).verdict == "equivalent"
    # contrasts from statistics.md §6
    assert sig3(r.student_p) == 0.176
    assert sig3(r.variance_ratio) == 11.7
    assert round(r.cohen_d, 2) == -0.63


def test_worked_example_ratio_and_mde():
    # Fieller CI of A/B (the ratio statistics.md reports) = [0.985, 1.068]
    swapped = compare_from_summary(38.288, 0.634, 10, 39.294, 2.167, 10, margin=0.05)
    assert sig3(swapped.ratio_ci_low) == 0.985
    assert sig3(swapped.ratio_ci_high) == 1.07
    assert round(swapped.ratio_ci_high, 3) == 1.068
    # equivalence region is symmetric in the arms: same TOST p when swapped
    assert swapped.tost_p_value == pytest.approx(
        compare_from_summary(*PR.values(), margin=0.05).tost_p_value)
    # MDE at 80% power for n = 10, 20, 30, 50 per arm: 2.21, 1.48, 1.19, 0.91 s
    got = [minimum_detectable_effect(n, sd_a=2.167, sd_b=0.634) for n in (10, 20, 30, 50)]
    assert [round(g, 2) for g in got] == pytest.approx([2.21, 1.48, 1.19, 0.91], abs=0.011)
    assert power_at_n(10, delta=1.006, sd_a=2.167, sd_b=0.634) == pytest.approx(0.2496, abs=5e-4)
    assert runs_needed(delta=1.006, sd_a=2.167, sd_b=0.634) == 42


def test_worked_example_from_raw_runs_matches_summary():
    a = _with_moments(39.294, 2.167, 10, seed=1)
    b = _with_moments(38.288, 0.634, 10, seed=2)
    c = compare_samples(a, b, margin=0.05, rng=7, n_resamples=2000, names=("before", "after"))
    s = compare_from_summary(*PR.values(), margin=0.05)
    assert c.welch.t == pytest.approx(s.welch_t, rel=1e-9)
    assert c.welch.df == pytest.approx(s.welch_df, rel=1e-9)
    assert c.welch.p_value == pytest.approx(s.welch_p, rel=1e-9)
    assert c.p_value == pytest.approx(s.welch_p, rel=1e-9)
    assert c.welch.difference_ci_low == pytest.approx(s.difference_ci_low, rel=1e-9)
    assert c.tost.p_value == pytest.approx(s.tost_p_value, rel=1e-9)
    assert c.ratios.fieller_ci_low == pytest.approx(s.ratio_ci_low, rel=1e-9)
    assert c.verdict == s.verdict == "inconclusive"
    assert c.seed == 7
    assert c.margin == 0.05
    text = c.summary()
    assert "INCONCLUSIVE" in text
    assert "after vs before" in text
    d = c.to_dict()
    json.dumps(d)
    assert d["verdict"] == "inconclusive"
    assert d["seed"] == 7


def test_tost_matches_statsmodels_ttost_ind_with_welch():
    from statsmodels.stats.weightstats import ttost_ind

    rng = np.random.default_rng(3)
    a = rng.lognormal(np.log(10), 0.05, 25)
    b = rng.lognormal(np.log(10.1), 0.08, 18)
    c = compare_samples(a, b, margin=0.03, rng=1, n_resamples=500)
    # region for b - a: [-m*mean(b), +m*mean(a)]
    p, _, _ = ttost_ind(b, a, -0.03 * b.mean(), 0.03 * a.mean(), usevar="unequal")
    assert c.tost.p_value == pytest.approx(p, rel=1e-9)
    w = stats.ttest_ind(b, a, equal_var=False)
    assert c.welch.p_value == pytest.approx(w.pvalue)
    assert c.welch.df == pytest.approx(w.df)


def test_bca_matches_scipy_bootstrap():
    rng = np.random.default_rng(11)
    a = rng.lognormal(np.log(10), 0.1, 40)
    b = rng.lognormal(np.log(9.6), 0.1, 35)
    c = compare_samples(a, b, rng=5, n_resamples=9999)

    def ratio(y, x, axis=-1):
        return y.mean(axis=axis) / x.mean(axis=axis)

    ref = stats.bootstrap((b, a), ratio, method="BCa", n_resamples=9999, rng=6,
                          vectorized=True).confidence_interval
    width = ref.high - ref.low
    assert c.ratios.bca_ci_low == pytest.approx(ref.low, abs=0.05 * width)
    assert c.ratios.bca_ci_high == pytest.approx(ref.high, abs=0.05 * width)

    def mdiff(y, x, axis=-1):
        return np.median(y, axis=axis) - np.median(x, axis=axis)

    ref = stats.bootstrap((b, a), mdiff, method="BCa", n_resamples=9999, rng=6,
                          vectorized=True).confidence_interval
    width = ref.high - ref.low
    assert c.medians.difference_ci_low == pytest.approx(ref.low, abs=0.1 * width)
    assert c.medians.difference_ci_high == pytest.approx(ref.high, abs=0.1 * width)


def test_bca_interval_is_percentile_without_bias_or_skew():
    theta_star = np.random.default_rng(0).normal(size=20001)
    jack = [np.linspace(-1, 1, 51)]  # symmetric -> acceleration 0
    lo, hi = bca_interval(float(np.median(theta_star)), theta_star, jack)
    assert lo == pytest.approx(-1.96, abs=0.05)
    assert hi == pytest.approx(1.96, abs=0.05)


def test_effect_sizes_and_rank_tests():
    rng = np.random.default_rng(2)
    a = rng.normal(10, 0.3, 30)
    b = rng.normal(9.5, 0.3, 30)
    c = compare_samples(a, b, rng=0, n_resamples=1000)
    assert c.verdict == "faster"
    assert c.ratio < 1
    assert c.significant
    mw = stats.mannwhitneyu(b, a)
    assert c.medians.mannwhitney_p == pytest.approx(mw.pvalue)
    assert c.medians.prob_candidate_lower == pytest.approx(np.mean(b[:, None] < a[None, :]))
    assert c.medians.hodges_lehmann_shift == pytest.approx(np.median(np.subtract.outer(b, a)))
    m = c.medians
    assert m.hodges_lehmann_ci_low < m.hodges_lehmann_shift < m.hodges_lehmann_ci_high
    sp = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert c.hedges_g == pytest.approx((b.mean() - a.mean()) / sp * (1 - 3 / (4 * 60 - 9)))
    assert c.medians.ratio_ci_low < c.medians.ratio < c.medians.ratio_ci_high
    # throughput: higher is better flips the direction word, not the numbers
    t = compare_samples(a, b, rng=0, n_resamples=1000, lower_is_better=False)
    assert t.verdict == "slower"
    assert t.p_value == c.p_value


def test_significant_but_small_flag():
    rng = np.random.default_rng(4)
    a = rng.normal(10.0, 0.05, 400)
    b = rng.normal(9.95, 0.05, 400)  # 0.5 % faster, margin 2 %
    c = compare_samples(a, b, margin=0.02, rng=0, n_resamples=500)
    assert c.verdict == "faster"
    assert c.significant_but_small
    assert c.tost.equivalent


def test_paired_analysis_uses_blocks():
    rng = np.random.default_rng(8)
    block = rng.normal(0, 0.2, 20)  # big block-to-block drift (cache, thermal)
    a = 10 * np.exp(block + rng.normal(0, 0.01, 20))
    b = 9.8 * np.exp(block + rng.normal(0, 0.01, 20))
    unpaired = compare_samples(a, b, rng=0, n_resamples=1000)
    paired = compare_samples(a, b, rng=0, n_resamples=1000, paired=True)
    assert unpaired.verdict == "inconclusive"
    assert paired.verdict == "faster"
    assert paired.primary_test == "paired_log_t"
    d = np.log(b) - np.log(a)
    ref = stats.ttest_1samp(d, 0)
    assert paired.paired_test.p_value == pytest.approx(ref.pvalue)
    assert paired.paired_test.geometric_mean_ratio == pytest.approx(math.exp(d.mean()))
    assert paired.paired_test.wilcoxon_p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert paired.ratios.bca_ci_low < paired.ratios.ratio_of_means < paired.ratios.bca_ci_high
    assert "paired" in paired.summary()


def test_compare_batch_is_the_verdict_compare_samples_gives():
    rng = np.random.default_rng(9)
    a = rng.lognormal(np.log(10), 0.05, (12, 15))
    b = rng.lognormal(np.log(9.8), 0.05, (12, 15))
    batch = compare_batch(a, b, margin=0.02)
    for i in range(12):
        c = compare_samples(a[i], b[i], margin=0.02, rng=0, n_resamples=200)
        assert c.verdict == batch.verdict[i]
        assert c.p_value == pytest.approx(batch.p_value[i])
        assert c.tost.p_value == pytest.approx(batch.tost_p_value[i])


def test_decide_verdict_rule():
    v = decide_verdict([0.01, 0.01, 0.2, 0.2, np.nan], [0.5, 0.01, 0.01, 0.5, np.nan],
                       [True, False, True, True, True], 0.05)
    assert list(v) == ["faster", "slower", "equivalent", "inconclusive", "inconclusive"]


def test_adjust_pvalues_matches_statsmodels_and_scipy():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(1).uniform(0, 0.2, (5, 20))
    for row in p:
        assert adjust_pvalues(row, "holm") == pytest.approx(multipletests(row, method="holm")[1])
        assert adjust_pvalues(row, "bh") == pytest.approx(stats.false_discovery_control(row))
    assert adjust_pvalues(p, "holm")[2] == pytest.approx(multipletests(p[2], method="holm")[1])
    with_nan = np.array([0.01, np.nan, 0.04])
    out = adjust_pvalues(with_nan, "holm")
    assert np.isnan(out[1])
    assert out[0] == pytest.approx(0.02)
    assert out[2] == pytest.approx(0.04)
    with pytest.raises(StatsInputError, match="unknown correction"):
        adjust_pvalues(p, "sidak-ish")


# --------------------------------------------------------------------------- grids


def _grid_frame(seed: int, *, blocks: int = 20, effects=None) -> pd.DataFrame:
    effects = effects or {"base": 1.0, "fast": 0.9, "same": 1.0, "slow": 1.08}
    rng = np.random.default_rng(seed)
    rows = []
    for blk in range(blocks):
        drift = math.exp(rng.normal(0, 0.05))
        for i, (arm, eff) in enumerate(rng.permutation(list(effects.items()))):
            rows.append({"arm": arm, "block": blk, "run": blk * len(effects) + i,
                         "duration_s": 10 * float(eff) * drift * math.exp(rng.normal(0, 0.02))})
    return pd.DataFrame(rows)


def test_analyze_grid_paired_blocks():
    df = _grid_frame(1)
    g = analyze_grid(df, baseline="base", rng=3, n_resamples=500, order="run")
    assert g.paired
    assert set(g.table["test"]) == {"paired_log_t"}
    v = dict(zip(g.table["arm"], g.table["verdict"], strict=True))
    assert v["fast"] == "faster"
    assert v["slow"] == "slower"
    assert v["same"] != "faster"
    assert list(g.table.columns[:11]) == ["arm", "n", "n_baseline", "mean", "median", "ratio",
                                         "ratio_ci_low", "ratio_ci_high", "ratio_of_means",
                                         "ratio_bca_ci_low", "ratio_bca_ci_high"]
    for col in ("p", "p_holm", "p_bh", "verdict", "significant_but_small"):
        assert col in g.table.columns
    assert (g.table["p_holm"] >= g.table["p"] - 1e-15).all()
    assert "paired t-test" in g.summary()
    json.dumps(g.to_dict())
    # reproducible from the recorded seed
    again = analyze_grid(df, baseline="base", rng=g.seed, n_resamples=500, order="run")
    pd.testing.assert_frame_equal(g.table, again.table)


def test_analyze_grid_incomplete_blocks_and_nan_rows():
    df = _grid_frame(2)
    df.loc[3, "duration_s"] = np.nan
    g = analyze_grid(df, baseline="base", rng=0, n_resamples=300)
    assert not g.paired
    assert g.n_dropped == 1
    kinds = {d.kind for d in g.diagnostics}
    assert {"rows_dropped", "blocks_incomplete"} <= kinds
    assert set(g.table["test"]) == {"welch"}
    g2 = analyze_grid(df.drop(columns="block"), baseline="base", rng=0, n_resamples=300,
                      correction="bh")
    assert "blocks_incomplete" not in {d.kind for d in g2.diagnostics}
    assert (g2.table["p_adjusted"] == g2.table["p_bh"]).all()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="duration_s"), "column 'duration_s'"),
        (lambda d: d.assign(duration_s=-d["duration_s"]), "negative"),
        (lambda d: d[d["arm"] == "base"], "nothing to compare"),
        (lambda d: d[(d["arm"] != "fast") | (d["block"] == 0)], "at least 2 runs"),
        (lambda d: d.assign(duration_s="x"), "non-numeric"),
    ],
)
def test_analyze_grid_bad_input(mutate, match):
    with pytest.raises(StatsInputError, match=match):
        analyze_grid(mutate(_grid_frame(3)), baseline="base", rng=0, n_resamples=200)


def test_compare_all_pairs_adjusts_over_every_pair():
    df = _grid_frame(4)
    g = pullbench.compare_all_pairs(df, rng=1, n_resamples=300)
    assert len(g.table) == 6
    assert g.baseline == "all pairs"
    assert g.paired
    assert "fast vs base" in g.comparisons or "base vs fast" in g.comparisons
    row = g.table[(g.table["baseline"] == "fast") & (g.table["arm"] == "slow")]
    if row.empty:
        row = g.table[(g.table["baseline"] == "slow") & (g.table["arm"] == "fast")]
    assert row["verdict"].iloc[0] in {"faster", "slower"}
    from statsmodels.stats.multitest import multipletests

    assert g.table["p_holm"].to_numpy() == pytest.approx(
        multipletests(g.table["p"], method="holm")[1])
    assert "baseline" in g.summary().splitlines()[1]


def test_analyze_grid_unknown_baseline():
    with pytest.raises(StatsInputError, match="baseline 'nope'"):
        analyze_grid(_grid_frame(3), baseline="nope", rng=0)


def test_factorial_anova_finds_main_effect_and_interaction():
    rng = np.random.default_rng(5)
    rows = []
    for read in (16, 128, 1024):
        for wbuf in (0, 512):
            # bigger reads help, the write buffer helps only with small reads (interaction)
            eff = {16: 1.3, 128: 1.0, 1024: 0.95}[read] * (0.85 if (wbuf and read == 16) else 1)
            for _ in range(8):
                rows.append({"read_size": read, "write_buffer": wbuf,
                             "duration_s": 5 * eff * math.exp(rng.normal(0, 0.02))})
    res = factorial_anova(pd.DataFrame(rows), metric="duration_s",
                          factors=["read_size", "write_buffer"])
    assert res.anova.loc["read_size", "PR(>F)"] < 1e-6
    assert res.interaction_p is not None
    assert res.interaction_p < 1e-3
    assert "read_size:write_buffer" in res.anova.index
    eff = res.effects[res.effects["factor"] == "read_size"]
    assert list(eff["level"]) == ["16", "128", "1024"]
    assert eff["ratio_vs_first_level"].iloc[-1] < 0.85
    assert "R²" in res.summary()
    json.dumps(res.to_dict())
    with pytest.raises(StatsInputError, match="single level"):
        factorial_anova(pd.DataFrame(rows).assign(write_buffer=0), metric="duration_s",
                        factors=["read_size", "write_buffer"])


# --------------------------------------------------------------------------- power


def test_power_matches_statsmodels_for_equal_sds():
    from statsmodels.stats.power import TTestIndPower

    for n in (10, 30, 80):
        ours = power_at_n(n, delta=0.5, sd_a=1.0)
        ref = TTestIndPower().power(0.5, n, 0.05)
        assert ours == pytest.approx(ref, abs=0.005)
    curve = power_at_n(np.array([5, 10, 40]), delta=0.5, sd_a=1.0)
    assert np.all(np.diff(curve) > 0)


def test_plan_from_pilot():
    rng = np.random.default_rng(0)
    a = rng.normal(10, 0.3, 12)
    b = rng.normal(9.8, 0.3, 12)
    plan = plan_from_pilot(a, b, relative_effect=0.02)
    assert 0 < plan.power_at_pilot_n < 0.5
    assert plan.runs_needed_per_arm is not None
    assert plan.runs_needed_per_arm > 12
    assert plan.curve["power"].is_monotonic_increasing
    assert power_at_n(plan.runs_needed_per_arm, delta=plan.delta, sd_a=plan.sd_a,
                      sd_b=plan.sd_b) >= 0.8
    assert "runs per arm" in plan.summary()
    json.dumps(plan.to_dict())
    with pytest.raises(StatsInputError, match="relative_effect"):
        plan_from_pilot(a)


# --------------------------------------------------------------------------- degenerate input


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        ([1.0], [1.0, 2.0], {}, "at least 2 runs"),
        ([1.0, np.nan, 2.0], [1.0, 2.0], {}, "NaN"),
        ([1.0, -2.0, 2.0], [1.0, 2.0], {}, "negative"),
        ([1.0, 0.0, 2.0], [1.0, 2.0], {}, "zero"),
        ([1.0, 1.0, 1.0], [2.0, 2.0], {}, "both constant"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], {"paired": True}, "one .* run per block"),
        ([1.0, 2.0], [1.0, 2.0], {"margin": 2.0}, "margin"),
        ([1.0, 2.0], [1.0, 2.0], {"alpha": 0.7}, "alpha"),
        ([1.0, 2.0], [1.0, 2.0], {"rng": "seed"}, "rng"),
        ([[1.0, 2.0]], [1.0, 2.0], {}, "1-D"),
        ([1.0, 2.0, 4.0], [2.0, 4.0, 8.0], {"paired": True}, "same ratio"),
    ],
)
def test_degenerate_input_raises_clear_error(a, b, kwargs, match):
    with pytest.raises(StatsInputError, match=match):
        compare_samples(a, b, n_resamples=200, **kwargs)


def test_one_constant_sample_warns_and_still_decides():
    a = [10.0] * 12
    b = list(np.random.default_rng(0).normal(9.0, 0.1, 12))
    with pytest.warns(DegenerateSampleWarning, match="identical"):
        c = compare_samples(a, b, rng=0, n_resamples=300)
    assert c.verdict == "faster"
    assert "constant_sample" in {d.kind for d in c.diagnostics}


def test_summary_degenerate_input():
    with pytest.raises(StatsInputError, match="run counts"):
        compare_from_summary(1, 0.1, 1, 1, 0.1, 10)
    with pytest.raises(StatsInputError, match="not both 0"):
        compare_from_summary(1, 0, 10, 1, 0, 10)
    with pytest.raises(StatsInputError, match="finite"):
        compare_from_summary(np.nan, 0.1, 10, 1, 0.1, 10)
    with pytest.raises(StatsInputError, match="positive"):
        compare_from_summary(-1, 0.1, 10, 1, 0.1, 10)
    with pytest.raises(StatsInputError, match="non-zero"):
        runs_needed(delta=0, sd_a=1)


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_detect_what_they_claim():
    rng = np.random.default_rng(1)
    base = rng.permutation(10 + 0.1 * stats.norm.ppf((np.arange(40) + 0.5) / 40))
    assert diagnose(base) == []
    with_outlier = base.copy()
    with_outlier[17] = 14
    found = [d for d in diagnose(with_outlier) if d.kind == "outliers"]
    assert len(found) == 1  # one merged check, not three
    assert found[0].details["indices"] == [17]
    assert found[0].details["tukey_severe"] == 1
    assert not found[0].details["first_run_slow"]
    # a merely skewed sample (lognormal, sigma 0.3) raises no outlier or bimodality warning
    skewed = np.exp(rng.normal(0, 0.3, 40))
    assert not {"outliers", "bimodality"} & {d.kind for d in diagnose(skewed)}
    drift = base + np.linspace(0, 1, 40)
    d = [x for x in diagnose(drift, name="arm1") if x.kind == "drift"]
    assert d
    assert d[0].arm == "arm1"
    assert d[0].details["kendall_tau"] > 0
    first = base.copy()
    first[0] = 13
    (slow,) = [x for x in diagnose(first) if x.kind == "outliers"]
    assert slow.details["first_run_slow"]
    assert "first run" in slow.message
    # first in run order, not in position
    order = np.arange(40)[::-1]
    (late,) = [x for x in diagnose(first, order=order) if x.kind == "outliers"]
    assert not late.details["first_run_slow"]
    bimodal = np.concatenate([rng.normal(10, 0.1, 20), rng.normal(12, 0.1, 20)])
    assert "bimodality" in {x.kind for x in diagnose(bimodal)}
    few = diagnose([1.0, 1.1, 1.2, 1.05])
    assert few[0].kind == "too_few_runs"
    assert few[0].severity == "warning"
    unequal = pullbench.diagnose_pair(rng.normal(10, 1, 30), rng.normal(10, 0.1, 30))
    assert unequal
    assert unequal[0].kind == "unequal_variances"
    assert json.dumps([x.to_dict() for x in diagnose(with_outlier)])
    with pytest.raises(StatsInputError, match="order has"):
        diagnose(base, order=[1, 2])


# --------------------------------------------------------------------------- CLI and data


def test_cli_compare_stats_summary():
    r = CliRunner().invoke(main, ["compare-stats", "--a", "39.294,2.167,10",
                                  "--b", "38.288,0.634,10", "--margin", "0.05"])
    assert r.exit_code == 0, r.output
    assert "INCONCLUSIVE" in r.output
    assert "df = 10.53" in r.output
    assert "42" in r.output
    r = CliRunner().invoke(main, ["compare-stats", "--a", "39.294,2.167,10",
                                  "--b", "38.288,0.634,10", "--json"])
    assert json.loads(r.output)["verdict"] == "inconclusive"


def test_cli_compare_stats_bad_input():
    r = CliRunner().invoke(main, ["compare-stats", "--a", "1,2", "--b", "1,2,3"])
    assert r.exit_code == 2
    assert "MEAN,SD,N" in r.output
    r = CliRunner().invoke(main, ["compare-stats"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["compare-stats", "--a", "1,0,10", "--b", "1,0,10"])
    assert r.exit_code == 1
    assert "StatsInputError" in r.output


def test_published_figures_resolve_through_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = pullbench.published_figures()
    assert set(df["source"]) == {"moby/moby#48602", "moby/moby#48605"}
    pr = pullbench.published_figures(48602).set_index("role")
    r = compare_from_summary(pr.loc["baseline", "mean_s"], pr.loc["baseline", "sd_s"],
                             int(pr.loc["baseline", "n"]), pr.loc["candidate", "mean_s"],
                             pr.loc["candidate", "sd_s"], int(pr.loc["candidate", "n"]))
    assert sig3(r.welch_p) == 0.188
    with pytest.raises(StatsInputError, match="no published figures"):
        pullbench.published_figures(1)


def test_plan_from_pilot_paired_needs_fewer_blocks_under_drift():
    rng = np.random.default_rng(3)
    block = np.exp(rng.normal(0, 0.1, 16))
    a = 10 * block * np.exp(rng.normal(0, 0.01, 16))
    b = 9.9 * block * np.exp(rng.normal(0, 0.01, 16))
    unpaired = plan_from_pilot(a, b, relative_effect=0.01)
    paired = plan_from_pilot(a, b, relative_effect=0.01, paired=True)
    assert paired.paired
    assert paired.runs_needed_per_arm is not None
    assert unpaired.runs_needed_per_arm is not None
    assert paired.runs_needed_per_arm * 10 < unpaired.runs_needed_per_arm
    assert 0 < paired.mde_relative_at_pilot_n < 0.02
    with pytest.raises(StatsInputError, match="same blocks"):
        plan_from_pilot(a, b[:-1], relative_effect=0.01, paired=True)


def test_conclusions_state_the_verdict_in_words():
    rng = np.random.default_rng(21)
    a = rng.lognormal(np.log(10), 0.05, 15)
    b = rng.lognormal(np.log(10), 0.05, 15)
    c = compare_samples(a, b, rng=1, n_resamples=300, names=("go-iocopy", "pr48602"))
    assert c.verdict == "inconclusive"
    assert c.conclusion().startswith("Inconclusive")
    assert c.mde_relative is not None
    assert 0.02 < c.mde_relative < 0.1
    fast = compare_samples(a, b * 0.9, rng=1, n_resamples=300, names=("go-iocopy", "pr48602"))
    assert fast.conclusion().startswith("pr48602 is faster than go-iocopy by")
    s = compare_from_summary(*PR.values(), margin=0.05).conclusion()
    assert "Not statistically significant" in s
    assert "about 42 runs per arm" in s
    json.dumps(c.to_dict(), allow_nan=False)
    g = analyze_grid(_grid_frame(5), baseline="base", rng=0, n_resamples=200)
    json.dumps(g.to_dict(), allow_nan=False)


def test_unequal_variances_wording_follows_the_analysis():
    """The diagnostic names the test actually used: Welch unpaired, per-block log-ratios paired."""
    rng = np.random.default_rng(7)
    a = rng.normal(10, 2.0, 30)
    b = rng.normal(9, 0.3, 30)
    unpaired = pullbench.compare_samples(a, b, rng=1)
    paired = pullbench.compare_samples(a, b, paired=True, rng=1)
    (u,) = [d for d in unpaired.diagnostics if d.kind == "unequal_variances"]
    (p,) = [d for d in paired.diagnostics if d.kind == "unequal_variances"]
    assert "Welch's test (used here)" in u.message
    assert "The paired analysis (per-block log-ratios, used here)" in p.message
    assert "Welch's test (used here)" not in p.message


def test_one_welch_tost_kernel_for_runs_and_summaries():
    """compare_batch, compare_samples and compare_from_summary agree: one kernel, same numbers."""
    rng = np.random.default_rng(12)
    a = rng.lognormal(np.log(10), 0.05, 14)
    b = rng.lognormal(np.log(9.9), 0.07, 11)
    batch = compare_batch(a, b, margin=0.03)
    c = compare_samples(a, b, margin=0.03, rng=0, n_resamples=200)
    s = compare_from_summary(a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size,
                             margin=0.03)
    for p in (float(batch.p_value), c.p_value, c.welch.p_value):
        assert p == pytest.approx(s.welch_p, rel=1e-12)
    for tost in (float(batch.tost_p_value), c.tost.p_value):
        assert tost == pytest.approx(s.tost_p_value, rel=1e-12)
    assert c.welch.difference_ci_high == pytest.approx(s.difference_ci_high, rel=1e-12)
    assert (c.ratios.fieller_ci_low, c.ratios.fieller_ci_high) == pytest.approx(
        (s.ratio_ci_low, s.ratio_ci_high), rel=1e-12)
    assert c.verdict == s.verdict == str(batch.verdict)
    assert c.paired_test is None
    assert not c.paired
    d = c.to_dict()
    json.dumps(d)
    assert d["welch"]["p_value"] == c.welch.p_value
    assert d["paired_test"] is None
    assert d["tost"]["equivalence_ratio_high"] == pytest.approx(1.03)


def test_default_margin_is_one_constant():
    import inspect

    from pullbench.experiment._analysis import analyze_results

    assert pullbench.DEFAULT_MARGIN == pullbench.ExperimentSpec().margin == 0.02
    for func in (compare_batch, compare_samples, compare_from_summary, analyze_grid,
                 pullbench.compare_all_pairs, analyze_results,
                 pullbench.plots.plot_ratio_intervals):
        assert inspect.signature(func).parameters["margin"].default is pullbench.DEFAULT_MARGIN
