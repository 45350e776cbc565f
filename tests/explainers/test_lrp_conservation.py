"""LRP's relevance conservation on the reference ResNet: the canonizer is applied and matters,
and a map whose relevance is created or reversed is refused, with the reason, by the engine."""

import pytest
import torch

from audit.builtin.shapes import render
from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.explainers.base import EXPLAINERS, ExplainContext


@pytest.fixture(scope="module")
def reference():
    model = load_reference()
    x = INPUT_SPEC.normalize(render(range(6), "test").images)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    return model, x, target


def test_relevance_is_conserved_on_the_reference_resnet(reference):
    model, x, target = reference
    lrp = EXPLAINERS.create("lrp")
    maps = lrp(model, x, target, ExplainContext(INPUT_SPEC))
    sums = maps.double().flatten(1).sum(dim=1)
    # one unit enters at the target logit; the ε rule at the dense layer absorbs part of it (its
    # bias), nothing may create relevance: on the test split the sums lie in 0.39–1.06
    assert bool((sums > 0.3).all() and (sums < 1.1).all()), sums
    assert lrp.map_problems(maps) == [None] * 6


def test_without_the_rewritten_graph_relevance_is_created_and_the_map_refused(reference):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    from audit.explainers.base import without_inplace

    model, x, target = reference
    lrp = EXPLAINERS.create("lrp")
    rewritten = lrp(model, x, target, ExplainContext(INPUT_SPEC))
    # Zennit on the model as declared: torchvision's residual '+' is invisible to the rules and
    # both branches pass on the full relevance
    with Gradient(model=without_inplace(model).eval(), composite=EpsilonPlusFlat()) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), torch.eye(model(x).shape[1])[target])
    without = relevance.sum(dim=1)
    sums = without.double().flatten(1).sum(dim=1)
    assert bool((sums > 5).all()), sums
    problems = lrp.map_problems(without)
    assert all(p is not None and "relevance not conserved" in p for p in problems)
    assert f"{float(sums[0]):.4g}" in problems[0]
    assert not torch.allclose(rewritten, without, rtol=0.1)


def test_conservation_band_and_switch():
    maps = torch.zeros(5, 4, 4)
    maps[:, 0, 0] = torch.tensor([1.0, 1.5, 1.6, -0.5, -0.6])  # the map sums
    lrp = EXPLAINERS.create("lrp")
    assert [p is None for p in lrp.map_problems(maps)] == [True, True, False, True, False]
    assert "[-0.5, 1.5]" in lrp.map_problems(maps)[2]
    tight = EXPLAINERS.create("lrp", {"conservation_tolerance": 0.0})
    assert [p is None for p in tight.map_problems(maps)] == [True, False, False, False, False]
    vanished = torch.zeros(2, 4, 4)
    vanished[:, 1, 1] = torch.tensor([1e-4, -2e-3])  # inside [-tol, 1 + tol], but (almost) nothing left
    assert "relevance vanished" in lrp.map_problems(vanished)[0] and lrp.map_problems(vanished)[1] is None
    off = EXPLAINERS.create("lrp", {"conservation_tolerance": None})
    assert off.map_problems(maps) == [None] * 5
    assert EXPLAINERS.create("saliency").map_problems(maps) == [None] * 5


def test_engine_refuses_rejected_maps_with_the_reason(tmp_path, monkeypatch):
    from audit.engine.run import run_suite
    from audit.engine.suite import load_suite
    from audit.explainers.saliency import Saliency

    # the engine's side of the check, with a quick explainer whose check rejects image 1
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\nseed: 0\ndevice: cpu\nmodel: {source: builtin:shapes-resnet}\n"
                     "data: {source: builtin:shapes, n: 3, batch_size: 3}\nexplainers: [saliency]\n"
                     "attacks: [none, {gaussian_noise: {sigma: 0.05}}]\nmetrics: [spearman, pointing_game]\n")
    calls = []

    def reject_second(self, maps):
        calls.append(maps.shape[0])
        return [None, "relevance not conserved: test", None]

    monkeypatch.setattr(Saliency, "map_problems", reject_second)
    result = run_suite(load_suite(suite), tmp_path / "out", cache_dir=None)
    assert calls  # the engine asked the explainer about its maps
    by_sample = {}
    for r in result.records:
        by_sample.setdefault(r["sample"], set()).add((r["status"], r.get("reason")))
    # each metric names the first rejected map it reads: spearman the clean one, the pointing game
    # (which reads the attacked setting's map only) the attacked one
    assert by_sample[1] == {("skipped", "saliency clean map rejected: relevance not conserved: test"),
                            ("skipped", "saliency attacked map rejected: relevance not conserved: test")}
    spearman = {r.get("reason") for r in result.records if r["sample"] == 1 and r["metric"] == "spearman"}
    assert spearman == {"saliency clean map rejected: relevance not conserved: test"}
    assert all(status in ("ok", "degenerate") for s in (0, 2) for status, _ in by_sample[s])
    assert all(row["n"] == 2 and row["skipped"] == 1 for row in result.summary)
    assert "saliency clean map rejected" in (tmp_path / "out" / "report.md").read_text()
