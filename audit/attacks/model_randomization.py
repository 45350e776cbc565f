"""Model-parameter randomisation (Adebayo et al. 2018): the sanity check explainers must fail.

The top ``layers`` parameterised layers (Conv2d and Linear; BatchNorm too with ``include_norm``)
are re-initialised, top-down from the output in forward order, on a copy of the model. A map
that still looks the same afterwards does not depend on what the model learned (METHODS §6).
Re-initialisation uses each layer's own ``reset_parameters`` (PyTorch's default init) under a
seed derived from the attack's seed and the layer's name, so a run is reproducible and the
global RNG is left as it was.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params
from audit.seeding import derive_seed

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


class ModelRandomizationParams(Params):
    layers: int = Field(1, ge=1, description="how many parameterised layers to re-initialise, from the top")
    include_norm: bool = Field(False, description="count normalisation layers as parameterised layers")


def forward_order(model: nn.Module, spec, device: torch.device) -> list[str]:
    """Names of the leaf modules in the order one forward pass calls them (first call counts)."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not list(module.children()):
            handles.append(module.register_forward_pre_hook(
                lambda _m, _i, name=name: order.append(name) if name not in order else None))
    try:
        channels = len(spec.mean)
        with torch.no_grad():
            model(torch.zeros(1, channels, spec.size, spec.size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return order


@ATTACKS.register("model_randomization")
class ModelRandomization(Attack):
    """Adebayo sanity check: re-initialise the top `layers` parameterised layers (copy of the model)."""

    Params = ModelRandomizationParams
    kind = "model"

    def chosen_layers(self, model: nn.Module, ctx: AttackContext) -> list[str]:
        kinds = _LAYERS + (_NORMS if self.params.include_norm else ())
        modules = dict(model.named_modules())
        candidates = [n for n, m in modules.items() if isinstance(m, kinds)
                      and any(True for _ in m.parameters(recurse=False))]
        try:
            order = forward_order(model, ctx.spec, ctx.device)
        except Exception:  # models with unusual inputs: registration order approximates it
            order = list(modules)
        called = [n for n in order if n in candidates]
        ordered = called + [n for n in candidates if n not in called]
        return list(reversed(ordered))[: self.params.layers]

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        clone = copy.deepcopy(model)
        modules = dict(clone.named_modules())
        for name in self.chosen_layers(clone, ctx):
            module = modules[name]
            cuda = sorted({p.device.index or 0 for p in module.parameters() if p.is_cuda})
            # fork_rng restores the global generators afterwards: the attack leaves no trace
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(derive_seed(ctx.seed, "model_randomization", name))
                module.reset_parameters()
        return clone
