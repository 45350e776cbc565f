"""Localisation against the data's ground-truth object masks (METHODS §6): pointing game and
relevance mass. Both judge the attacked setting's map; the engine skips them when the data has
no masks. An image whose mask is empty is ``skipped`` (nothing to point at)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics._perturb import random_scores, sample_ids_of
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
    used 15 px at 224 px). A degenerate map points nowhere: a miss (value 0, status
    ``degenerate``), METHODS §0.

    Ties (METHODS-style note): when several pixels share the maximum value (a saturated or
    clipped map), the map points at *one* of them, drawn at random from the plateau with a seed
    from the cell and the sample id (label ``pointing-game-ties``). Counting a hit when any
    plateau pixel touches the object would let a map that is maximal nearly everywhere "hit"
    every object; taking the first in raster order would let the object's position decide. The
    draw keeps each image's value 0/1 (so exact binomial intervals apply) and its expectation is
    the fraction of the plateau inside the hit region. Ties are exact equality with the maximum.
    """

    higher_is_better = True
    compares = "map_truth"
    binary = True  # per-image hit / success: Clopper–Pearson interval in the summary

    class Params(Params):
        tolerance: float = Field(15 / 224, ge=0.0, le=1.0,
                                 description="hit radius as a fraction of the image side")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        maps, truth = inputs.map_attacked, inputs.truth.to(inputs.map_attacked.device).bool()
        radius = self.params.tolerance * max(maps.shape[-2:])
        flat = maps.flatten(1)
        at_max = flat == flat.amax(dim=1, keepdim=True)
        key = random_scores(flat.shape[1], inputs.seed, sample_ids_of(inputs.sample_ids, flat.shape[0]),
                            "pointing-game-ties", maps.device)
        pointed = torch.where(at_max, key, torch.full_like(key, -1.0)).argmax(dim=1, keepdim=True)
        hit = dilate(truth, radius).flatten(1).gather(1, pointed).squeeze(1)
        degenerate = is_degenerate(maps)
        values = (hit & ~degenerate).to(torch.float64)
        return _with_empty_masks_skipped(MetricResult.from_values(values, degenerate), truth)


@METRICS.register("relevance_mass")
class RelevanceMass(Metric):
    """Relevance mass: the map's positive relevance inside the object mask / all positive relevance.

    Negative values are ignored (they argue against the class). A map with no positive relevance
    has nothing to place: value 0, status ``degenerate``. A constant positive map spreads its
    mass evenly, so it scores the mask's area fraction, also with status ``degenerate``.

    Read it against the object's area share: a map that puts the same relevance everywhere (or
    a positive offset plus noise) scores the area share (≈ 0.10 on ``builtin:shapes``), which is
    no localisation at all. ``relevance_mass_ratio`` reports the two side by side as one number.
    """

    higher_is_better = True
    compares = "map_truth"

    def compute(self, inputs: MetricInputs) -> MetricResult:
        values, degenerate, truth = _relevance_mass(inputs)
        return _with_empty_masks_skipped(MetricResult.from_values(values, degenerate), truth)


@METRICS.register("relevance_mass_ratio")
class RelevanceMassRatio(Metric):
    """Relevance mass divided by the object's area share: how many times more positive relevance
    per pixel the object gets than the image's average pixel.

    1 is what an uninformative map (uniform relevance, or an offset plus noise) scores; values
    above 1 concentrate relevance on the object, up to 1/area share when all of it lies inside.
    Same statuses as ``relevance_mass`` (empty mask: ``skipped``; no positive relevance: value 0,
    ``degenerate``; a constant positive map: 1, ``degenerate``).
    """

    higher_is_better = True
    compares = "map_truth"

    def compute(self, inputs: MetricInputs) -> MetricResult:
        values, degenerate, truth = _relevance_mass(inputs)
        share = truth.flatten(1).to(torch.float64).mean(dim=1)
        values = values / torch.where(share > 0, share, torch.ones_like(share))
        return _with_empty_masks_skipped(MetricResult.from_values(values, degenerate), truth)


def _relevance_mass(inputs: MetricInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) relevance mass, (B,) degenerate flags and the (B, H, W) bool masks."""
    maps = inputs.map_attacked.to(torch.float64)
    truth = inputs.truth.to(maps.device).bool()
    positive = maps.clamp(min=0).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * truth.flatten(1)).sum(dim=1)
    none_positive = ~torch.isfinite(total) | (total <= 0)  # no (finite) positive relevance
    values = torch.where(none_positive, torch.zeros_like(total),
                         inside / torch.where(none_positive, torch.ones_like(total), total))
    return values, none_positive | is_degenerate(inputs.map_attacked), truth
