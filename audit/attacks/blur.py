"""Benign Gaussian blur of the input (METHODS §5), through torchvision's ``gaussian_blur``.

The blur runs on the pixel-space image (reflect padding at the borders, torchvision's choice),
with standard deviation ``sigma`` in pixels and a kernel of 2·⌈3σ⌉ + 1 taps, so the result stays
in [0, 1]. No randomness.

Evasion / detection: not an attack on the model — it asks whether a map survives a change a
user would call harmless (an explanation that moves a lot under a mild blur is fragile). A blur
is visible as the loss of high frequencies.

Source: standard image corruption (Hendrycks & Dietterich 2019, "defocus/gaussian blur").
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class BlurParams(Params):
    sigma: float = Field(1.0, ge=0.0, description="Gaussian standard deviation in pixels (0: no blur)")


@ATTACKS.register("blur")
class Blur(Attack):
    """Benign Gaussian blur: sigma in pixels, kernel 2*ceil(3 sigma)+1, reflect borders (torchvision)."""

    Params = BlurParams
    kind = "input"

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        from torchvision.transforms.functional import gaussian_blur

        sigma = self.params.sigma
        if sigma == 0 or x.shape[0] == 0:
            return x.detach().clone()
        size = 2 * math.ceil(3 * sigma) + 1
        pixels = ctx.spec.denormalize(x.detach())
        blurred = gaussian_blur(pixels, kernel_size=[size, size], sigma=[sigma, sigma])
        return ctx.spec.normalize(blurred.clamp(0.0, 1.0))
