"""Fooling success rate of adversarial model manipulation (Heo et al. 2019, METHODS §4).

Per image the test loss t of the chosen fooling type is computed from the clean map (original
model w₀) and the attacked map (manipulated model w*); the value is 1 if t lies in the success
interval R, else 0, so the summary mean is the FSR and its bootstrap interval comes for free.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from audit.maps import is_degenerate, minmax_normalize
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.metrics.similarity import com_displacement, resolve_k, topk_mask
from audit.metrics.spearman import spearman
from audit.registry import Params

# Success intervals R per fooling type, paper §4.2 (METHODS §4).
DEFAULT_INTERVALS: dict[str, tuple[float, float]] = {
    "location": (0.0, 0.2), "topk": (0.0, 0.3), "center_mass": (0.1, 1.0), "active": (0.5, 1.0)}


def frame_mask(h: int, w: int, device=None) -> torch.Tensor:
    """(H, W) float: 1 on a border frame of width max(1, ⌊side/7⌋) per axis, 0 inside."""
    top, side = max(1, h // 7), max(1, w // 7)
    m = torch.ones(h, w, dtype=torch.float64, device=device)
    m[top:h - top, side:w - side] = 0.0
    return m


def location_loss(attacked: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared distance of the normalised map from the border frame."""
    h = minmax_normalize(attacked.to(torch.float64))
    return ((h - frame_mask(*h.shape[-2:], device=h.device)) ** 2).flatten(1).mean(dim=1)


def topk_loss(clean: torch.Tensor, attacked: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B,) mean squared normalised attacked saliency on the clean map's top ``fraction`` pixels."""
    k = resolve_k(fraction, clean[0].numel())
    chosen = topk_mask(clean, k).to(torch.float64)
    h = minmax_normalize(attacked.to(torch.float64)).flatten(1)
    return (h * h * chosen).sum(dim=1) / k


@METRICS.register("fsr")
class FSR(Metric):
    """Fooling success rate: 1 per image whose fooling test loss lies in the success interval.

    ``fooling``: ``location`` (t = mean (h − frame)², R = [0, 0.2]), ``topk`` (t = mean of h²
    over the clean map's top 10 %, R = [0, 0.3]), ``center_mass`` (normalised centre-of-mass
    displacement, R = [0.1, 1]) or ``active`` (t = Spearman(h_c₁(w*), h_c₂(w₀)), R = [0.5, 1]:
    c₁ is the target, c₂ the original model's most probable other class on the clean image, so
    on two-class images — ``builtin:shapes-pairs`` — c₂ is the other class present). Maps are
    min–max normalised, optionally average-pooled to ``resolution``² first (the paper's losses
    live at the target layer, e.g. 8×8 for the reference ResNet). Degenerate maps (status
    ``degenerate``): a flat attacked map normalises to 0 (location: t = frame area share; top-k:
    t = 0, i.e. fooled — the top-k mass is gone); a flat map's centre of mass is the image
    centre; Spearman with a flat map is 0. Higher means the manipulation succeeded, so lower is
    better for the explainer.
    """

    higher_is_better = False
    compares = "maps"

    class Params(Params):
        fooling: Literal["location", "topk", "center_mass", "active"] = "location"
        interval: tuple[float, float] | None = Field(None, description="success interval R; "
                                                     "default per fooling type (METHODS §4)")
        resolution: int | None = Field(None, ge=2, description="pool maps to this side first")
        topk_fraction: float = Field(0.1, gt=0, lt=1)

        @model_validator(mode="after")
        def _ordered(self):
            if self.interval is not None and self.interval[0] > self.interval[1]:
                raise ValueError("interval must be (low, high) with low <= high")
            return self

    def needs_swap_map(self) -> bool:
        return self.params.fooling == "active"

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:
        if self.params.resolution is None:
            return maps
        side = self.params.resolution
        return F.adaptive_avg_pool2d(maps.to(torch.float64).unsqueeze(1), (side, side)).squeeze(1)

    def test_loss(self, inputs: MetricInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) test losses t and (B,) degenerate flags."""
        kind = self.params.fooling
        attacked = self._pool(inputs.map_attacked)
        if kind == "location":
            return location_loss(attacked), is_degenerate(attacked)
        other = inputs.map_swap if kind == "active" else inputs.map
        other = self._pool(other.to(attacked.device))
        degenerate = is_degenerate(attacked) | is_degenerate(other)
        if kind == "topk":
            return topk_loss(other, attacked, self.params.topk_fraction), degenerate
        if kind == "center_mass":
            return com_displacement(other, attacked), degenerate
        rho = spearman(attacked, other)  # already 0 where either map is constant
        return torch.where(degenerate, torch.zeros_like(rho), rho), degenerate

    def compute(self, inputs: MetricInputs) -> MetricResult:
        if self.params.fooling == "active" and inputs.map_swap is None:
            return MetricResult.skipped(inputs.batch_size, "fsr active needs the swapped class's "
                                        "clean map (MetricInputs.map_swap), which this run lacks")
        low, high = self.params.interval or DEFAULT_INTERVALS[self.params.fooling]
        loss, degenerate = self.test_loss(inputs)
        values = ((loss >= low) & (loss <= high)).to(torch.float64)
        return MetricResult.from_values(values, degenerate)
