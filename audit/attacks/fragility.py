"""Fragility of interpretation (Ghorbani, Abid, Zou, AAAI 2019): keep the label, move the map.

Signed steps in the pixel-space L∞ ball (METHODS §5):
x ← x₀ + clip(x − α·sign ∇ₓ L(x) − x₀, ±ε), clipped to [0, 1], ``steps`` times, with

- ``mode: topk`` — L = the map's share of mass on the clean map's top-k pixels (k as in the
  ``topk_intersection`` metric: a fraction < 1 or a count), to be minimised;
- ``mode: center_mass`` — L = −‖C(h(x)) − C(h(x₀))‖², C the centre of mass of |h| (pixels).

∇ₓ L flows through the explainer's ``differentiable_map`` on a softplus copy of the model (β
annealed ``beta_start`` → ``beta_end``); each iterate is then judged on the real model: the
result is, per image, the iterate with the best real-map criterion (lowest top-k intersection,
largest centre-of-mass shift) among those whose predicted label is the clean one. The clean
image is iterate 0, so the label is kept by construction (up to float ties). No randomness.

Evasion / detection: the attack relies on the map's curvature; SmoothGrad-style averaging and
maps of smoother models (softplus, adversarially trained) are harder to move. A detector can
re-explain under small noise: a map that jumps back is suspect.

Source: Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019,
Algorithm 1 (iterative feature-importance attack); Dombrowski et al. 2019 for the softplus copy.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from audit.attacks._map_attack import MapAttackParams, mean_one, predict, real_maps
from audit.attacks._pixels import SoftplusCopy, annealed_beta, project
from audit.attacks.base import ATTACKS, Attack, AttackContext


class FragilityParams(MapAttackParams):
    mode: Literal["topk", "center_mass"] = Field("topk", description="Ghorbani's top-k or centre-of-mass attack")
    k: float = Field(0.1, gt=0, description="top-k: fraction of pixels (< 1) or pixel count (>= 1)")
    step_size: float = Field(0.5 / 255, gt=0.0, description="α per step in pixel units (Ghorbani: 0.5/255)")


def _topk(maps: torch.Tensor, k: float) -> torch.Tensor:
    """(B, N) bool of each map's k largest pixels (ties by index, like topk_intersection)."""
    from audit.metrics.similarity import resolve_k, topk_mask

    return topk_mask(maps, resolve_k(k, maps[0].numel()))


def _center(maps: torch.Tensor) -> torch.Tensor:
    """(B, 2) centre of mass (row, col) of |maps| in pixels (differentiable)."""
    b, h, w = maps.shape
    mass = maps.abs()
    total = mass.sum(dim=(1, 2)).clamp_min(1e-12)
    rows = torch.arange(h, dtype=maps.dtype, device=maps.device).view(1, h, 1)
    cols = torch.arange(w, dtype=maps.dtype, device=maps.device).view(1, 1, w)
    return torch.stack([(mass * rows).sum(dim=(1, 2)) / total, (mass * cols).sum(dim=(1, 2)) / total], dim=1)


@ATTACKS.register("fragility")
class Fragility(Attack):
    """Ghorbani fragility: signed steps in the ε-ball that move the map (topk | center_mass), label kept."""

    Params = FragilityParams
    kind = "input"
    needs_gradients = True
    black_box = False

    def _losses(self, maps: torch.Tensor, top: torch.Tensor, center0: torch.Tensor) -> torch.Tensor:
        """(B,) per-image loss to minimise."""
        if self.params.mode == "topk":
            share = mean_one(maps).flatten(1)
            return (share * top.to(share.dtype)).sum(dim=1) / share.shape[1]
        return -((_center(maps) - center0) ** 2).sum(dim=1)

    def _criterion(self, maps: torch.Tensor, top: torch.Tensor, center0: torch.Tensor) -> torch.Tensor:
        """(B,) the real-map score of an iterate, lower is better (what the audit will measure)."""
        if self.params.mode == "topk":
            return (_topk(maps, self.params.k) & top).sum(dim=1).to(torch.float64)
        return -((_center(maps.to(torch.float64)) - center0.to(torch.float64)) ** 2).sum(dim=1)

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        p, spec = self.params, ctx.spec
        x0 = x.detach()
        if x0.shape[0] == 0:
            return x0.clone()
        explainer = ctx.explainer(p.explainer, p.explainer_params)
        target = target.to(x0.device)
        smooth = SoftplusCopy(model, p.beta_start)
        label = predict(model, x0)
        clean = real_maps(explainer, model, x0, target)
        top, center0 = _topk(clean, p.k), _center(clean)
        best, best_score = x0.clone(), self._criterion(clean, top, center0)
        std = torch.tensor(spec.std, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1)
        adv = x0.clone()
        for step in range(p.steps):
            smooth.set_beta(annealed_beta(step, p.steps, p.beta_start, p.beta_end))
            adv = adv.detach().requires_grad_(True)
            with torch.enable_grad():
                maps = explainer.differentiable_map(smooth.model, adv, target, create_graph=True)
                (grad,) = torch.autograd.grad(self._losses(maps, top, center0).sum(), adv)
            adv = project(spec, adv.detach() - p.step_size * grad.sign() / std, x0, p.eps)
            score = self._criterion(real_maps(explainer, model, adv, target), top, center0)
            better = (predict(model, adv) == label) & (score < best_score)
            best = torch.where(better.view(-1, 1, 1, 1), adv, best)
            best_score = torch.where(better, score, best_score)
        return best.detach()
