"""The typed report and its renderings: JUnit counts and messages, heat shading by direction,
findings generated from the numbers, escaping, the Markdown size cap."""

import re

import pytest

from audit.engine.gates import evaluate_gates
from audit.engine.suite import Gate
from audit.report.build import build_report
from audit.report.html import RAMP, render_html
from audit.report.junit import render_junit
from audit.report.markdown import MAX_BYTES, render_report_markdown

junitparser = pytest.importorskip("junitparser")


def row(attack, explainer, metric, mean, low=None, high=None, higher=True, status="ok", n=16, method="bootstrap"):
    return {"attack": attack, "explainer": explainer, "metric": metric, "n": 0 if mean is None else n,
            "mean": mean, "ci_low": low, "ci_high": high, "higher_is_better": higher, "status": status,
            "degenerate": 0, "skipped": 0, "errors": 0, "ci_method": method}


def manifest(name="s", attacks=(), metrics=(), explainers=(), gates=(), class_names=()):
    return {"suite": {"name": name, "attacks": list(attacks), "metrics": list(metrics),
                      "explainers": list(explainers), "gates": list(gates)},
            "model": {"source": "builtin:shapes-resnet", "digest": "0" * 64},
            "data": {"description": "d", "digest": "1" * 64, "class_names": list(class_names)},
            "seed": 0, "device": "cpu", "timings_s": {"total": 1.0}, "created": "2026-01-01T00:00:00+00:00",
            "versions": {"explain-audit": "0"}}


ITEMS = dict(
    attacks=[{"id": "none", "plugin": "none", "params": {}},
             {"id": "noise", "plugin": "gaussian_noise", "params": {"sigma": 0.05}},
             {"id": "gating", "plugin": "gating", "params": {}},
             {"id": "rand", "plugin": "model_randomization", "params": {"layers": 4}}],
    metrics=[{"id": "spearman", "plugin": "spearman", "params": {}},
             {"id": "com_shift", "plugin": "com_shift", "params": {}},
             {"id": "accuracy", "plugin": "accuracy", "params": {}}],
    explainers=[{"id": "rise", "plugin": "rise", "params": {"n_masks": 500}},
                {"id": "gradcam", "plugin": "gradcam", "params": {}}])


def _report(summary, gates=(), records=(), **extra):
    gate_models = [Gate(**g) for g in gates]
    results = evaluate_gates(gate_models, summary)
    code = 3 if any(r["status"] == "error" for r in records) else (1 if any(not g.passed for g in results) else 0)
    m = manifest(gates=list(gates), **{**ITEMS, **extra})
    return build_report(summary, list(records), results, code, m)


SUMMARY = [
    row("noise", "gradcam", "spearman", 0.41, 0.35, 0.47),  # fails min 0.5
    row("noise", "rise", "spearman", 0.8, 0.7, 0.9),  # passes min 0.5
    row("gating", "rise", "spearman", 0.03, 0.01, 0.06),  # blinded
    row("gating", "gradcam", "spearman", 0.97, 0.95, 0.99),  # kept
    row("rand", "gradcam", "spearman", 0.93, 0.9, 0.96),  # fails the randomisation check
    row("rand", "rise", "spearman", 0.1, 0.0, 0.2),  # moves
    row("none", "rise", "com_shift", None, status="error"),  # errored, gated -> <error>
    row("none", "gradcam", "com_shift", None, status="skipped"),  # skipped, no gate -> <skipped>
    row("noise", "rise", "com_shift", None, status="error"),  # errored, no gate -> <error>
    row("none", "-", "accuracy", 1.0, 0.9, 1.0, method="clopper-pearson"),
]
RECORDS = [{"attack": "none", "explainer": "rise", "metric": "com_shift", "sample": 0, "value": None,
            "status": "error", "reason": "explainer 'rise' failed: RuntimeError: boom"},
           {"attack": "none", "explainer": "gradcam", "metric": "com_shift", "sample": 0, "value": None,
            "status": "skipped", "reason": "no masks"},
           {"attack": "noise", "explainer": "rise", "metric": "com_shift", "sample": 0, "value": None,
            "status": "error", "reason": "boom again"}]
GATES = [{"attack": "noise", "explainer": "*", "metric": "spearman", "min": 0.5},
         {"attack": "noise", "explainer": "gradcam", "metric": "spearman", "min": 0.2},  # same row, second gate
         {"attack": "none", "explainer": "rise", "metric": "com_shift", "max": 3.0},
         {"attack": "none", "explainer": "-", "metric": "accuracy", "min": 0.95, "check": "interval"},
         {"attack": "gone", "metric": "accuracy", "min": 0.5}]  # matches no row


def test_junit_counts_names_and_messages_read_back_by_a_junit_parser(tmp_path):
    report = _report(SUMMARY, GATES, RECORDS)
    path = tmp_path / "junit.xml"
    path.write_text(render_junit(report))
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = [case for suite in xml for case in suite]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)) == 8
    outcome = {}
    for case in cases:
        kinds = {type(r).__name__ for r in case.result}
        outcome[case.name] = kinds.pop() if kinds else "pass"
    assert outcome == {
        "noise/gradcam/spearman": "Failure", "noise/rise/spearman": "pass",
        "noise/gradcam/spearman (mean min 0.2)": "pass",
        "none/rise/com_shift": "Error",
        "none/-/accuracy": "Failure",  # the interval [0.9, 1.0] reaches below 0.95
        "gone/*/accuracy": "Failure",
        "none/gradcam/com_shift": "Skipped", "noise/rise/com_shift": "Error"}
    totals = xml  # the <testsuites> element carries the totals
    assert (totals.tests, totals.failures, totals.errors, totals.skipped) == (8, 3, 2, 1)
    failure = next(c for c in cases if c.name == "noise/gradcam/spearman").result[0]
    assert failure.message.startswith("spearman 0.41 < min 0.50 [CI 0.35, 0.47]")
    interval = next(c for c in cases if c.name == "none/-/accuracy").result[0]
    assert interval.message.startswith("accuracy CI low 0.90 < min 0.95 [CI 0.90, 1.00]")
    error = next(c for c in cases if c.name == "none/rise/com_shift").result[0]
    assert "RuntimeError: boom" in error.message


def test_findings_are_generated_from_the_numbers():
    report = _report(SUMMARY, GATES, RECORDS)
    texts = [f.text for f in report.findings]
    assert ("rise is blinded by the gating attack: spearman 0.03 [0.01, 0.06] between its clean and attacked "
            "maps.") in texts
    assert any(t.startswith("gradcam fails the randomisation check") and "0.93 [0.90, 0.96]" in t for t in texts)
    assert any(t.startswith("rise passes the randomisation check") for t in texts)
    assert any(t.startswith("gradcam keeps its map under the gating attack: spearman 0.97") for t in texts)
    assert any(t.startswith("Gate failed: noise/gradcam/spearman: spearman 0.41 < min 0.50") for t in texts)
    # the randomisation attack's low Spearman is the check passing, never "blinded"
    assert not any("blinded by the rand" in t for t in texts)
    assert any("2 of 10 cells errored" in t for t in texts)


def test_no_blinding_claim_when_the_interval_reaches_above_the_bound():
    summary = [row("gating", "rise", "spearman", 0.1, 0.02, 0.25), row("noise", "rise", "spearman", 0.3, 0.2, 0.55)]
    texts = [f.text for f in _report(summary).findings]
    assert not any("blinded" in t for t in texts)
    assert texts == ["rise's map changes substantially under the gating attack: spearman 0.10 [0.02, 0.25]."]


def test_manipulation_findings_claim_only_what_the_interval_shows():
    m = manifest(attacks=[{"id": "m", "plugin": "manipulation", "params": {"target": "gradcam"}}],
                 metrics=[{"id": "fsr", "plugin": "fsr", "params": {}}],
                 explainers=[{"id": "gradcam", "plugin": "gradcam"}, {"id": "rise", "plugin": "rise"}])
    summary = [row("m", "gradcam", "fsr", 0.9, 0.7, 0.98, higher=False),
               row("m", "rise", "fsr", 0.5, 0.25, 0.75, higher=False)]
    texts = [f.text for f in build_report(summary, [], [], 0, m).findings]
    assert ("gradcam is fooled by the manipulated model m (location fooling, fine-tuned against gradcam): "
            "FSR 0.90 [0.70, 0.98].") in texts
    assert any(t.startswith("rise is fooled on 50% of the images") and "does not rule out 50% or fewer" in t
               for t in texts)


def _shade(html: str, text: str) -> str:
    match = re.search(r'<td class="num" style="([^"]*)">' + re.escape(text) + "</td>", html)
    assert match, text
    return match.group(1)


def test_heat_shading_follows_the_metric_direction():
    summary = [row("noise", "gradcam", "spearman", 0.95, 0.9, 0.99), row("noise", "rise", "spearman", 0.05, 0.0, 0.1),
               row("noise", "gradcam", "com_shift", 0.5, 0.4, 0.6, higher=False),
               row("noise", "rise", "com_shift", 9.5, 9.0, 9.9, higher=False)]
    html = render_html(_report(summary))
    light, dark = f"background:{RAMP[0]}", f"background:{RAMP[-1]}"
    assert light in _shade(html, "0.95 [0.90, 0.99]") and dark in _shade(html, "0.05 [0.00, 0.10]")
    # lower is better: the small shift is light, the large one dark
    assert light in _shade(html, "0.50 [0.40, 0.60]") and dark in _shade(html, "9.50 [9.00, 9.90]")


HOSTILE = '<img src=x onerror=alert(1)>'


def test_user_controlled_text_is_escaped_everywhere():
    summary = [row("noise", HOSTILE, "spearman", 0.5, 0.4, 0.6)]
    report = _report(summary, class_names=[HOSTILE, "a|b"], name="s")
    html = render_html(report)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    md = render_report_markdown(report)
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)>" in md
    assert "onerror" not in re.sub(r"&lt;img src=x onerror=alert\(1\)>", "", md)
    junit = render_junit(report)
    assert "<img" not in junit


def test_markdown_stays_under_one_mebibyte():
    summary = [row(f"attack{i}", f"explainer{j}", f"metric{k}", 0.5, 0.4, 0.6)
               for i in range(40) for j in range(40) for k in range(8)]
    text = render_report_markdown(build_report(summary, [], [], 0, manifest()))
    assert len(text.encode()) <= MAX_BYTES
    assert "more rows in summary.csv" in text


def test_methods_appendix_resolves_defaults():
    report = _report([row("noise", "rise", "spearman", 0.5, 0.4, 0.6)])
    rise = next(m for m in report.methods if m.id == "rise")
    assert rise.params["n_masks"] == 500 and len(rise.params) > 1  # the defaults filled in
    assert rise.section == "explainer" and rise.summary


def test_a_clean_and_attacked_map_share_one_colour_scale():
    import numpy as np

    from audit.report.figures import _shared_scale

    clean, flat = np.array([[0.5, 0.6], [0.7, 0.9]]), np.zeros((2, 2))
    assert _shared_scale(clean, flat) == (0.0, 0.9)  # the dead attacked map reads dark next to the clean one
    assert _shared_scale(clean, clean * 0 + 0.55) == (0.5, 0.9)
    assert _shared_scale(np.array([[-2.0, 1.0]]), np.array([[0.5, 0.5]])) == (-2.0, 2.0)  # signed: 0 in the middle
