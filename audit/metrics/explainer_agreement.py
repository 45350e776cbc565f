"""``explainer_agreement``: do two explainers of the same setting rank the image's regions alike?

For each image, the Spearman rank correlation between the cell's map and the map of the
``reference`` explainer (another explainer id of the suite, a black-box one: occlusion, RISE) of the
**same** setting — the same model and the same images, no original model involved. Both maps
are average-pooled to a ``resolution`` × ``resolution`` grid first (adaptive average pooling,
so any input size gives the same grid), the scale both a layer-resolution map (Grad-CAM's 8 × 8
on the reference model) and an 8 × 8 occlusion map resolve; ``resolution: null`` ranks pixels.
``abs: true`` ranks |maps| (signed explainers such as IG or LRP against an unsigned reference).

``correlation: pearson`` correlates the pooled values themselves: a map whose few largest cells
moved (Heo's top-k fooling) changes little in rank over 64 cells but much in value, so Pearson
tells it apart where ranks cannot (measured on the embedded benchmark, n = 32, Grad-CAM vs RISE at
8 × 8: reference 0.74 [0.70, 0.77], top-k-fooled 0.38 [0.32, 0.45]; Spearman 0.51 [0.46, 0.55] vs
0.42 [0.36, 0.47], which overlap).

Why (METHODS §4, a check without the original model): a manipulated model (Heo et al. 2019)
is fine-tuned so that one gradient explainer's map points somewhere else, while its
predictions — and therefore what occluding the image does to them, which is all a black-box
explainer reads — stay. The fooled map then disagrees with the black-box map of the very same
model; on an honest model the two rank the object's regions alike. Value in [-1, 1], higher is
better. A constant map on either side has no ranking: value 0, counted ``degenerate`` (METHODS
§0) — e.g. RISE on a model that answers masked queries with zeros (the gating attack), which is
the gating check's to name.

How it can be evaded: a manipulation that also fools the reference (a model whose answers on
occluded images are themselves manipulated — the gating check's subject); a fooled map that
keeps the coarse ranking and moves only detail finer than ``resolution``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.metrics.spearman import spearman
from audit.registry import Params


class ExplainerAgreementParams(Params):
    reference: str = Field("rise", description="id of the suite's explainer whose map of the same setting "
                                               "the cell's map is compared with")
    resolution: int | None = Field(8, ge=1, description="both maps average-pooled to this grid before "
                                                        "ranking; null: pixels")
    abs: bool = Field(False, description="compare |maps| (a signed explainer against an unsigned reference)")
    correlation: Literal["spearman", "pearson"] = Field(
        "spearman", description="rank correlation (Spearman), or Pearson's on the pooled values")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of two (B, ...) tensors in float64; 0 where either row is constant."""
    a = a.flatten(1).to(torch.float64)
    b = b.flatten(1).to(torch.float64)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    denom = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(denom > 0, (a * b).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.zeros_like(denom))


def pooled(maps: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """(B, r, r) adaptive average pool of (B, H, W) maps (the maps themselves for None)."""
    if resolution is None:
        return maps
    return F.adaptive_avg_pool2d(maps.to(torch.float64).unsqueeze(1), resolution)[:, 0]


@METRICS.register("explainer_agreement")
class ExplainerAgreement(Metric):
    """Correlation (Spearman or Pearson) of the cell's map with another explainer's map of the same setting."""

    Params = ExplainerAgreementParams
    higher_is_better = True
    compares = "map_model"

    def reference_explainer(self) -> str | None:
        return self.params.reference

    def compute(self, inputs: MetricInputs) -> MetricResult:
        if inputs.map_reference is None:
            raise RuntimeError(f"explainer_agreement needs the map of its reference {self.params.reference!r}")
        mine = pooled(inputs.map_attacked, self.params.resolution)
        other = pooled(inputs.map_reference.to(inputs.map_attacked.device), self.params.resolution)
        if self.params.abs:
            mine, other = mine.abs(), other.abs()
        degenerate = is_degenerate(mine) | is_degenerate(other)
        values = (spearman if self.params.correlation == "spearman" else pearson)(mine, other)
        values = torch.where(degenerate.to(values.device), torch.zeros_like(values), values)
        return MetricResult.from_values(values, degenerate, "degenerate map (this explainer's or the reference's)")
