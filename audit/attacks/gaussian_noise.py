"""Benign Gaussian noise on the input (METHODS §5), in pixel space, clipped to [0, 1]."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class GaussianNoiseParams(Params):
    sigma: float = Field(0.05, ge=0.0, description="noise standard deviation, pixel scale [0, 1]")


@ATTACKS.register("gaussian_noise")
class GaussianNoise(Attack):
    """Benign input noise: x + N(0, sigma^2) per pixel in pixel space, clipped to [0, 1]."""

    Params = GaussianNoiseParams
    kind = "input"

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        pixels = ctx.spec.denormalize(x.detach())
        noise = torch.stack([
            torch.randn(pixels.shape[1:], generator=ctx.sample_generator(i, "noise")).to(pixels)
            for i in range(pixels.shape[0])
        ]) if pixels.shape[0] else torch.zeros_like(pixels)
        return ctx.spec.normalize((pixels + self.params.sigma * noise).clamp(0.0, 1.0))
