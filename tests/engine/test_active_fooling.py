"""The engine supplies active fooling's swapped class and its clean map (METHODS §4)."""

import torch

from audit.builtin import pairs
from audit.engine.cache import Cache
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.seeding import derive_seed

SUITE = """\
name: active
seed: 1
device: cpu
target: {target}
model: {{source: builtin:shapes-resnet}}
data: {{source: builtin:shapes-pairs, n: 6, batch_size: 6}}
explainers: [gradcam, saliency]
attacks: [none]
metrics: {metrics}
"""
ACTIVE = "[{fsr: {fooling: active}, id: fsr_active}, spearman]"


def runner(tmp_path, target="predicted", metrics=ACTIVE) -> Runner:
    path = tmp_path / "active.yaml"
    path.write_text(SUITE.format(target=target, metrics=metrics))
    return Runner(load_suite(path), Cache(None))


def spy_explain(monkeypatch) -> list:
    """(explainer, role) of every map the runner asks for."""
    explained = []
    explain = Runner._explain

    def count(self, explainer_id, model, x, target, ids, attack_id, role="target"):
        explained.append((explainer_id, role))
        return explain(self, explainer_id, model, x, target, ids, attack_id, role)

    monkeypatch.setattr(Runner, "_explain", count)
    return explained


def test_swap_class_is_the_other_shape_and_its_map_is_the_clean_models(tmp_path, monkeypatch):
    run = runner(tmp_path)
    seen: dict[str, list] = {}
    compute = Runner._compute

    def spy(self, metric_id, inputs):
        seen.setdefault(metric_id, []).append(inputs)
        return compute(self, metric_id, inputs)

    monkeypatch.setattr(Runner, "_compute", spy)
    explained = spy_explain(monkeypatch)
    records = [r for unit in run.units() for r in run.run_unit(unit)]

    _, a, b = pairs.render_pairs(range(6))
    gradcam = seen["fsr_active"][0]  # explainers run in suite order: gradcam first
    assert set(gradcam.target.tolist()) <= set(a.tolist()) | set(b.tolist())
    other_shape = torch.where(gradcam.target.cpu() == a, b, a)  # the model's top two are {a, b} here
    ctx = ExplainContext(run.model.spec, derive_seed(1, "explainer", "gradcam"), tuple(range(6)))
    independent = EXPLAINERS.create("gradcam")(run.model.model, gradcam.x, other_shape, ctx)
    torch.testing.assert_close(gradcam.map_swap, independent)
    assert not torch.allclose(gradcam.map_swap, gradcam.map)  # not the target's own map
    # one clean map and one swap map per explainer: shared by both metrics, no repeat
    assert sorted(explained) == [("gradcam", "swap"), ("gradcam", "target"),
                                 ("saliency", "swap"), ("saliency", "target")]

    by = {(r["explainer"], r["metric"]): [] for r in records}
    for r in records:
        by[(r["explainer"], r["metric"])].append(r)
    # Grad-CAM's map follows the class: its clean c₁ and c₂ maps differ, nothing is fooled
    assert all(r["status"] == "ok" and r["value"] == 0.0 for r in by[("gradcam", "fsr_active")])
    # plain gradients look alike for both classes: those images would be a false alarm under
    # `none`, so they are declined with the reason, and the rest are not fooled
    saliency = by[("saliency", "fsr_active")]
    skipped = [r for r in saliency if r["status"] == "skipped"]
    assert skipped and all("clean map already passes the active fooling test" in r["reason"] for r in skipped)
    assert all(r["value"] == 0.0 for r in saliency if r["status"] != "skipped")


def test_no_swap_map_unless_a_metric_reads_it(tmp_path, monkeypatch):
    run = runner(tmp_path, metrics="[spearman, {fsr: {fooling: topk}}]")
    explained = spy_explain(monkeypatch)
    for unit in run.units():
        run.run_unit(unit)
    assert sorted(explained) == [("gradcam", "target"), ("saliency", "target")]
