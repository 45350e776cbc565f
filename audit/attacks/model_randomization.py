"""Model-parameter randomisation (Adebayo et al. 2018): the sanity check explainers must fail.

The top ``layers`` parameterised layers (Conv2d and Linear; BatchNorm too with ``include_norm``)
are re-initialised, top-down from the output in forward order, on a copy of the model. A map
that still looks the same afterwards does not depend on what the model learned (METHODS §6).
Re-initialisation uses each layer's own ``reset_parameters`` (PyTorch's default init) under a
seed derived from the attack's seed and the layer's name, so a run is reproducible and the
global RNG is left as it was.

A model whose layers are not ``torch.nn`` classes (a ``torch.export`` program restored with
``torch.export.unflatten``, whose submodules run graphs) is handled by what the layers hold: a
module with its own ``weight`` parameter of two or more dimensions is a parameterised layer
(one-dimensional too with ``include_norm``), re-initialised as PyTorch's Conv/Linear
``reset_parameters`` does (Kaiming-uniform with a = √5, bias U(±1/√fan_in)); a norm layer's
weight and bias become 1 and 0, its running statistics 0 and 1. A model with no parameterised
layer at all is refused (the attack would change nothing, and every map would "not move").
"""

from __future__ import annotations

import copy
import math

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

    def _parameterised(self, module: nn.Module) -> bool:
        kinds = _LAYERS + (_NORMS if self.params.include_norm else ())
        if isinstance(module, kinds):
            return any(True for _ in module.parameters(recurse=False))
        if isinstance(module, _LAYERS + _NORMS) or type(module).__module__.startswith("torch.nn.modules"):
            return False  # a torch.nn layer of a kind not chosen
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        return weight is not None and (weight.dim() >= 2 or (self.params.include_norm and weight.dim() == 1))

    def chosen_layers(self, model: nn.Module, ctx: AttackContext) -> list[str]:
        modules = dict(model.named_modules())
        candidates = [n for n, m in modules.items() if self._parameterised(m)]
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
        chosen = self.chosen_layers(clone, ctx)
        if not chosen:
            raise ValueError("the model has no parameterised layer (a Conv/Linear weight) to re-initialise; "
                             "the randomisation check cannot be made on it")
        for name in chosen:
            module = modules[name]
            cuda = sorted({p.device.index or 0 for p in module.parameters() if p.is_cuda})
            # fork_rng restores the global generators afterwards: the attack leaves no trace
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(derive_seed(ctx.seed, "model_randomization", name))
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
                else:
                    reset_by_tensors(module)
        original = dict(model.named_modules())
        if all(torch.equal(a, b) for name in chosen
               for a, b in zip(modules[name].parameters(), original[name].parameters(), strict=True)):
            # a model whose top layers already hold this seed's draw (one this very attack made
            # and someone exported): re-drawing them changes nothing, and every map would look
            # "unmoved" for the explainer's fault when the weights never changed
            raise ValueError(f"re-initialising {', '.join(chosen)} left every weight unchanged: they already hold "
                             "this seed's draw (a model randomised by this check?); the randomisation check "
                             "cannot be made with this seed: use another suite seed (check --seed)")
        return clone


def reset_by_tensors(module: nn.Module) -> None:
    """PyTorch's default init of a layer that is not a ``torch.nn`` class, from its tensors: a
    weight of 2+ dimensions as Conv/Linear (Kaiming-uniform, a = √5; bias U(±1/√fan_in)), a 1-D
    weight as a norm layer (weight 1, bias 0, running mean 0 and variance 1)."""
    own = dict(module.named_parameters(recurse=False))
    weight, bias = own["weight"], own.get("bias")
    with torch.no_grad():
        if weight.dim() >= 2:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if bias is not None:
                fan_in = math.prod(weight.shape[1:])
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(bias, -bound, bound)
            return
        nn.init.ones_(weight)
        if bias is not None:
            nn.init.zeros_(bias)
        buffers = dict(module.named_buffers(recurse=False))
        if "running_mean" in buffers:
            buffers["running_mean"].zero_()
        if "running_var" in buffers:
            buffers["running_var"].fill_(1.0)
