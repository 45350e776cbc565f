"""Model-structure helpers shared by the gradient explainers (not a plugin module).

- :func:`target_layer`: Grad-CAM's layer, by dotted name or chosen from a traced forward pass.
- :func:`functional_twin`: run a hook-friendly copy of a model with the *original* parameters,
  so a differentiable map keeps its graph to the user's weights (issue F puts maps inside a loss)
  while hooks and in-place changes only ever touch the copy.
- :func:`script_modules`: the TorchScript parts of a model (hooks never run inside them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from audit.explainers.base import eval_mode, without_inplace


def script_modules(model: nn.Module) -> list[str]:
    """Dotted names of the TorchScript modules in ``model`` (``''`` for the model itself).

    Forward hooks and in-place flags cannot be set on them, so hook-based explainers (Grad-CAM,
    LRP) refuse such a model; plain gradients flow through TorchScript unchanged.
    """
    return [name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]


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


# -- Grad-CAM's layer ------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerChoice:
    """Grad-CAM's target layer: its dotted name, its output (C, h, w) at the traced input size,
    and whether it was chosen automatically (else named by the user)."""

    name: str
    output: tuple[int, ...]
    automatic: bool

    def describe(self) -> str:
        how = "automatic" if self.automatic else "given"
        return f"`{self.name}` ({how}; output (B, {', '.join(map(str, self.output))}))"


@dataclass
class _Call:
    name: str
    order: int  # position in the order forwards *returned* (a container after its children)
    output: torch.Tensor | None  # None: not a tensor


def _shape(t: torch.Tensor) -> str:
    return "(B, " + ", ".join(str(s) for s in t.shape[1:]) + ")"


def is_spatial(out: torch.Tensor, size: tuple[int, int]) -> bool:
    """``out`` is a (B, C, h, w) feature map over the input's grid, h, w > 1.

    The grid test (h <= H, w <= W, h/w = H/W up to one cell of rounding) tells a channels-first
    map from a channels-last (B, h, w, C) tensor such as Swin's, which is also 4-D.
    """
    if out.dim() != 4:
        return False
    h, w = int(out.shape[2]), int(out.shape[3])
    big_h, big_w = size
    return h > 1 and w > 1 and h <= big_h and w <= big_w and abs(h * big_w - w * big_h) <= max(big_h, big_w)


def _has_positions(out: torch.Tensor, size: tuple[int, int]) -> bool:
    """A non-spatial tensor that still holds per-position features: tokens (B, N, D) with N, D > 1
    or a 4-D tensor in another layout (B, h, w, C); a pooled (B, C, 1, 1) does not."""
    if out.dim() == 3:
        return out.shape[1] > 1 and out.shape[2] > 1
    if out.dim() == 4 and not is_spatial(out, size):
        return not (out.shape[2] == 1 and out.shape[3] == 1)
    return False


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[list[_Call], dict[str, int], list[bool]]:
    """One eval-mode forward of ``example[:1]`` through the model's hook-friendly twin: every module
    call in the order it returned, calls per module name, and for each call whether the logits
    depend on its output (an autograd path exists)."""
    twin = functional_twin(model)
    calls: list[_Call] = []
    counts: dict[str, int] = {}

    def record(name: str):
        def hook(_module, _inputs, out):
            counts[name] = counts.get(name, 0) + 1
            calls.append(_Call(name, len(calls), out if isinstance(out, torch.Tensor) else None))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in twin.named_modules() if n]
    try:
        with eval_mode(twin), torch.enable_grad():
            x = example[:1].detach().clone().requires_grad_(True)
            logits = twin_forward(model, twin, x)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"the model returned {type(logits).__name__}, not a tensor of logits")
    tracked = [i for i, c in enumerate(calls) if c.output is not None and c.output.requires_grad]
    grads = torch.autograd.grad(logits.sum(), [calls[i].output for i in tracked], allow_unused=True) \
        if tracked else ()
    depends = [False] * len(calls)
    for i, g in zip(tracked, grads, strict=True):
        depends[i] = g is not None
    return calls, counts, depends


def _hint(calls: list[_Call], counts: dict[str, int], depends: list[bool], size) -> str:
    spatial = [c.name for c, d in zip(calls, depends, strict=True)
               if d and counts[c.name] == 1 and c.output is not None and is_spatial(c.output, size)]
    return f" (spatial layers called once: {', '.join(spatial[-3:])})" if spatial else ""


def target_layer(model: nn.Module, example: torch.Tensor, name: str | None = None) -> LayerChoice:
    """Grad-CAM's target layer for ``model`` on inputs shaped like ``example`` (B, C, H, W).

    ``name`` given (dotted, as in ``named_modules``): checked to run exactly once in an eval-mode
    forward, to output a (B, C, h, w) map with h, w > 1, and to reach the logits. Else chosen
    from one traced eval-mode forward: the *last* module to return, among those called exactly
    once whose output is such a map and reaches the logits — torchvision's ResNet ``layer4``,
    GoogLeNet ``inception5b`` (the auxiliary heads never run in eval mode), SqueezeNet's
    class-map ReLU ``classifier.2`` (its ``classifier`` ends pooled, 1×1). A module reused in
    several places (one ``nn.ReLU`` called three times) has no single output to explain and is
    passed over. A model that computes on tokens or channels-last tensors after its last spatial
    layer (a vision transformer after its patch embedding) is refused: Grad-CAM there would
    explain the patch embedding, not the network's features.

    Raises ``ValueError`` naming the problem (shape, call count, TorchScript) where no layer fits.
    The choice is cached per model and input shape.
    """
    if scripted := script_modules(model):
        raise ValueError(f"Grad-CAM hooks a layer, and the TorchScript module "
                         f"{scripted[0] or '(the model)'!r} runs no hooks; load the model's Python code "
                         "(source: import:pkg.module:callable with weights:) or use a model-agnostic "
                         "explainer (saliency, smoothgrad, integrated_gradients, rise)")
    key = (name, tuple(example.shape[1:]))
    cache = _CHOICES.setdefault(model, {})
    if key in cache:
        return cache[key]
    size = (int(example.shape[-2]), int(example.shape[-1]))
    modules = dict(model.named_modules())
    if name is not None and (not name or name not in modules):
        raise ValueError(f"target layer {name!r} is not a module of the model; some names: "
                         f"{', '.join(list(modules)[1:12])}")
    calls, counts, depends = _trace(model, example)
    if name is not None:
        mine = [i for i, c in enumerate(calls) if c.name == name]
        if not mine:
            raise ValueError(f"Grad-CAM layer {name!r} never runs in an eval-mode forward (a training-only "
                             f"branch?); name a layer that does{_hint(calls, counts, depends, size)}")
        if len(mine) > 1:
            raise ValueError(f"Grad-CAM layer {name!r} runs {len(mine)} times in one forward (a reused "
                             f"module); name a module called once{_hint(calls, counts, depends, size)}")
        call = calls[mine[0]]
        if call.output is None or not is_spatial(call.output, size):
            shape = "a non-tensor" if call.output is None else f"shape {_shape(call.output)}"
            raise ValueError(f"Grad-CAM layer {name!r} outputs {shape}, not a (B, C, h, w) feature map with "
                             f"h, w > 1 at input size {size[0]}x{size[1]}; name a convolutional layer"
                             f"{_hint(calls, counts, depends, size)}")
        if not depends[mine[0]]:
            raise ValueError(f"the logits do not depend on Grad-CAM layer {name!r}; name a layer on the "
                             f"path to the output{_hint(calls, counts, depends, size)}")
        choice = LayerChoice(name, tuple(call.output.shape[1:]), automatic=False)
    else:
        chosen = None
        for i, call in enumerate(calls):
            if (depends[i] and counts[call.name] == 1 and call.output is not None
                    and is_spatial(call.output, size)):
                chosen = i
        if chosen is None:
            raise ValueError(f"no layer of the model outputs a (B, C, h, w) feature map with h, w > 1 that "
                             f"the logits depend on (at input size {size[0]}x{size[1]}); Grad-CAM needs "
                             "one: use a model-agnostic explainer (saliency, rise, ...)")
        later = [c for i, c in enumerate(calls[chosen + 1:], start=chosen + 1)
                 if depends[i] and c.output is not None and _has_positions(c.output, size)]
        if later:
            raise ValueError(f"the model's last spatial layer {calls[chosen].name!r} "
                             f"{_shape(calls[chosen].output)} is followed by layers on tokens or "
                             f"channels-last tensors ({later[0].name!r} outputs {_shape(later[0].output)}): "
                             "Grad-CAM's automatic layer would explain its patch embedding; name a "
                             "(B, C, h, w) layer with gradcam's layer: or use a model-agnostic explainer")
        choice = LayerChoice(calls[chosen].name, tuple(calls[chosen].output.shape[1:]), automatic=True)
    cache[key] = choice
    return choice


_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
