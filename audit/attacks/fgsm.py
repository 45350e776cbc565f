"""Fast gradient sign method (Goodfellow et al. 2015; METHODS §5).

x' = clip(x + ε · sign ∇ₓ CE(f(x), y)) in pixel space (ε in pixel units, 8/255 ≈ 0.0314);
targeted: x' = clip(x − ε · sign ∇ₓ CE(f(x), t)). One step, no randomness.

Evasion / detection: one linearised step is weak against adversarially trained models and
against gradient masking; it is detected like PGD (high-frequency residual, instability under
noise). It is the cheap first column: PGD (``pgd``) is the strong one.

Source: Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.attacks._pixels import TargetChoice
from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.attacks.pgd import sign_attack
from audit.registry import Params


class FGSMParams(Params):
    eps: float = Field(8 / 255, ge=0.0, le=1.0, description="step (= L∞ radius) in pixel units [0, 1]")
    targeted: bool = Field(False, description="step toward target_class instead of away from the label")
    target_class: TargetChoice = Field("next", description="targeted only: class index, least_likely or next")


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015): one signed gradient step of ε pixels on the cross-entropy."""

    Params = FGSMParams
    kind = "input"
    needs_gradients = True
    black_box = False

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        p = self.params
        if p.eps == 0:
            return x.detach().clone()
        return sign_attack(model, x, target, ctx, eps=p.eps, steps=1, step_size=p.eps, random_start=False,
                           targeted=p.targeted, target_class=p.target_class, name="fgsm")
