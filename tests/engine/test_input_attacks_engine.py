"""The input attacks and sensitivity metrics through the engine: kind "both" (constant_shift),
an input attack that reads training images (targeted_map, empty export through the cache), and
metrics that re-explain through ``MetricInputs.explain``."""

from pathlib import Path

import torch

from audit.engine.cache import Cache
from audit.engine.runner import Runner, Unit
from audit.engine.suite import load_suite
from audit.explainers.base import ExplainContext
from audit.metrics.base import METRICS, MetricInputs
from audit.seeding import derive_seed


def _suite(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("\n".join([
        "name: input-engine", "seed: 2", "device: cpu", "model: {source: builtin:shapes-resnet}",
        "data: {source: builtin:shapes, n: 2, batch_size: 2}", "explainers: [saliency]",
        "attacks: [none, {constant_shift: {shift: -1.0}}, {targeted_map: {steps: 1}}]",
        "metrics: [spearman, agreement, {max_sensitivity: {n_samples: 2}}]", ""]))
    return path


def test_input_attacks_and_sensitivity_run_in_the_engine(tmp_path):
    cache = Cache(tmp_path / "cache")
    runner = Runner(load_suite(_suite(tmp_path)), cache)
    records = runner.run_unit(Unit(0, "-")) + runner.run_unit(Unit(0, "saliency"))
    by = {(r["attack"], r["explainer"], r["metric"], r["sample"]): r for r in records}
    assert all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"]
    for sample in (0, 1):
        assert by[("constant_shift", "-", "agreement", sample)]["value"] == 1.0
        assert by[("constant_shift", "saliency", "spearman", sample)]["value"] > 0.999
        assert by[("targeted_map", "-", "agreement", sample)]["value"] == 1.0
    # the engine's sensitivity equals the metric computed by hand with the cell's explainer and seed
    batch = runner.batch(0)
    x = runner.model.spec.normalize(batch.images)
    model = runner.model.model
    with torch.no_grad():
        pred = model(x).argmax(1)
    explainer = runner.explainers["saliency"]
    eseed = derive_seed(2, "explainer", "saliency")

    def explain(m, xs, ts, ids):
        return explainer(m, xs, ts, ExplainContext(runner.model.spec, eseed, tuple(ids)))

    maps = explain(model, x, pred, batch.ids)
    inputs = MetricInputs(spec=runner.model.spec, x=x, x_attacked=x, model=model, attacked_model=model,
                          target=pred, labels=batch.labels, predicted=pred, predicted_attacked=pred, map=maps,
                          map_attacked=maps, seed=derive_seed(2, "metric", "none", "saliency"),
                          sample_ids=tuple(batch.ids), explain=explain)
    expected = METRICS.create("max_sensitivity", {"n_samples": 2}).compute(inputs).values
    got = [by[("none", "saliency", "max_sensitivity", s)]["value"] for s in batch.ids]
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expected, rtol=1e-5, atol=1e-7)
    # a second runner on the same cache imports targeted_map's (empty) preparation and the cells
    again = Runner(load_suite(_suite(tmp_path)), cache)
    assert again.run_unit(Unit(0, "saliency")) == runner.run_unit(Unit(0, "saliency"))
