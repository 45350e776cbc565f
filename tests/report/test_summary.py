import numpy as np
import pytest

from audit.engine.gates import evaluate_gates
from audit.engine.suite import Gate
from audit.records import Cell
from audit.report.summary import COLUMNS, CONFIDENCE, binomial_ci, bootstrap_ci, summarize


def records(values, statuses=None, cell=("a", "e", "m")):
    statuses = statuses or ["ok"] * len(values)
    return [{"attack": cell[0], "explainer": cell[1], "metric": cell[2], "sample": i, "value": v,
             "status": s} for i, (v, s) in enumerate(zip(values, statuses, strict=True))]


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.5, 0.1, size=200)
    low, high = bootstrap_ci(values, seed=1)
    assert low < values.mean() < high
    # a 95 % interval of the mean of 200 normal values is about ±1.96 s/√n (0.0139 here); a 90 %
    # one (±1.645 s/√n) would be 0.0022 narrower, far more than the bootstrap's own wobble
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert abs((high - low) / 2 - half) < 0.0008
    assert CONFIDENCE == 0.95
    assert bootstrap_ci(values, seed=1) == (low, high)


def test_no_interval_where_equal_values_show_no_spread():
    # a continuous metric with n equal values: a bootstrap would answer [m, m], a certainty that
    # n images cannot give; no interval is claimed
    assert bootstrap_ci(np.full(5, 0.3), seed=1) is None
    assert bootstrap_ci(np.array([0.7]), seed=1) is None
    row = summarize(records([0.25] * 32), [Cell("a", "e", "m")], {"m": True}, seed=0)[0]
    assert row["mean"] == 0.25 and row["ci_low"] is None and row["ci_high"] is None
    assert row["ci_method"] == "none"


def test_binary_metric_gets_clopper_pearson_interval():
    # 32 hits out of 32: the exact 95 % lower bound solves p³² = 0.025, p = 0.891
    row = summarize(records([1.0] * 32), [Cell("a", "e", "m")], {"m": True}, seed=0, binary={"m": True})[0]
    assert row["ci_method"] == "clopper-pearson" and row["mean"] == 1.0
    assert row["ci_low"] == pytest.approx(0.025 ** (1 / 32), abs=1e-9)
    assert row["ci_low"] == pytest.approx(0.891, abs=5e-4) and row["ci_high"] == 1.0
    # 12 of 32, against the beta quantiles that define the interval (an independent computation)
    from scipy.stats import beta

    low, high = binomial_ci(12, 32)
    assert low == pytest.approx(beta.ppf(0.025, 12, 21), rel=1e-9)
    assert high == pytest.approx(beta.ppf(0.975, 13, 20), rel=1e-9)
    mixed = records([1.0] * 12 + [0.0] * 20)
    row = summarize(mixed, [Cell("a", "e", "m")], {"m": True}, 0, binary={"m": True})[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    # the same values of a metric not declared binary get the bootstrap
    boot = summarize(mixed, [Cell("a", "e", "m")], {"m": True}, 0)[0]
    assert boot["ci_method"] == "bootstrap" and boot["ci_low"] != pytest.approx(low)


def test_binary_metrics_are_declared():
    from audit.metrics.base import METRICS

    assert METRICS.get("accuracy").binary and METRICS.get("agreement").binary
    # per-image 0/1 values: an image is hit or not, fooled or not, flagged or not
    for name in ("pointing_game", "fsr", "gating_probe"):
        assert METRICS.get(name).binary, name
    assert not METRICS.get("spearman").binary and not METRICS.get("com_shift").binary


def test_summary_counts_only_valued_records():
    recs = records([1.0, 0.0, None, 0.5], ["ok", "degenerate", "skipped", "ok"])
    row = summarize(recs, [Cell("a", "e", "m")], {"m": True}, seed=0)[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.5)
    assert row["degenerate"] == 1 and row["skipped"] == 1 and row["status"] == "ok"
    error_row = summarize(records([None], ["error"]), [Cell("a", "e", "m")], {"m": True}, 0)[0]
    assert error_row["status"] == "error" and error_row["mean"] is None
    skipped = summarize(records([None], ["skipped"]), [Cell("a", "e", "m")], {"m": False}, 0)[0]
    assert skipped["status"] == "skipped" and skipped["higher_is_better"] is False
    # a planned cell without any record still gets its row, in plan order, with every column
    rows = summarize(recs, [Cell("x", "e", "m"), Cell("a", "e", "m")], {"m": True}, 0)
    assert set(rows[0]) == set(COLUMNS) and set(rows[1]) == set(COLUMNS)
    assert (rows[0]["attack"], rows[0]["explainer"], rows[0]["metric"]) == ("x", "e", "m")
    assert rows[0]["n"] == 0 and rows[0]["status"] == "skipped" and rows[0]["mean"] is None
    assert rows[1]["attack"] == "a" and rows[1]["n"] == 3


def test_interval_gates_compare_the_far_end_of_the_interval():
    def row(explainer, mean, low, high):
        return {"attack": "rand", "explainer": explainer, "metric": "spearman", "mean": mean,
                "ci_low": low, "ci_high": high}

    summary = [row("gradcam", 0.2, 0.1, 0.3), row("lrp", 0.44, 0.38, 0.52), row("flat", 0.4, None, None)]
    gates = [Gate(metric="spearman", explainer=e, max=0.5, check="interval") for e in ("gradcam", "lrp", "flat")]
    gates += [Gate(metric="spearman", explainer="lrp", max=0.5),  # the mean alone passes
              Gate(metric="spearman", explainer="gradcam", min=0.1, check="interval"),
              Gate(metric="spearman", explainer="gradcam", min=0.15, check="interval")]
    result = evaluate_gates(gates, summary)
    assert [g.passed for g in result] == [True, False, False, True, True, False]
    assert "rand/lrp: 0.44 [0.38, 0.52]" in result[1].message
    assert "no interval" in result[2].message
    assert result[0].label == "spearman [attack *, explainer gradcam] 95 % interval <= 0.5"
    assert result[3].label == "spearman [attack *, explainer lrp] <= 0.5"


def test_gates_pass_fail_and_wildcards():
    summary = [
        {"attack": "none", "explainer": "s", "metric": "spearman", "mean": 1.0},
        {"attack": "noise", "explainer": "s", "metric": "spearman", "mean": 0.2},
        {"attack": "noise", "explainer": "-", "metric": "accuracy", "mean": None},
    ]
    result = evaluate_gates([
        Gate(metric="spearman", attack="none", min=0.9),
        Gate(metric="spearman", attack="*", explainer="s", min=0.3),
        Gate(metric="spearman", max=0.1, attack="zzz"),
        Gate(metric="accuracy", min=0.0),
    ], summary)
    assert [g.passed for g in result] == [True, False, False, False]
    assert "noise/s: 0.2" in result[1].message
    assert result[2].message == "matches no summary row"
    assert "no value" in result[3].message


def test_report_names_explainers_whose_map_does_not_move():
    from types import SimpleNamespace

    from audit.report.markdown import render_markdown

    def row(explainer, mean):
        return {"attack": "rand", "explainer": explainer, "metric": "spearman", "n": 4, "mean": mean,
                "ci_low": mean, "ci_high": mean, "higher_is_better": True, "status": "ok", "degenerate": 0}

    result = SimpleNamespace(exit_code=0, gates=[], records=[],
                             summary=[row("gradcam", 0.2), row("edge_detector", 0.93)])
    manifest = {"suite": {"name": "s", "attacks": [{"id": "rand", "plugin": "model_randomization"}],
                          "metrics": [{"id": "spearman", "plugin": "spearman"}]},
                "model": {"source": "m", "digest": "0" * 64}, "data": {"description": "d"}, "seed": 0,
                "device": "cpu", "timings_s": {"total": 1.0}}
    text = render_markdown(result, manifest)
    assert "| rand | gradcam | spearman | 0.2000 | [0.2000, 0.2000] | moves |" in text
    assert "| rand | edge_detector | spearman | 0.9300 | [0.9300, 0.9300] | **does not move** |" in text
    assert "Explainers not shown to move: edge_detector." in text
    assert "signed maps" in text  # no abs Spearman in this suite: the report says so


def test_randomisation_check_without_values_says_it_could_not_be_made():
    from types import SimpleNamespace

    from audit.report.markdown import render_markdown

    row = {"attack": "rand", "explainer": "gradcam", "metric": "spearman", "n": 0, "mean": None,
           "ci_low": None, "ci_high": None, "higher_is_better": True, "status": "error", "degenerate": 0}
    manifest = {"suite": {"name": "s", "attacks": [{"id": "rand", "plugin": "model_randomization"}],
                          "metrics": [{"id": "spearman", "plugin": "spearman"}]},
                "model": {"source": "m", "digest": "0" * 64}, "data": {"description": "d"}, "seed": 0,
                "device": "cpu", "timings_s": {"total": 1.0}}
    text = render_markdown(SimpleNamespace(exit_code=3, gates=[], records=[], summary=[row]), manifest)
    assert "| gradcam |" in text and "| no value |" in text
    assert "| rand | gradcam | spearman | – | – |" in text
    assert "could not be made" in text and "map moves" not in text


def _randomisation_report(rows, metrics):
    from types import SimpleNamespace

    from audit.report.markdown import render_markdown

    manifest = {"suite": {"name": "s", "attacks": [{"id": "rand", "plugin": "model_randomization"}],
                          "metrics": metrics},
                "model": {"source": "m", "digest": "0" * 64}, "data": {"description": "d"}, "seed": 0,
                "device": "cpu", "timings_s": {"total": 1.0}}
    return render_markdown(SimpleNamespace(exit_code=0, gates=[], records=[], summary=rows), manifest)


def test_randomisation_check_uses_abs_spearman_and_the_interval():
    def row(metric, explainer, mean, low, high):
        return {"attack": "rand", "explainer": explainer, "metric": metric, "n": 16, "mean": mean,
                "ci_low": low, "ci_high": high, "higher_is_better": True, "status": "ok", "degenerate": 0}

    rows = [row("spearman", "lrp", 0.27, 0.2, 0.34), row("spearman_abs", "lrp", 0.44, 0.37, 0.52),
            row("spearman_abs", "gradcam", 0.1, 0.0, 0.2)]
    metrics = [{"id": "spearman", "plugin": "spearman", "params": {}},
               {"id": "spearman_abs", "plugin": "spearman", "params": {"abs": True}}]
    text = _randomisation_report(rows, metrics).split("## Randomisation check")[1]
    # only the |maps| rows; lrp's mean is below 0.5 but its interval reaches above it
    assert "| rand | lrp | spearman_abs | 0.4400 | [0.3700, 0.5200] | not shown to move |" in text
    assert "| rand | gradcam | spearman_abs | 0.1000 | [0.0000, 0.2000] | moves |" in text
    assert "| rand | lrp | spearman |" not in text
    assert "Explainers not shown to move: lrp." in text and "Spearman of |maps|" in text
    everyone = _randomisation_report(rows[2:], metrics)
    assert "Every explainer's map moves." in everyone


def test_summary_table_shows_the_interval_kind():
    from types import SimpleNamespace

    from audit.report.markdown import render_markdown

    def row(metric, mean, low, high, method, n=32):
        return {"attack": "a", "explainer": "e", "metric": metric, "n": n, "mean": mean, "ci_low": low,
                "ci_high": high, "higher_is_better": True, "status": "ok", "degenerate": 0, "ci_method": method}

    manifest = {"suite": {"name": "s", "attacks": [], "metrics": []}, "model": {"source": "m", "digest": "0" * 64},
                "data": {"description": "d"}, "seed": 0, "device": "cpu", "timings_s": {"total": 1.0}}
    summary = [row("pg", 1.0, 0.891, 1.0, "clopper-pearson"), row("sp", 1.0, None, None, "none"),
               row("x", None, None, None, "none", n=0)]
    text = render_markdown(SimpleNamespace(exit_code=0, gates=[], records=[], summary=summary), manifest)
    assert "| a | e | pg | 32 | 1.0000 | [0.8910, 1.0000]ᵇ |" in text
    assert "| a | e | sp | 32 | 1.0000 | no spread |" in text
    assert "| a | e | x | 0 | – | – |" in text
