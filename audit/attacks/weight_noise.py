"""Gaussian noise on a model's weights (Heo et al. 2019 §5, Fig. 4b — seed 004).

Heo et al.'s robustness check of adversarial model manipulation: add small Gaussian noise to
the *fooled* model's parameters and see whether the fooling (FSR) and the accuracy survive.
``of`` names the attack of the same suite whose prepared model gets the noise — e.g. a
``manipulation`` — so the noisy row is the very fooled model of that row plus noise, never a
second fine-tuning (the engine prepares ``of`` first, see
:meth:`audit.attacks.base.Attack.builds_on`); without ``of`` the noise lands on the original
model, the check's baseline.

Every floating-point parameter tensor w gets N(0, (σ·std(w))²) (std over the tensor; a
one-element tensor uses |w|), *choose*: Heo et al. report only a "noise level". Buffers
(BatchNorm running statistics) are left alone. The draw derives from the suite seed and this
attack's id, in the sorted order of parameter names.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class WeightNoiseParams(Params):
    sigma: float = Field(0.05, gt=0.0, description="σ of the noise on each parameter tensor, relative "
                                                   "to that tensor's std")
    of: str | None = Field(None, description="id of the suite's attack whose prepared model gets the "
                                             "noise (e.g. a manipulation); default the original model")


def add_weight_noise(model: nn.Module, sigma: float, gen: torch.Generator) -> None:
    """Add N(0, (σ·std(w))²) in place to every floating-point parameter w of ``model``."""
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if not param.is_floating_point():
                continue
            scale = param.std() if param.numel() > 1 else param.abs().reshape(())
            noise = torch.randn(param.shape, generator=gen, dtype=param.dtype).to(param.device)
            param.add_(sigma * scale * noise)


@ATTACKS.register("weight_noise")
class WeightNoise(Attack):
    """Gaussian noise (σ relative to each tensor's std) on the weights of the original model or of
    another attack's model (``of``): Heo et al.'s check that noise does not undo a manipulation."""

    Params = WeightNoiseParams
    kind = "model"

    def builds_on(self) -> str | None:
        return self.params.of

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        noisy = copy.deepcopy(model)
        add_weight_noise(noisy, self.params.sigma, ctx.generator("weight_noise"))
        return noisy.requires_grad_(False).eval()
