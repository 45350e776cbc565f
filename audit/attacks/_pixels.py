"""Shared pieces of the input attacks (not a plugin module): pixel-space bounds, seeded draws,
target classes and the softplus copy of a model.

Every input attack works on the model's normalised tensors but bounds and clips in *pixel*
space ([0, 1] per channel; ``eps`` and step sizes in pixel units, e.g. 8/255 ≈ 0.0314),
converting through the suite's mean/std (METHODS §5). Random draws are per image from CPU
generators (the same numbers on every device and in every batch).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from audit.attacks.base import AttackContext
from audit.spec import InputSpec

TargetChoice = int | Literal["least_likely", "next"]


def uniform_start(ctx: AttackContext, shape: torch.Size, eps: float, *identity: object) -> torch.Tensor:
    """(B, C, H, W) pixel-space offsets uniform in [-eps, eps], drawn per image on the CPU."""
    if shape[0] == 0:
        return torch.zeros(shape)
    return torch.stack([(2 * torch.rand(shape[1:], generator=ctx.sample_generator(i, *identity)) - 1) * eps
                        for i in range(shape[0])])


def project(spec: InputSpec, x: torch.Tensor, x0: torch.Tensor, eps: float | None) -> torch.Tensor:
    """``x`` (normalised) projected onto the pixel-space L∞ ball of radius ``eps`` around ``x0``
    (None: no ball) and clipped to the valid pixel range [0, 1]; returned normalised."""
    pixels, origin = spec.denormalize(x), spec.denormalize(x0)
    if eps is not None:
        pixels = origin + (pixels - origin).clamp(-eps, eps)
    return spec.normalize(pixels.clamp(0.0, 1.0))


def pixel_gradient(spec: InputSpec, grad: torch.Tensor) -> torch.Tensor:
    """A gradient w.r.t. the normalised input converted to one w.r.t. pixels (chain rule: /std)."""
    std = torch.tensor(spec.std, dtype=grad.dtype, device=grad.device).view(1, -1, 1, 1)
    return grad / std


def choose_targets(logits: torch.Tensor, reference: torch.Tensor, choice: TargetChoice) -> torch.Tensor:
    """Target classes (B,) of a targeted attack: a fixed class index, the clean logits' least
    likely class, or ``next`` = (reference class + 1) mod classes.

    Raises ValueError for a class index the model does not have."""
    classes = logits.shape[1]
    if isinstance(choice, int):
        if not 0 <= choice < classes:
            raise ValueError(f"target_class {choice} is outside the model's {classes} classes")
        return torch.full_like(reference, choice)
    if choice == "least_likely":
        return logits.argmin(dim=1)
    return (reference + 1) % classes


class SmoothReLU(nn.Module):
    """softplus_β(x) = log(1 + exp(βx)) / β, with β a buffer (it reaches functional copies of
    the model through their buffers, so annealing β changes every copy at once)."""

    def __init__(self, beta: float):
        super().__init__()
        self.register_buffer("beta", torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.to(x.dtype)
        return F.softplus(beta * x) / beta


class SoftplusCopy:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by :class:`SmoothReLU` (METHODS §2).

    ReLU's second derivative is zero, so the gradient of a gradient map w.r.t. the input vanishes
    on the ReLU net; the softplus copy (→ ReLU as β grows) gives the attack its direction,
    while maps and labels are judged on the real model. Raises ValueError when the model has no
    ``nn.ReLU`` module to replace (functional ReLUs cannot be reached).
    """

    def __init__(self, model: nn.Module, beta: float):
        self.model = copy.deepcopy(model).eval()
        self.smooth: list[SmoothReLU] = []
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.ReLU):
                    smooth = SmoothReLU(beta)
                    setattr(parent, name, smooth)
                    self.smooth.append(smooth)
        for module in self.model.modules():
            if hasattr(module, "inplace") and isinstance(module.inplace, bool):
                module.inplace = False
        for p in self.model.parameters():
            p.requires_grad_(False)
        if not self.smooth:
            raise ValueError("the model has no nn.ReLU module to replace by softplus, so the map's "
                             "gradient w.r.t. the input cannot be smoothed; use a model with ReLU "
                             "modules (not functional relu calls)")
        ref = next(iter(model.parameters()), None)
        if ref is not None:
            self.model.to(ref.device)

    def set_beta(self, beta: float) -> None:
        for module in self.smooth:
            module.beta.fill_(float(beta))


def annealed_beta(step: int, steps: int, start: float, end: float) -> float:
    """Geometric schedule start → end over ``steps`` steps (Dombrowski et al. 2019: β grows)."""
    if steps <= 1:
        return end
    return float(start * (end / start) ** (step / (steps - 1)))
