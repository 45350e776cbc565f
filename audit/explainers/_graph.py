"""Model-structure helpers shared by the gradient explainers (not a plugin module).

- :func:`find_target_layer`: Grad-CAM's layer, by dotted name or found automatically.
- :func:`functional_twin`: run a hook-friendly copy of a model with the *original* parameters,
  so a differentiable map keeps its graph to the user's weights (issue F puts maps inside a loss)
  while hooks and in-place changes only ever touch the copy.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.func import functional_call

from audit.explainers.base import without_inplace

# Modules that act elementwise (or per channel) on a conv's output: Grad-CAM's layer extends over
# them, so a plain Sequential(conv, bn, relu, ...) is explained at the activation, as in the paper.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Tanh, nn.Sigmoid,
                nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d)


def _convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def find_target_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """Grad-CAM's target layer: ``name`` (dotted, as in ``named_modules``) or the last conv block.

    Automatic choice: descend from the root into the child that holds the last ``Conv2d``
    while that child holds *every* conv of its parent (a wrapper such as ``model.backbone``); stop
    at the first child that holds only some of them — for torchvision ResNets ``layer4``, for
    the reference model ``layer3``. If that child is a bare conv, extend it over the
    elementwise modules that follow it (BN, activation).
    """
    if name:
        modules = dict(model.named_modules())
        if name not in modules:
            raise ValueError(f"target layer {name!r} is not a module of the model; some names: "
                             f"{', '.join(list(modules)[1:12])}")
        return name, modules[name]
    last = _convs(model)
    if not last:
        raise ValueError("the model has no Conv2d layer; give Grad-CAM a target layer by name")
    last_conv = last[-1]
    prefix, current = "", model
    while True:
        children = list(current.named_children())
        total = len(_convs(current))
        index = next(i for i, (_, child) in enumerate(children)
                     if any(m is last_conv for m in child.modules()))
        child_name, child = children[index]
        full = f"{prefix}{child_name}"
        if len(_convs(child)) == total and list(child.children()):
            prefix, current = f"{full}.", child
            continue
        if isinstance(child, nn.Conv2d):
            while index + 1 < len(children) and isinstance(children[index + 1][1], _ELEMENTWISE):
                index += 1
            child_name, child = children[index]
            full = f"{prefix}{child_name}"
        return full, child


_TWINS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def functional_twin(model: nn.Module) -> nn.Module:
    """A cached copy of ``model`` with in-place activations turned off, for hooks to live on.

    Call it through :func:`twin_forward` so it computes with ``model``'s own tensors. The copy's
    modes (train/eval) follow ``model``'s at every call.
    """
    twin = _TWINS.get(model)
    if twin is None:
        twin = without_inplace(model)
        _TWINS[model] = twin
    for mine, theirs in zip(twin.modules(), model.modules(), strict=True):
        mine.training = theirs.training
    return twin


def twin_forward(model: nn.Module, twin: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``twin(x)`` computed with ``model``'s parameters and buffers (gradients reach ``model``)."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    return functional_call(twin, tensors, (x,), tie_weights=True, strict=False)
