"""Spearman rank correlation between the clean map and the attacked setting's map."""

from __future__ import annotations

import torch
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.registry import Params


class RankParams(Params):
    abs: bool = Field(False, description="rank |maps| instead of the signed maps (the randomisation "
                                         "check, METHODS §6: a sign flip is not a change of what the "
                                         "map attributes)")


def maps_to_rank(inputs: MetricInputs, absolute: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean and attacked maps as ranked: raw, or their absolute values with ``absolute``."""
    clean, attacked = inputs.map, inputs.map_attacked
    return (clean.abs(), attacked.abs()) if absolute else (clean, attacked)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along dim 1 with ties given their average rank (scipy's ``rankdata``)."""
    b, n = values.shape
    ordered, order = values.sort(dim=1)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64, device=values.device).expand(b, n)
    sums = torch.zeros(b, n, dtype=torch.float64, device=values.device).scatter_add_(1, group, position)
    counts = torch.zeros(b, n, dtype=torch.float64, device=values.device).scatter_add_(
        1, group, torch.ones_like(position))
    mean_rank = sums.gather(1, group) / counts.gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman correlation of two (B, ...) tensors; 0 where either row is constant."""
    ra = average_ranks(a.flatten(1).to(torch.float64))
    rb = average_ranks(b.flatten(1).to(torch.float64))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denom = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, (ra * rb).sum(1) / safe, torch.zeros_like(denom))


@METRICS.register("spearman")
class Spearman(Metric):
    """Spearman rank correlation of the clean and attacked maps (1 = same ranking), in [-1, 1].

    ``abs: true`` ranks |maps|: Adebayo et al.'s randomisation check (METHODS §6) asks whether
    the map's *magnitudes* still sit where they did; on signed maps (IG, LRP) a randomised model
    that flips signs reads as anti-correlated and passes a Spearman bound it should fail.
    """

    Params = RankParams
    higher_is_better = True
    compares = "maps"

    def compute(self, inputs: MetricInputs) -> MetricResult:
        clean, attacked = maps_to_rank(inputs, self.params.abs)
        # METHODS §0: a rank similarity with a degenerate map is 0 and the image is counted.
        degenerate = is_degenerate(clean) | is_degenerate(attacked)
        values = spearman(clean, attacked)
        values = torch.where(degenerate.to(values.device), torch.zeros_like(values), values)
        return MetricResult.from_values(values, degenerate)
