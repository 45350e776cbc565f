"""Layer-wise relevance propagation: Zennit for explaining, a gradient form for losses.

``lrp`` (the explainer) uses Zennit's EpsilonPlusFlat composite (flat rule at the first layer,
z+ at the other convolutions, epsilon at dense layers) with the ResNet canonizer, which merges
BatchNorm into the preceding convolutions and turns torchvision's residual ``+`` into a module
that rules can see (Captum's LRP cannot see functional additions, METHODS §2). Canonizers
change modules while they are applied, so they only ever run on a copy of the model.

Relevance conservation is checked per map (:meth:`Lrp.map_problems`): the pass starts with one
unit of relevance on the target class, and the rules may lose relevance (biases and stabilisers
absorb it: the ε rule at the dense layer of the reference ResNet keeps 0.39–1.06 of it on its
test images) but should neither create nor reverse it. A sum outside [−tol, 1 + tol] (tol 0.5) means the
rules did not see the graph the model computes — without the canonizer a residual ``+`` hands
the full relevance to both branches and the reference ResNet's sums are ~7.5–8 — or the ε rule
divided by near-zero pre-activations (seen on randomised dense layers); such an image is not
scored, with the sum in the reason.

:func:`differentiable_lrp_epsilon` is LRP-epsilon written as gradient x input with stop-gradient
denominators, so a map can sit inside a training loss (issue F).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.explainers._graph import functional_twin, twin_forward
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode, without_inplace
from audit.registry import Params

_AFFINE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


class LrpParams(Params):
    epsilon: float = Field(1e-6, gt=0.0, description="stabiliser of the epsilon rule (dense layers)")
    stabilizer: float = Field(1e-6, gt=0.0, description="stabiliser of the flat and z+ rules")
    conservation_tolerance: float | None = Field(
        0.5, ge=0.0, description="a map whose relevance sum lies outside [-tol, 1 + tol] (the explained "
        "output is one unit) is not scored; null turns the check off")


@EXPLAINERS.register("lrp")
class Lrp(Explainer):
    """LRP (Zennit EpsilonPlusFlat + ResNet canonizer): relevance of the class, channels summed (signed)."""

    Params = LrpParams
    needs_gradients = True
    black_box = False
    differentiable = True  # through differentiable_map: LRP-epsilon, see differentiable_lrp_epsilon
    signed = True
    needs_module_hooks = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer

        copy = without_inplace(model)
        composite = EpsilonPlusFlat(epsilon=self.params.epsilon, stabilizer=self.params.stabilizer,
                                    canonizers=[ResNetCanonizer()])
        inputs = x.detach().clone().requires_grad_(True)
        def one_hot(logits: torch.Tensor) -> torch.Tensor:
            # Relevance starts as one unit on the target class (Zennit's convention): the map's
            # scale does not depend on the logit, whose sign would flip the map. A function of the
            # output, so the attributor's own forward pass is the only one.
            unit = torch.zeros_like(logits)
            unit[torch.arange(len(target)), target.to(logits.device)] = 1.0
            return unit

        with eval_mode(copy), Gradient(model=copy, composite=composite) as attributor:
            _, relevance = attributor(inputs, one_hot)
        return relevance.sum(dim=1)

    def map_problems(self, maps: torch.Tensor) -> list[str | None]:
        """Images whose total relevance (map sum; the explained output is 1) lies outside
        [−tol, 1 + tol]: relevance created or reversed, not conserved (see the module docstring)."""
        tol = self.params.conservation_tolerance
        if tol is None:
            return [None] * int(maps.shape[0])
        sums = maps.detach().to(torch.float64).flatten(1).sum(dim=1).cpu().tolist()
        return [None if -tol <= total <= 1.0 + tol else
                f"relevance not conserved: the map sums to {total:.4g}, the explained output is 1 "
                f"(accepted [{-tol:g}, {1 + tol:g}]; LRP conservation, Bach et al. 2015)"
                for total in sums]

    def differentiable_map(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           create_graph: bool = True) -> torch.Tensor:
        return differentiable_lrp_epsilon(model, x, target, self.params.epsilon, create_graph)


def _stop_gradient_denominator(epsilon: float):
    """Forward hook: the output z keeps its value; its backward is scaled by z / (z + eps sign z).

    Gradient x input then reproduces LRP-epsilon at this affine layer: the input relevance
    a_j w_jk R_k / (z_k + eps sign z_k) is a_j times the gradient once the upstream gradient is
    R_k / z_k. The ratio is a constant to autograd (stop-gradient), which is what makes the
    backward pass an LRP pass; the map's own derivative w.r.t. the weights then leaves out the
    ratio's dependence on them, a term of order eps / z (exact as eps -> 0).
    """

    def hook(_module: nn.Module, _inputs, z: torch.Tensor) -> torch.Tensor:
        sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
        ratio = (z / (z + epsilon * sign)).detach()
        return z * ratio + (z * (1 - ratio)).detach()

    return hook


def differentiable_lrp_epsilon(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                               epsilon: float = 1e-6, create_graph: bool = True) -> torch.Tensor:
    """LRP-epsilon maps (B, H, W) (signed, channels summed) with a graph to the parameters.

    Rules: epsilon at every affine layer (Conv2d, Linear, BatchNorm2d — BN as its own affine layer
    rather than merged), pass-through at activations, proportional redistribution at sums and
    average pooling (what gradient x input does there), winner-take-all at max pooling. Relevance
    starts as the class logit z_c (classic LRP; no division, so smooth in the weights) where the
    ``lrp`` explainer starts from one unit: the maps differ by the factor z_c. The model runs in the
    caller's mode; hooks live on a copy that computes with the model's own tensors.
    """
    twin = functional_twin(model)
    handles = [m.register_forward_hook(_stop_gradient_denominator(epsilon))
               for m in twin.modules() if isinstance(m, _AFFINE)]
    try:
        inputs = x if x.requires_grad else x.detach().clone().requires_grad_(True)
        logits = twin_forward(model, twin, inputs)
    finally:
        for handle in handles:
            handle.remove()
    # Gradient 1 at the logit: the pass starts with relevance R = z_c, the class score.
    score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
    (grads,) = torch.autograd.grad(score, inputs, create_graph=create_graph)
    return (inputs * grads).sum(dim=1)
