"""Benign brightness change of the input (METHODS §5), through torchvision's ``adjust_brightness``.

Pixels are multiplied by ``factor`` in pixel space and clipped to [0, 1] (torchvision's
definition: 0 gives black, 1 the original, 1.2 twenty per cent brighter). No randomness.
Unlike ``constant_shift``, the model is not compensated: the prediction may change, and that is
part of what the cells show.

Evasion / detection: not an attack on the model; an exposure change every camera makes. A map
that moves a lot under it is fragile.

Source: Hendrycks & Dietterich 2019 ("brightness" corruption); torchvision.transforms.functional.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class BrightnessParams(Params):
    factor: float = Field(1.2, ge=0.0, description="multiplier on pixel values (1: unchanged)")


@ATTACKS.register("brightness")
class Brightness(Attack):
    """Benign brightness: pixels * factor, clipped to [0, 1] (torchvision adjust_brightness)."""

    Params = BrightnessParams
    kind = "input"

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        from torchvision.transforms.functional import adjust_brightness

        if x.shape[0] == 0:
            return x.detach().clone()
        pixels = ctx.spec.denormalize(x.detach()).clamp(0.0, 1.0)
        return ctx.spec.normalize(adjust_brightness(pixels, self.params.factor))
