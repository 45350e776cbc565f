"""Map-vs-map similarity beyond Spearman: top-k intersection and centre-of-mass shift."""

from __future__ import annotations

import torch
from pydantic import Field

from audit.maps import is_degenerate, minmax_normalize
from audit.metrics._perturb import descending_rank, random_scores, sample_ids_of
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.metrics.spearman import RankParams, maps_to_rank


def resolve_k(k: float, n_pixels: int) -> int:
    """``k`` < 1 is a fraction of the pixels (at least one), ``k`` ≥ 1 a pixel count (≤ all)."""
    count = round(k * n_pixels) if k < 1 else int(k)
    return max(1, min(n_pixels, count))


def topk_mask(maps: torch.Tensor, k: int, tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) bool: the k highest entries of each flattened map.

    Ties at the k-th value are broken by ``tie_key`` (B, N), a seeded random key (see
    :mod:`audit.metrics._perturb`); without one, by pixel index.
    """
    return descending_rank(maps.flatten(1).to(torch.float64), tie_key) < k


def topk_tie_key(inputs: MetricInputs, n_pixels: int) -> torch.Tensor:
    """(B, N) seeded random key for top-k ties (label ``topk-ties``, the cell seed, the sample id):
    one key for both maps of an image, so a map compared with itself keeps its k pixels."""
    sids = sample_ids_of(inputs.sample_ids, inputs.batch_size)
    return random_scores(n_pixels, inputs.seed, sids, "topk-ties", inputs.map_attacked.device)


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """(B, 2) (row, col) centre of mass of min–max normalised maps, in pixels.

    A degenerate map has no shape of its own; it is treated as uniform, so its centre is the
    image centre (never a division by zero).
    """
    b, h, w = maps.shape
    weights = minmax_normalize(maps.to(torch.float64))
    flat_uniform = is_degenerate(maps).view(b, 1, 1)
    weights = torch.where(flat_uniform, torch.ones_like(weights), weights)
    total = weights.sum(dim=(1, 2))
    rows = torch.arange(h, dtype=torch.float64, device=maps.device).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float64, device=maps.device).view(1, 1, w)
    return torch.stack([(weights * rows).sum(dim=(1, 2)) / total,
                        (weights * cols).sum(dim=(1, 2)) / total], dim=1)


def com_displacement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """METHODS §4 normalised centre-of-mass displacement √((Δrow² + Δcol²)/2)/(l − 1), in [0, 1].

    ``l − 1`` is the largest possible offset along a side; for non-square maps each axis is
    divided by its own side so both contribute on the same scale.
    """
    h, w = a.shape[-2:]
    delta = center_of_mass(a) - center_of_mass(b)
    scale = torch.tensor([max(h - 1, 1), max(w - 1, 1)], dtype=torch.float64, device=a.device)
    return torch.sqrt(((delta / scale) ** 2).sum(dim=1) / 2)


@METRICS.register("topk_intersection")
class TopKIntersection(Metric):
    """Top-k intersection |topk(clean) ∩ topk(attacked)| / k (1 = same most salient pixels).

    Raw maps are compared (ranking only), or |maps| with ``abs: true`` (see ``spearman``). Pixels
    tied at the k-th value are chosen in a seeded random order (:func:`topk_tie_key`, the same for
    both maps), not by pixel index, so a plateau straddling the cut (e.g. the zeros of a ReLU-cut
    map) does not favour the top rows. Rank
    similarity with a degenerate map is 0 and the image is counted ``degenerate`` (METHODS §0).
    """

    higher_is_better = True
    compares = "maps"

    class Params(RankParams):
        k: float = Field(0.1, gt=0, description="k < 1: fraction of pixels; k >= 1: pixel count")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        clean, attacked = maps_to_rank(inputs, self.params.abs)
        k = resolve_k(self.params.k, clean[0].numel())
        key = topk_tie_key(inputs, clean[0].numel())
        shared = (topk_mask(clean, k, key) & topk_mask(attacked, k, key)).sum(dim=1).to(torch.float64) / k
        degenerate = is_degenerate(clean) | is_degenerate(attacked)
        values = torch.where(degenerate.to(shared.device), torch.zeros_like(shared), shared)
        return MetricResult.from_values(values, degenerate)


@METRICS.register("com_shift")
class ComShift(Metric):
    """Centre-of-mass shift between the clean and attacked map, normalised to [0, 1] (METHODS §4).

    Maps are min–max normalised first. A degenerate map counts as uniform (centre of mass at
    the image centre), so the value is how far the other map's mass sits from the centre; the
    image is counted ``degenerate``.
    """

    higher_is_better = False
    compares = "maps"

    def compute(self, inputs: MetricInputs) -> MetricResult:
        values = com_displacement(inputs.map, inputs.map_attacked)
        degenerate = is_degenerate(inputs.map) | is_degenerate(inputs.map_attacked)
        return MetricResult.from_values(values, degenerate)
