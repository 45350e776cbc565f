"""The verdict layer of `explain-audit check` on hand-made summary rows (known answers)."""

import csv
import io

import pytest

from audit.engine.suite import CheckRule
from audit.engine.verdicts import COLUMNS, evaluate_checks, judge, verdicts_csv, verdicts_failed


def row(mean, lo=None, hi=None, explainer="gradcam", metric="m", attack="none", n=32, status="ok"):
    return {"attack": attack, "explainer": explainer, "metric": metric, "n": n, "mean": mean, "ci_low": lo,
            "ci_high": hi, "status": status}


def rule(**kw):
    return CheckRule(**{"check": "manipulation", "metric": "m", **kw})


@pytest.mark.parametrize("bound, mean, lo, hi, expected", [
    # min 0.3: pass only when the whole interval is at or above it, fail when wholly below
    ("min", 0.5, 0.31, 0.7, "pass"),
    ("min", 0.5, 0.30, 0.7, "pass"),
    ("min", 0.5, 0.29, 0.7, "warn"),
    ("min", 0.2, 0.10, 0.31, "warn"),
    ("min", 0.1, 0.00, 0.29, "fail"),
    ("min", 0.1, 0.00, 0.30, "warn"),
    # max 0.3: the mirror image
    ("max", 0.1, 0.00, 0.30, "pass"),
    ("max", 0.1, 0.00, 0.31, "warn"),
    ("max", 0.5, 0.31, 0.9, "fail"),
    ("max", 0.5, 0.30, 0.9, "warn"),
])
def test_verdict_from_the_interval(bound, mean, lo, hi, expected):
    v = judge(rule(**{bound: 0.3}), row(mean, lo, hi))
    assert v.verdict == expected
    assert (v.value, v.ci_low, v.ci_high, v.threshold, v.bound) == (mean, lo, hi, 0.3, bound)


def test_without_an_interval_the_mean_decides():
    assert judge(rule(min=0.3), row(0.31)).verdict == "pass"
    assert judge(rule(min=0.3), row(0.29)).verdict == "fail"
    assert "no interval" in judge(rule(min=0.3), row(0.29)).reason


def test_warn_severity_never_fails_and_reasons_say_why():
    v = judge(CheckRule(check="accuracy", metric="m", explainer="-", min=0.5, severity="warn"), row(0.1, 0.0, 0.2))
    assert v.verdict == "warn" and "often wrong" in v.reason
    failed = judge(rule(min=0.3), row(0.1, 0.0, 0.2))
    assert "the whole interval beyond min 0.3" in failed.reason and "gradcam's map does not follow" in failed.reason
    open_ = judge(rule(min=0.3), row(0.25, 0.1, 0.4))
    assert "cannot tell" in open_.reason and "failing side" in open_.reason


def test_rows_without_a_value_are_skipped_or_errors():
    assert judge(rule(min=0.3), row(None, status="skipped")).verdict == "skipped"
    assert judge(rule(min=0.3), row(None, status="error")).verdict == "error"


def test_matching_rows_and_rules_without_rows():
    rows = [row(0.5, 0.4, 0.6, "saliency"), row(0.1, 0.0, 0.2, "gradcam"),
            row(0.1, 0.0, 0.2, "gradcam", attack="randomized"), row(0.9, 0.8, 1.0, "gradcam", metric="other")]
    verdicts = evaluate_checks([rule(min=0.3), rule(min=0.3, explainer="saliency"), rule(min=0.3, attack="x")], rows)
    assert [(v.explainer, v.verdict) for v in verdicts] == [("saliency", "pass"), ("gradcam", "fail"),
                                                            ("saliency", "pass"), ("*", "skipped")]


def test_exit_rule_and_strict():
    verdicts = evaluate_checks([rule(min=0.3)], [row(0.5, 0.4, 0.6), row(0.3, 0.2, 0.4, "saliency")])
    assert [v.verdict for v in verdicts] == ["pass", "warn"]
    assert not verdicts_failed(verdicts) and verdicts_failed(verdicts, strict=True)
    skipped = evaluate_checks([rule(min=0.3)], [row(None, status="skipped")])
    assert not verdicts_failed(skipped) and verdicts_failed(skipped, strict=True)
    assert verdicts_failed(evaluate_checks([rule(min=0.3)], [row(0.1, 0.0, 0.2)]))


def test_verdicts_csv_columns():
    text = verdicts_csv(evaluate_checks([rule(min=0.3)], [row(0.1, 0.0, 0.2), row(None, status="skipped")]))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS
    assert COLUMNS[:7] == ("check", "explainer", "verdict", "value", "ci_low", "ci_high", "threshold")
    assert rows[0]["verdict"] == "fail" and float(rows[0]["value"]) == 0.1 and float(rows[0]["threshold"]) == 0.3
    assert rows[1]["value"] == "" and rows[1]["verdict"] == "skipped"


def test_a_rule_has_exactly_one_bound():
    with pytest.raises(ValueError):
        CheckRule(check="c", metric="m")
    with pytest.raises(ValueError):
        CheckRule(check="c", metric="m", min=0.1, max=0.2)


def test_degenerate_values_are_named_in_the_reason():
    r = {**row(0.0, -0.1, 0.1), "degenerate": 32}
    v = judge(rule(min=0.3), r)
    assert v.verdict == "fail" and "32 of 32 images had a constant map" in v.reason
    assert "constant map" not in judge(rule(min=0.3), row(0.0, -0.1, 0.1)).reason


def test_the_reason_names_what_the_failing_metric_saw():
    """agreement and aopc_gap flag manipulation for different reasons; each says only its own."""
    agreement = judge(rule(metric="agreement", min=0.55), row(0.2, 0.1, 0.3, metric="agreement"),
                      "explainer_agreement").reason
    gap = judge(rule(metric="gap", min=0.0), row(-0.2, -0.3, -0.1, metric="gap"), "aopc_gap").reason
    assert "disagrees with what masking the image does" in agreement and "random" not in agreement
    assert "no better than random order" in gap and "disagrees" not in gap


def test_evaluate_checks_reads_the_plugin_behind_a_metric_id():
    verdicts = evaluate_checks([rule(metric="agreement", min=0.55)], [row(0.2, 0.1, 0.3, metric="agreement")],
                               {"agreement": "explainer_agreement"})
    assert "disagrees with what masking the image does" in verdicts[0].reason
