"""Seed 003's iterative targeted attack: ascend the target logit one grey level per step.

Each step adds ∇ₚ f_t / max|∇ₚ f_t| · ``grey_level`` to the image in pixel space (the largest
change of any pixel is one grey level, 1/255), clips to [0, 1], and stops for an image as soon
as the model predicts the target class t, or after ``max_steps`` (the budget). So the L∞ size of
the change is at most ``max_steps`` grey levels, and usually much less. The target class is an
index, ``least_likely`` (on the clean logits) or ``next`` (class + 1 mod K).

Evasion / detection: as for PGD; the scaled (not signed) gradient concentrates the change on
few pixels, which a median filter or a check of the prediction under small noise often undoes.
The seed's demo also lets the user paint over the image; that is not modelled here.

Source: seed 003 (IML 2021 project report, Liu, Zadrozny, Abemonty: "noise that is a scaled
value of the gradient of the confidence score for the target label", iterated on demand);
Kurakin et al. 2017 for the iterative targeted family.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.attacks._pixels import TargetChoice, choose_targets, pixel_gradient
from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class IterativeTargetedParams(Params):
    target_class: TargetChoice = Field("next", description="class index, least_likely or next")
    max_steps: int = Field(32, ge=1, description="budget: steps before giving up on an image")
    grey_level: float = Field(1 / 255, gt=0.0, le=1.0, description="largest pixel change per step (pixel units)")


@ATTACKS.register("iterative_targeted")
class IterativeTargeted(Attack):
    """Seed 003: x += ∇f_t / max|∇f_t| (one grey level per step) until the label is t or the budget ends."""

    Params = IterativeTargetedParams
    kind = "input"
    needs_gradients = True
    black_box = False

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        spec, p = ctx.spec, self.params
        x0 = x.detach()
        if x0.shape[0] == 0:
            return x0.clone()
        with torch.no_grad():
            goal = choose_targets(model(x0), target.to(x0.device), p.target_class)
        pixels = spec.denormalize(x0).clone()
        for _ in range(p.max_steps):
            with torch.enable_grad():  # also when the caller runs under no_grad
                adv = spec.normalize(pixels).requires_grad_(True)
                logits = model(adv)
                active = logits.argmax(dim=1) != goal  # images that reached t stop where they are
                if not bool(active.any()):
                    break
                (grad,) = torch.autograd.grad(logits.gather(1, goal.view(-1, 1)).sum(), adv)
            g = pixel_gradient(spec, grad)
            scale = g.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(g.dtype).tiny).view(-1, 1, 1, 1)
            step = p.grey_level * g / scale * active.view(-1, 1, 1, 1).to(g.dtype)
            pixels = (pixels + step).clamp(0.0, 1.0).detach()
        return spec.normalize(pixels).detach()
