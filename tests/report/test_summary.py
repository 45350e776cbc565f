import numpy as np
import pytest

from audit.engine.gates import evaluate_gates
from audit.engine.suite import Gate
from audit.records import Cell
from audit.report.summary import bootstrap_ci, summarize


def records(values, statuses=None, cell=("a", "e", "m")):
    statuses = statuses or ["ok"] * len(values)
    return [{"attack": cell[0], "explainer": cell[1], "metric": cell[2], "sample": i, "value": v,
             "status": s} for i, (v, s) in enumerate(zip(values, statuses, strict=True))]


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.5, 0.1, size=200)
    low, high = bootstrap_ci(values, seed=1)
    assert low < values.mean() < high
    # the interval of a mean of 200 values with sd 0.1 is about +-1.96 * 0.1 / sqrt(200)
    assert abs((high - low) / 2 - 1.96 * 0.1 / np.sqrt(200)) < 0.005
    assert bootstrap_ci(values, seed=1) == (low, high)
    assert bootstrap_ci(np.full(5, 0.3), seed=1) == (0.3, 0.3)


def test_summary_counts_only_valued_records():
    recs = records([1.0, 0.0, None, 0.5], ["ok", "degenerate", "skipped", "ok"])
    row = summarize(recs, [Cell("a", "e", "m")], {"m": True}, seed=0)[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.5)
    assert row["degenerate"] == 1 and row["skipped"] == 1 and row["status"] == "ok"
    error_row = summarize(records([None], ["error"]), [Cell("a", "e", "m")], {"m": True}, 0)[0]
    assert error_row["status"] == "error" and error_row["mean"] is None
    skipped = summarize(records([None], ["skipped"]), [Cell("a", "e", "m")], {"m": False}, 0)[0]
    assert skipped["status"] == "skipped" and skipped["higher_is_better"] is False


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
    assert "| rand | gradcam | 0.2000 | moves |" in text
    assert "| rand | edge_detector | 0.9300 | **does not move** |" in text
    assert "Explainers that do not move: edge_detector." in text


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
    assert "could not be made" in text and "map moves" not in text
