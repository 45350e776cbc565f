"""Maps with NaN/inf are an explainer error, not a degenerate map (issue O, item 3)."""

import math

import torch
from torch import nn

from audit.engine.cache import Cache
from audit.engine.plan import plan_cells
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.base import METRICS
from audit.report.summary import summarize
from audit.spec import InputSpec

SUITE = """\
name: nonfinite
seed: 0
device: cpu
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 4, batch_size: 4}
explainers: [saliency]
attacks: [none, {gaussian_noise: {sigma: 0.05}}]
metrics: [spearman, {deletion: {steps: 8}}, pointing_game, relevance_mass, {fsr: {fooling: topk}}, accuracy]
"""


class SobelMagnitude(nn.Module):
    """A Sobel edge-magnitude front end sqrt(gx² + gy²): finite forward, NaN input gradient
    wherever the image is flat (d√u/du = ∞ times du/dx = 0)."""

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        self.register_buffer("k", torch.stack([kx, kx.T]).unsqueeze(1))

    def forward(self, x):
        g = nn.functional.conv2d(x.mean(1, keepdim=True), self.k, padding=1)
        edges = torch.sqrt((g**2).sum(1))
        return torch.stack([edges.mean(dim=(1, 2)), -edges.mean(dim=(1, 2))], dim=1)


def test_a_sobel_front_end_really_gives_nan_saliency_on_flat_areas():
    spec = InputSpec(size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0  # a square: edges around it, flat elsewhere
    maps = EXPLAINERS.create("saliency")(SobelMagnitude().eval(), x, torch.zeros(2, dtype=torch.long),
                                         ExplainContext(spec, 0, (0, 1)))
    assert torch.isnan(maps).float().mean() > 0.3  # the failure the engine has to catch


def test_nonfinite_maps_make_error_records_with_the_count_and_stay_out_of_means(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    run = Runner(load_suite(path), Cache(None))
    explain = run.explainers["saliency"]
    n_pixels = 64 * 64

    calls = []

    def poisoned(model, x, target, ctx):
        maps = explain(model, x, target, ctx).clone()
        maps[1, :10, :] = float("nan")  # 640 pixels
        calls.append(1)
        if len(calls) > 1:  # the clean map comes first; then gaussian_noise's attacked map
            maps[2, 0, :3] = float("inf")
        return maps

    run.explainers["saliency"] = poisoned
    records = [r for unit in run.units() for r in run.run_unit(unit)]
    by = {(r["attack"], r["explainer"], r["metric"], r["sample"]): r for r in records}
    clean_reason = f"explainer 'saliency' returned NaN/inf in 640 of {n_pixels} pixels"
    for metric in ("spearman", "deletion", "pointing_game", "relevance_mass", "fsr"):
        for attack in ("none", "gaussian_noise"):
            r = by[(attack, "saliency", metric, 1)]
            assert r["status"] == "error" and r["value"] is None
            assert r["reason"].startswith(clean_reason), r["reason"]
            assert by[(attack, "saliency", metric, 0)]["status"] in ("ok", "degenerate", "skipped")
            assert by[(attack, "saliency", metric, 3)]["status"] in ("ok", "degenerate", "skipped")
        noisy = by[("gaussian_noise", "saliency", metric, 2)]  # inf in the attacked map only
        assert noisy["status"] == "error"
        assert noisy["reason"] == f"explainer 'saliency' returned NaN/inf in 3 of {n_pixels} pixels (attacked map)"
        assert by[("none", "saliency", metric, 2)]["status"] != "error"
    assert len(calls) == 2
    # the model-level metric reads no map
    assert all(r["status"] == "ok" for r in records if r["metric"] == "accuracy")

    rows = summarize(records, plan_cells(run.suite),
                     {m.id: METRICS.get(m.plugin).higher_is_better for m in run.suite.metrics}, 0)
    spearman = next(r for r in rows if (r["attack"], r["explainer"], r["metric"]) ==
                    ("gaussian_noise", "saliency", "spearman"))
    assert spearman["errors"] == 2 and spearman["status"] == "error" and spearman["n"] == 2
    finite = [by[("gaussian_noise", "saliency", "spearman", s)]["value"] for s in (0, 3)]
    assert math.isclose(spearman["mean"], sum(finite) / 2)
