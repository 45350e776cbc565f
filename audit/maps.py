"""Small facts about saliency maps shared by explainers and metrics (METHODS §0)."""

from __future__ import annotations

import torch

# A map whose value range is below this fraction of its magnitude carries no ranking.
DEGENERATE_RTOL = 1e-12


def value_range(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = maps.flatten(1)
    return flat.amin(dim=1), flat.amax(dim=1)


def is_degenerate(maps: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where a (B, H, W) map is constant (or not finite) and so has no ranking."""
    low, high = value_range(maps.detach())
    scale = torch.maximum(low.abs(), high.abs())
    finite = torch.isfinite(maps.detach().flatten(1)).all(dim=1)
    return ~finite | (scale == 0) | ((high - low) <= DEGENERATE_RTOL * scale)


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a degenerate map becomes all zeros (never NaN)."""
    low, high = value_range(maps)
    span = (high - low).view(-1, *([1] * (maps.dim() - 1)))
    out = (maps - low.view_as(span)) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(is_degenerate(maps).view_as(span), torch.zeros_like(out), out)
