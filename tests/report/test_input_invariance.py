"""report.md names the explainers that are not input invariant under constant_shift."""

from types import SimpleNamespace

from audit.report.markdown import render_markdown


def _manifest(plugin="constant_shift"):
    return {"suite": {"name": "s", "attacks": [{"id": "shift", "plugin": plugin}],
                      "metrics": [{"id": "spearman", "plugin": "spearman"}]},
            "model": {"source": "m", "digest": "0" * 64}, "data": {"description": "d"}, "seed": 0,
            "device": "cpu", "timings_s": {"total": 1.0}}


def _row(explainer, mean):
    return {"attack": "shift", "explainer": explainer, "metric": "spearman", "n": 64, "mean": mean,
            "ci_low": mean, "ci_high": mean, "higher_is_better": True, "status": "ok", "degenerate": 0}


def test_names_the_explainers_that_are_not_input_invariant():
    result = SimpleNamespace(exit_code=0, gates=[], records=[],
                             summary=[_row("saliency", 1.0), _row("integrated_gradients", 0.61), _row("lrp", 0.985)])
    text = render_markdown(result, _manifest())
    assert "| shift | saliency | 1.0000 | invariant on these 64 images |" in text
    assert "| shift | integrated_gradients | 0.6100 | **not input invariant** |" in text
    assert "Explainers that are not input invariant: integrated_gradients, lrp." in text


def test_no_section_without_a_constant_shift_and_no_claim_without_values():
    result = SimpleNamespace(exit_code=0, gates=[], records=[], summary=[_row("saliency", 0.5)])
    assert "Input invariance" not in render_markdown(result, _manifest("gaussian_noise"))
    empty = SimpleNamespace(exit_code=3, gates=[], records=[], summary=[_row("saliency", None)])
    text = render_markdown(empty, _manifest())
    assert "could not be made" in text and "not input invariant:" not in text
