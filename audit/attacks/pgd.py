"""Projected gradient descent in the L∞ ball (Madry et al. 2018; METHODS §5, seed 003).

x' = Π_ε(x' ± α · sign ∇ₓ CE(f(x'), y)), ``steps`` times from a uniform random start in the
ball; untargeted ascends the cross-entropy of the class explained (``target``), targeted
descends it toward ``target_class`` (an index, ``least_likely`` on the clean logits, or ``next``
= class + 1 mod K). ``eps`` and ``step_size`` are pixel units (8/255 ≈ 0.0314); the ball and
the [0, 1] clip are in pixel space. The last iterate is returned (no early stop: the attack
keeps the margin it won). The start is drawn per image from a CPU generator.

Evasion / detection: adversarial training (Madry) raises the ε a PGD attack needs; gradient
masking (non-differentiable preprocessing, e.g. JPEG) only hides the gradient — a transfer or
BPDA attack still succeeds. Detectors look at the high-frequency residual or at how unstable the
prediction is under small noise. Here the cells show the success rate (1 − agreement) and how
far each explainer's map moved with the label — Grad-CAM typically follows the new class.

Sources: Goodfellow et al. 2015 (FGSM); Madry et al. 2018 (PGD); Kurakin et al. 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from audit.attacks._pixels import TargetChoice, choose_targets, project, uniform_start
from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class PGDParams(Params):
    eps: float = Field(8 / 255, ge=0.0, le=1.0, description="L∞ radius in pixel units [0, 1]")
    steps: int = Field(10, ge=1, description="gradient steps")
    step_size: float = Field(2 / 255, gt=0.0, description="α per step in pixel units")
    random_start: bool = Field(True, description="start uniformly inside the ball (Madry et al.)")
    targeted: bool = Field(False, description="descend toward target_class instead of away from the label")
    target_class: TargetChoice = Field("next", description="targeted only: class index, least_likely or next")


def sign_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: AttackContext, *, eps: float,
                steps: int, step_size: float, random_start: bool, targeted: bool,
                target_class: TargetChoice, name: str) -> torch.Tensor:
    """Iterated signed-gradient steps on the cross-entropy, projected to the pixel ε-ball."""
    spec = ctx.spec
    x0 = x.detach()
    if x0.shape[0] == 0:
        return x0.clone()
    goal = target.to(x0.device)
    if targeted:
        with torch.no_grad():
            goal = choose_targets(model(x0), goal, target_class)
    adv = x0.clone()
    if random_start and eps > 0:
        start = uniform_start(ctx, x0.shape, eps, name, "start").to(device=x0.device, dtype=x0.dtype)
        adv = spec.normalize(spec.denormalize(x0) + start)
        adv = project(spec, adv, x0, eps)
    std = torch.tensor(spec.std, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1)
    direction = -1.0 if targeted else 1.0
    for _ in range(steps):
        with torch.enable_grad():  # also when the caller runs under no_grad
            adv = adv.detach().requires_grad_(True)
            # sum (not mean): each image's gradient is its own, whatever the batch holds
            loss = F.cross_entropy(model(adv), goal, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        # the pixel gradient is grad / std (std > 0), so its sign is grad's; a step of α pixels
        # is α / std in normalised units
        adv = project(spec, adv.detach() + direction * step_size * grad.sign() / std, x0, eps)
    return adv.detach()


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD L∞ (Madry et al.): random start, `steps` signed steps of `step_size`, ε-ball in pixels."""

    Params = PGDParams
    kind = "input"
    needs_gradients = True
    black_box = False

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        p = self.params
        return sign_attack(model, x, target, ctx, eps=p.eps, steps=p.steps, step_size=p.step_size,
                           random_start=p.random_start, targeted=p.targeted, target_class=p.target_class,
                           name="pgd")
