"""Localisation against the data's ground-truth object masks (METHODS §6): pointing game and
relevance mass. Both judge the attacked setting's map; the engine skips them when the data has
no masks. An image whose mask is empty is ``skipped`` (nothing to point at)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.registry import Params


def dilate(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """(B, H, W) bool masks grown by every pixel within Euclidean ``radius`` pixels."""
    r = int(math.floor(radius))
    if r <= 0:
        return masks.clone()
    offsets = torch.arange(-r, r + 1, device=masks.device, dtype=torch.float32)
    disk = ((offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) <= radius ** 2 + 1e-9).float()
    grown = F.conv2d(masks.float().unsqueeze(1), disk.view(1, 1, *disk.shape), padding=r)
    return grown.squeeze(1) > 0.5


def _with_empty_masks_skipped(result: MetricResult, truth: torch.Tensor) -> MetricResult:
    empty = (~truth.flatten(1).any(dim=1)).cpu().tolist()
    for i, is_empty in enumerate(empty):
        if is_empty:
            result.values[i] = float("nan")
            result.status[i], result.reasons[i] = "skipped", "the ground-truth mask is empty"
    return result


@METRICS.register("pointing_game")
class PointingGame(Metric):
    """Pointing game: 1 if the map's maximum lies on the object (within a tolerance), else 0.

    The hit region is the object mask dilated by ``tolerance`` × the image side (Zhang et al.
    used 15 px at 224 px). Every pixel sharing the maximum value counts (so ties do not depend on
    scan order; this matches Quantus). A degenerate map points nowhere: a miss (value 0, status
    ``degenerate``), METHODS §0.
    """

    higher_is_better = True
    compares = "map_truth"

    class Params(Params):
        tolerance: float = Field(15 / 224, ge=0.0, le=1.0,
                                 description="hit radius as a fraction of the image side")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        maps, truth = inputs.map_attacked, inputs.truth.to(inputs.map_attacked.device).bool()
        radius = self.params.tolerance * max(maps.shape[-2:])
        flat = maps.flatten(1)
        at_max = flat == flat.amax(dim=1, keepdim=True)
        hit = (at_max & dilate(truth, radius).flatten(1)).any(dim=1)
        degenerate = is_degenerate(maps)
        values = (hit & ~degenerate).to(torch.float64)
        return _with_empty_masks_skipped(MetricResult.from_values(values, degenerate), truth)


@METRICS.register("relevance_mass")
class RelevanceMass(Metric):
    """Relevance mass: the map's positive relevance inside the object mask / all positive relevance.

    Negative values are ignored (they argue against the class). A map with no positive relevance
    has nothing to place: value 0, status ``degenerate``. A constant positive map spreads its
    mass evenly, so it scores the mask's area fraction, also with status ``degenerate``.
    """

    higher_is_better = True
    compares = "map_truth"

    def compute(self, inputs: MetricInputs) -> MetricResult:
        maps = inputs.map_attacked.to(torch.float64)
        truth = inputs.truth.to(maps.device).bool()
        positive = maps.clamp(min=0).flatten(1)
        total = positive.sum(dim=1)
        inside = (positive * truth.flatten(1)).sum(dim=1)
        none_positive = ~torch.isfinite(total) | (total <= 0)  # no (finite) positive relevance
        values = torch.where(none_positive, torch.zeros_like(total),
                             inside / torch.where(none_positive, torch.ones_like(total), total))
        degenerate = none_positive | is_degenerate(inputs.map_attacked)
        return _with_empty_masks_skipped(MetricResult.from_values(values, degenerate), truth)
