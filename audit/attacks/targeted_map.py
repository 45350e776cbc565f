"""Targeted map manipulation (Dombrowski et al., NeurIPS 2019): push the map toward a target map
while the output stays the same.

Adam on the pixel image minimises (METHODS §5)

    L(x) = mean_p (ĥ(x)_p − ĥ_t,p)² + γ · mean_k (f(x)_k − f(x₀)_k)²

with ĥ the map scaled to mean 1 (|h| / mean |h|, so the loss does not depend on the explainer's
units) and f the logits; after every step the image is projected onto the pixel-space L∞ ball
of radius ``eps`` around x₀ and clipped to [0, 1]. ∇ₓ L flows through the explainer's
``differentiable_map`` on a softplus copy of the model, β annealed ``beta_start`` → ``beta_end``
(geometric). Each iterate is judged on the real model; per image the result is the iterate with
the smallest real-map loss whose predicted label is the clean one (iterate 0 is the clean image).

The target map h_t (``target_map``):

- ``other_image`` (default, the paper's setting): the map of *another* image — a training
  image drawn per audited image from the attack's seed and that image's id (so a batch gives the
  same as its images alone), explained for the class the model predicts on it. This is why the
  attack declares ``needs_training_data``: it learns nothing, and exports an empty state;
- ``shifted``: the image's own clean map rolled by half the image in both directions (the
  evidence moved to where nothing is).

Evasion / detection: smoother models (softplus, weight decay, curvature regularisation) and
averaged maps (SmoothGrad) resist; Dombrowski et al. show β-smoothing as a defence. Re-explaining
under small noise reveals a manipulated map.

Source: Dombrowski, Alber, Anders, Ackermann, Müller, Kessel, "Explanations can be manipulated
and geometry is to blame", NeurIPS 2019, eq. (3) and §4 (β annealing).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from audit.attacks._map_attack import MapAttackParams, mean_one, predict, real_maps
from audit.attacks._pixels import SoftplusCopy, annealed_beta, project
from audit.attacks.base import ATTACKS, Attack, AttackContext


class TargetedMapParams(MapAttackParams):
    target_map: Literal["other_image", "shifted"] = Field(
        "other_image", description="another (training) image's map, or the clean map rolled by half the image")
    gamma: float = Field(1.0, ge=0.0, description="weight of the output term (logits' mean squared change)")
    lr: float = Field(1 / 255, gt=0.0, description="Adam learning rate in pixel units")


def _map_loss(maps: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    return ((mean_one(maps) - goal) ** 2).flatten(1).mean(dim=1)


@ATTACKS.register("targeted_map")
class TargetedMap(Attack):
    """Dombrowski targeted manipulation: Adam in the ε-ball toward a target map, output kept."""

    Params = TargetedMapParams
    kind = "input"
    needs_gradients = True
    black_box = False
    needs_training_data = True  # the other images' maps (see the module docstring)

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor]:
        return {}  # nothing learned: the model is the original

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        return model

    def target_maps(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                    ctx: AttackContext) -> torch.Tensor:
        """(B, H, W) target maps h_t (raw explainer units) for the images ``x``."""
        p = self.params
        explainer = ctx.explainer(p.explainer, p.explainer_params)
        if p.target_map == "shifted":
            clean = real_maps(explainer, model, x, target.to(x.device))
            return torch.roll(clean, shifts=(x.shape[-2] // 2, x.shape[-1] // 2), dims=(-2, -1))
        ids = ctx.sample_ids or tuple(range(x.shape[0]))
        maps = []
        for sample in ids[: x.shape[0]]:
            other = ctx.train_batch(1, "targeted_map", int(sample))
            image = ctx.spec.normalize(other.images.to(device=x.device, dtype=x.dtype))
            if tuple(image.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(f"training images are {tuple(image.shape[1:])}, audited ones "
                                 f"{tuple(x.shape[1:])}; use target_map: shifted")
            maps.append(real_maps(explainer, model, image, predict(model, image)))
        return torch.cat(maps) if maps else x.new_zeros((0, *x.shape[-2:]))

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        p, spec = self.params, ctx.spec
        x0 = x.detach()
        if x0.shape[0] == 0:
            return x0.clone()
        explainer = ctx.explainer(p.explainer, p.explainer_params)
        target = target.to(x0.device)
        goal = mean_one(self.target_maps(model, x0, target, ctx))
        smooth = SoftplusCopy(model, p.beta_start)
        label = predict(model, x0)
        with torch.no_grad():
            logits0 = model(x0)
        best = x0.clone()
        best_score = _map_loss(real_maps(explainer, model, x0, target), goal)
        # the optimised variable is the pixel-space image: lr and ε are in the same units
        pixels0 = spec.denormalize(x0)
        pixels = pixels0.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([pixels], lr=p.lr)
        for step in range(p.steps):
            smooth.set_beta(annealed_beta(step, p.steps, p.beta_start, p.beta_end))
            optimiser.zero_grad(set_to_none=True)
            with torch.enable_grad():
                adv = spec.normalize(pixels)
                maps = explainer.differentiable_map(smooth.model, adv, target, create_graph=True)
                output = ((smooth.model(adv) - logits0) ** 2).mean(dim=1)
                # summed over images: each image's gradient is its own (Adam is per element)
                (_map_loss(maps, goal) + p.gamma * output).sum().backward()
            optimiser.step()
            with torch.no_grad():
                pixels.copy_(pixels0 + (pixels - pixels0).clamp(-p.eps, p.eps)).clamp_(0.0, 1.0)
            adv = project(spec, spec.normalize(pixels.detach()), x0, p.eps)
            score = _map_loss(real_maps(explainer, model, adv, target), goal)
            better = (predict(model, adv) == label) & (score < best_score)
            best = torch.where(better.view(-1, 1, 1, 1), adv, best)
            best_score = torch.where(better, score, best_score)
        return best.detach()
