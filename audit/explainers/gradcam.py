"""Grad-CAM (Selvaraju et al. 2017) through Captum's ``LayerGradCam``, plus a differentiable path.

map = ReLU(sum_k alpha_k A_k) at the target layer, alpha_k the spatial mean of d y_c / d A_k
(y_c the class logit), upsampled bilinearly to the input size (METHODS §2). Captum defaults to no
ReLU and nearest upsampling; both are set here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from audit.explainers._graph import functional_twin, target_layer, twin_forward
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode, without_inplace
from audit.registry import Params


class GradCamParams(Params):
    layer: str | None = Field(None, description="dotted module name of the target layer (its output must "
                              "be (B, C, h, w), h, w > 1); default: the last such module called once in a "
                              "traced eval-mode forward that the logits depend on")


def _upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


@EXPLAINERS.register("gradcam")
class GradCam(Explainer):
    """Grad-CAM: ReLU of gradient-weighted activations of the last conv block, bilinear upsampling."""

    Params = GradCamParams
    needs_gradients = True
    black_box = False
    differentiable = True
    signed = False
    needs_module_hooks = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from captum.attr import LayerGradCam

        name = target_layer(model, x, self.params.layer).name
        copy = without_inplace(model)
        layer = dict(copy.named_modules())[name]
        with eval_mode(copy):
            inputs = x.detach().clone().requires_grad_(True)
            cam = LayerGradCam(copy, layer).attribute(inputs, target=target, relu_attributions=True)
        return _upsample(cam.sum(dim=1, keepdim=True), x.shape[-2:])[:, 0]

    def check_model(self, model: nn.Module, x: torch.Tensor) -> dict:
        """The target layer on inputs like ``x``; ``ValueError`` where none fits (see
        :func:`audit.explainers._graph.target_layer`)."""
        choice = target_layer(model, x, self.params.layer)
        return {"layer": choice.name, "layer_output": "(B, " + ", ".join(map(str, choice.output)) + ")",
                "layer_choice": "automatic" if choice.automatic else "given"}

    def differentiable_map(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           create_graph: bool = True) -> torch.Tensor:
        return differentiable_gradcam(model, x, target, self.params.layer, create_graph)


def differentiable_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           layer: str | None = None, create_graph: bool = True,
                           upsample: bool = True, relu: bool = True) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) that keep their graph to ``model``'s parameters (and to ``x``).

    The model is used in whatever mode the caller set (issue F freezes BatchNorm in eval mode);
    hooks live on a cached copy that computes with ``model``'s own tensors. ``upsample=False``
    returns the map at the target layer's resolution (METHODS §4 computes losses there);
    ``relu=False`` returns Σ_k α_k A_k before the ReLU (signed).
    """
    name = target_layer(model, x, layer).name
    twin = functional_twin(model)
    module = dict(twin.named_modules())[name]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = twin_forward(model, twin, x)
    finally:
        handle.remove()
    (activation,) = captured  # target_layer checked that the layer runs once
    score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
    (grads,) = torch.autograd.grad(score, activation, create_graph=create_graph)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = (alpha * activation).sum(dim=1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    if upsample:
        cam = _upsample(cam, x.shape[-2:])
    return cam[:, 0]
