"""report.md's manipulation transfer matrix (Heo et al. Table 1)."""

from types import SimpleNamespace

from audit.report.transfer import transfer_section


def _row(attack, explainer, metric, mean, low=None, high=None):
    return {"attack": attack, "explainer": explainer, "metric": metric, "mean": mean,
            "ci_low": low, "ci_high": high}


SUITE = {
    "explainers": [{"id": "gradcam"}, {"id": "rise"}],
    "attacks": [{"id": "none", "plugin": "none", "params": {}},
                {"id": "m_loc", "plugin": "manipulation", "params": {}},
                {"id": "m_top", "plugin": "manipulation", "params": {"target": "saliency", "fooling": "topk"}},
                {"id": "m_act", "plugin": "manipulation", "params": {"fooling": "active"}}],
    "metrics": [{"id": "fsr", "plugin": "fsr", "params": {}},
                {"id": "fsr_topk", "plugin": "fsr", "params": {"fooling": "topk"}},
                {"id": "rho", "plugin": "spearman", "params": {}},
                {"id": "accuracy", "plugin": "accuracy", "params": {}}],
}


def test_each_row_reads_the_fsr_of_its_own_fooling_type():
    summary = [_row("m_loc", "gradcam", "fsr", 0.75, 0.6, 0.85), _row("m_loc", "rise", "fsr", 0.1, 0.0, 0.2),
               _row("m_loc", "gradcam", "fsr_topk", 0.99),  # another fooling type: not this row's
               _row("m_top", "gradcam", "fsr_topk", 0.5, 0.4, 0.6), _row("m_top", "gradcam", "fsr", 0.01),
               _row("m_loc", "-", "accuracy", 0.98, 0.95, 1.0), _row("m_loc", "gradcam", "rho", -0.2, -0.3, -0.1),
               _row("none", "gradcam", "fsr", 0.0)]
    lines = transfer_section(SimpleNamespace(summary=summary), SUITE)
    table: dict[str, str] = {}
    for line in lines:  # the FSR table comes first, the Spearman table after it
        if line.startswith("| m_"):
            table.setdefault(line.split(" | ")[0].strip("| "), line)
    assert table["m_loc"] == ("| m_loc | gradcam | location | 0.75 [0.60, 0.85] | 0.10 [0.00, 0.20] "
                              "| 0.98 [0.95, 1.00] |")
    assert table["m_top"] == "| m_top | saliency | topk | 0.50 [0.40, 0.60] | – | – |"
    assert table["m_act"].startswith("| m_act | gradcam | active | – | – |")
    assert any("m_act" in line and "No FSR of the right fooling type" in line for line in lines)
    assert "| m_loc | -0.20 [-0.30, -0.10] | – |" in lines  # the Spearman table
    assert not any(line.startswith("| none") for line in lines)


def test_no_section_without_a_manipulation():
    suite = dict(SUITE, attacks=[{"id": "none", "plugin": "none", "params": {}}])
    assert transfer_section(SimpleNamespace(summary=[]), suite) == []


def test_weight_noise_on_a_manipulation_is_a_row_of_that_kind():
    suite = dict(SUITE, attacks=SUITE["attacks"] + [
        {"id": "m_top_noise", "plugin": "weight_noise", "params": {"of": "m_top", "sigma": 0.05}},
        {"id": "original_noise", "plugin": "weight_noise", "params": {"sigma": 0.05}}])
    summary = [_row("m_top_noise", "gradcam", "fsr_topk", 0.45, 0.3, 0.6), _row("m_top_noise", "gradcam", "fsr", 0.9)]
    lines = transfer_section(SimpleNamespace(summary=summary), suite)
    assert "| m_top_noise | saliency | topk | 0.45 [0.30, 0.60] | – | – |" in lines
    assert not any(line.startswith("| original_noise") for line in lines)  # noise on the original: no fooling kind
