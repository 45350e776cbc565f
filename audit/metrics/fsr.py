"""Fooling success rate of adversarial model manipulation (Heo et al. 2019, METHODS §4).

Per image the test loss t of the chosen fooling type is computed from the clean map (original
model w₀) and the attacked map (manipulated model w*); the value is 1 if t lies in the success
interval R, else 0, so the summary mean is the FSR and its interval comes for free.

METHODS-style notes (calibration: "fooled" must mean the attack did something):

- The same test on the clean map. Under the identity attack the attacked map *is* the clean map,
  so an image whose clean map already gives a t inside R would count as fooled with nothing
  attacked. Each image's t is therefore also computed with the clean map in the attacked map's
  place; where that t already lies in R the image is ``skipped`` with the value in the reason
  (it cannot show fooling), so FSR under ``none`` is 0 or skipped by construction, for every
  fooling type, explainer and interval.
- Top-k is measured against the clean map's own top-k energy: t = Σ_P h² / Σ_P h₀², P the clean
  map's top ``topk_fraction`` pixels, h (h₀) the min–max normalised attacked (clean) map; the
  paper's t is the numerator's mean over P. The paper computes it on the target layer's coarse
  grid (e.g. 7×7), where the top 10 % sit next to the maximum and h₀² ≈ 1 there, so the two
  agree; spiky full-resolution maps (SimpleGrad, SmoothGrad, LRP) put their own top decile far
  below their maximum (mean h₀² ≈ 0.1), which made the unattacked map "fooled" (FSR 1.0 for
  SimpleGrad under ``none``). With the ratio t = 1 for the unattacked map, and t ≤ 0.3 still means
  "the attacked map kept at most 30 % of the saliency the clean map had on its top pixels".
  Pixels tied at the top-k cut are chosen in a seeded random order (label ``topk-ties``).
- Active fooling swaps two classes present in one image (the paper's 2×2 mosaics); on data with
  one object per image (``builtin:shapes``) the second class c₂ is merely the runner-up and its
  map highlights the same object, so every image is ``skipped`` with that reason when the engine
  reports single-object data (``MetricInputs.two_classes_per_image`` False). Use
  ``builtin:shapes-pairs``.
- Degenerate maps (status ``degenerate``): a flat attacked map normalises to 0 (location: t =
  frame area share; top-k: t = 0, fooled — the top-k saliency is gone); a flat map's centre of
  mass is the image centre; Spearman with a flat map is 0. A flat *clean* map has no top-k to
  move: top-k ``skipped``.
- Non-finite maps never reach the metric in a run (the engine marks them ``error``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from audit.maps import is_degenerate, minmax_normalize
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.metrics.similarity import com_displacement, resolve_k, topk_mask, topk_tie_key
from audit.metrics.spearman import spearman
from audit.registry import Params

# Success intervals R per fooling type, paper §4.2 (METHODS §4).
DEFAULT_INTERVALS: dict[str, tuple[float, float]] = {
    "location": (0.0, 0.2), "topk": (0.0, 0.3), "center_mass": (0.1, 1.0), "active": (0.5, 1.0)}

SINGLE_OBJECT_REASON = ("fsr active swaps two classes present in one image (Heo et al.'s mosaics); "
                        "this data holds one object per image, so the swapped class means nothing; "
                        "use data with two classes per image (builtin:shapes-pairs)")


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


def topk_loss(clean: torch.Tensor, attacked: torch.Tensor, fraction: float,
              tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) the paper's top-k test loss: mean of the normalised attacked map's h² over the clean
    map's top ``fraction`` pixels (ties at the cut by ``tie_key``)."""
    k = resolve_k(fraction, clean[0].numel())
    chosen = topk_mask(clean, k, tie_key).to(torch.float64)
    h = minmax_normalize(attacked.to(torch.float64)).flatten(1)
    return (h * h * chosen).sum(dim=1) / k


def relative_topk_loss(clean: torch.Tensor, attacked: torch.Tensor, fraction: float,
                       tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) :func:`topk_loss` of the attacked map / that of the clean map (1 when unchanged);
    NaN where the clean map is degenerate (it has no top-k)."""
    own = topk_loss(clean, clean, fraction, tie_key)
    ratio = topk_loss(clean, attacked, fraction, tie_key) / torch.where(own > 0, own, torch.ones_like(own))
    return torch.where(own > 0, ratio, torch.full_like(ratio, float("nan")))


@METRICS.register("fsr")
class FSR(Metric):
    """Fooling success rate: 1 per image whose fooling test loss lies in the success interval.

    ``fooling``: ``location`` (t = mean (h − frame)², R = [0, 0.2]), ``topk`` (t = Σ h² / Σ h₀²
    over the clean map's top 10 %, R = [0, 0.3]), ``center_mass`` (normalised centre-of-mass
    displacement, R = [0.1, 1]) or ``active`` (t = Spearman(h_c₁(w*), h_c₂(w₀)), R = [0.5, 1]:
    c₁ is the target, c₂ the original model's most probable other class on the clean image, so
    on two-class images — ``builtin:shapes-pairs`` — c₂ is the other class present; skipped on
    single-object data). Maps are min–max normalised, optionally average-pooled to
    ``resolution``² first (the paper's losses live at the target layer, e.g. 8×8 for the
    reference ResNet). An image whose *clean* map already passes the test is ``skipped`` with
    the reason. See the module docstring for the calibration and degenerate maps. Higher means
    the manipulation succeeded, so lower is better for the explainer.
    """

    higher_is_better = False
    compares = "maps"
    binary = True  # per-image hit / success: Clopper–Pearson interval in the summary

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

    def _loss(self, inputs: MetricInputs, attacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) test losses t of ``attacked`` (already pooled) and (B,) degenerate flags."""
        kind = self.params.fooling
        if kind == "location":
            return location_loss(attacked), is_degenerate(attacked)
        other = inputs.map_swap if kind == "active" else inputs.map
        other = self._pool(other.to(attacked.device))
        if kind == "topk":
            key = topk_tie_key(inputs, other[0].numel())
            return relative_topk_loss(other, attacked, self.params.topk_fraction, key), is_degenerate(attacked)
        degenerate = is_degenerate(attacked) | is_degenerate(other)
        if kind == "center_mass":
            return com_displacement(other, attacked), degenerate
        rho = spearman(attacked, other)  # already 0 where either map is constant
        return torch.where(degenerate, torch.zeros_like(rho), rho), degenerate

    def test_loss(self, inputs: MetricInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) test losses t and (B,) degenerate flags."""
        return self._loss(inputs, self._pool(inputs.map_attacked))

    def compute(self, inputs: MetricInputs) -> MetricResult:
        n = inputs.batch_size
        kind = self.params.fooling
        if kind == "active" and inputs.two_classes_per_image is False:
            return MetricResult.skipped(n, SINGLE_OBJECT_REASON)
        if kind == "active" and inputs.map_swap is None:
            return MetricResult.skipped(n, "fsr active needs the swapped class's clean map "
                                        "(MetricInputs.map_swap), which this run lacks")
        low, high = self.params.interval or DEFAULT_INTERVALS[kind]
        loss, degenerate = self.test_loss(inputs)
        # the same test with the clean map in the attacked map's place (the "none" attack)
        clean_loss, _ = self._loss(inputs, self._pool(inputs.map.to(loss.device)))
        values = ((loss >= low) & (loss <= high)).to(torch.float64)
        result = MetricResult.from_values(values, degenerate)
        for i, t in enumerate(clean_loss.cpu().tolist()):
            if t != t:  # NaN: top-k of a flat clean map
                reason = "the clean map is flat: it has no top-k pixels an attack could move"
            elif low <= t <= high:
                reason = (f"the clean map already passes the {kind} fooling test (t = {t:.3g} in "
                          f"[{low:g}, {high:g}]): this image cannot show fooling")
            else:
                continue
            result.values[i] = float("nan")
            result.status[i], result.reasons[i] = "skipped", reason
        return result
