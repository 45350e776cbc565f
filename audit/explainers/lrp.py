"""Layer-wise relevance propagation: Zennit for explaining, a gradient form for losses.

``lrp`` (the explainer) uses Zennit's EpsilonPlusFlat composite (flat rule at the first layer,
z+ at the other convolutions, epsilon at dense layers) on a ``torch.fx`` copy of the model in
which every operation is a module a rule targets or pure routing
(:mod:`audit.explainers._lrp_graph`): BatchNorm folded into the convolution computed before it,
residual ``+``, functional pooling and activations turned into modules (Captum's LRP and
Zennit's own canonizers see only declared modules, METHODS §2). A model with an operation no
rule covers (attention, LayerNorm, a product with a constant, an untraceable forward) is refused
at preflight. Every explanation is checked: the copy must compute the model's logits (relative
1e-4), else the cell is an error; the map's relevance must be conserved (below), else the image
is not scored.

Relevance conservation is checked per map (:meth:`Lrp.map_problems`): the pass starts with one
unit of relevance on the target class, and the rules may lose relevance (biases and stabilisers
absorb it: the ε rule at the dense layer of the reference ResNet keeps 0.39–1.06 of it on its
test images) but should neither create nor reverse it. A sum outside [−tol, 1 + tol] (tol 0.5) means the
rules did not see the graph the model computes — with a residual ``+`` left to autograd both
branches get the full relevance and the reference ResNet's sums are ~7.5–8 — or the ε rule
divided by near-zero pre-activations (seen on randomised dense layers); such an image is not
scored, with the sum in the reason.

:func:`differentiable_lrp_epsilon` is LRP-epsilon written as gradient x input with stop-gradient
denominators, so a map can sit inside a training loss (issue F). It is the map of ``lrp`` with
``composite: epsilon`` (epsilon at every convolution and dense layer), times the class logit, and
not the map of the default EpsilonPlusFlat composite (flat and z+ rules have no such form here):
an attack that puts ``lrp`` in its loss (manipulation, targeted_map, fragility) is refused at
validation unless its ``composite`` is ``epsilon``, so the map it attacks is the map the audit
scores (audit with ``{lrp: {composite: epsilon}}``). Before this check, an "LRP-targeted"
manipulation trained against LRP-epsilon and was scored on EpsilonPlusFlat maps, which it barely
moved (suites/manipulation.yaml, session 10: LRP location FSR 0.00 on its own "target").
"""

from __future__ import annotations

import weakref
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from audit.explainers._graph import functional_twin, twin_forward
from audit.explainers._lrp_graph import LrpGraph, lrp_graph
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, Unsupported, eval_mode
from audit.models.inference import _state_signature
from audit.registry import Params

# Logits of the rewritten model against the model's: float32 rounding of BatchNorm folding and
# reordered sums stays far below this (relative to the largest logit, at least 1).
LOGIT_RTOL = 1e-4
# A map whose relevance sum is below this in magnitude kept (almost) none of the explained unit:
# on randomly initialised deep nets (GoogLeNet 1e-28, ShuffleNet 3e-5) the stabilisers absorb it
# layer by layer. Trained nets keep 0.39–1.06 (reference ResNet); ResNet-18 at random 0.97.
RELEVANCE_FLOOR = 1e-3
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _graph_for(model: nn.Module, x: torch.Tensor) -> LrpGraph:
    """:func:`lrp_graph` of ``model``, cached per model object and rebuilt when its tensors or the
    input shape change (the graph folds the current BatchNorm statistics into its convolutions)."""
    key = (_state_signature(model), tuple(x.shape[1:]))
    entry = _GRAPHS.get(model)
    if entry is None or entry[0] != key:
        entry = (key, lrp_graph(model, x))
        _GRAPHS[model] = entry
    return entry[1]


def _logits_differ(got: torch.Tensor, reference: torch.Tensor) -> str | None:
    if got.shape != reference.shape:
        return f"shape {tuple(got.shape)} against {tuple(reference.shape)}"
    scale = float(reference.abs().max().clamp_min(1.0))
    diff = float((got.double() - reference.double()).abs().max())
    return None if diff <= LOGIT_RTOL * scale else f"logits differ by up to {diff:.3g} (largest logit {scale:.3g})"

_AFFINE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


class LrpParams(Params):
    composite: Literal["epsilon_plus_flat", "epsilon"] = Field(
        "epsilon_plus_flat", description="rules: epsilon_plus_flat (Zennit EpsilonPlusFlat: flat at the first "
        "layer, z+ at convolutions, epsilon at dense layers) or epsilon (epsilon at every convolution and "
        "dense layer: the map an attack can differentiate, see differentiable_lrp_epsilon)")
    epsilon: float = Field(1e-6, gt=0.0, description="stabiliser of the epsilon rule (dense layers)")
    stabilizer: float = Field(1e-6, gt=0.0, description="stabiliser of the flat and z+ rules")
    conservation_tolerance: float | None = Field(
        0.5, ge=0.0, description="a map whose relevance sum lies outside [-tol, 1 + tol] (the explained "
        "output is one unit) is not scored; null turns the check off")


@EXPLAINERS.register("lrp")
class Lrp(Explainer):
    """LRP (Zennit EpsilonPlusFlat on a torch.fx-canonized copy): relevance of the class, channels summed (signed)."""

    Params = LrpParams
    needs_gradients = True
    black_box = False
    differentiable = True  # through differentiable_map: LRP-epsilon, see differentiable_lrp_epsilon
    signed = True
    needs_module_hooks = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from zennit.attribution import Gradient

        graph = _graph_for(model, x).module
        composite = self._composite()
        inputs = x.detach().clone().requires_grad_(True)

        def one_hot(logits: torch.Tensor) -> torch.Tensor:
            # Relevance starts as one unit on the target class (Zennit's convention): the map's
            # scale does not depend on the logit, whose sign would flip the map. A function of the
            # output, so the attributor's own forward pass is the only one.
            unit = torch.zeros_like(logits)
            unit[torch.arange(len(target)), target.to(logits.device)] = 1.0
            return unit

        with Gradient(model=graph, composite=composite) as attributor:
            logits, relevance = attributor(inputs, one_hot)
        with torch.no_grad(), eval_mode(model):
            reference = model(x)
        if (problem := _logits_differ(logits.detach(), reference)) is not None:
            raise RuntimeError(f"LRP's rewritten model does not compute the model's logits ({problem}); "
                               "its relevance would explain another function")
        return relevance.sum(dim=1)

    def _composite(self):
        from zennit.composites import EpsilonPlusFlat, LayerMapComposite, layer_map_base
        from zennit.rules import Epsilon
        from zennit.types import Convolution

        p = self.params
        if p.composite == "epsilon":  # the base map (pass-through activations, proportional sums and
            # average pools, BatchNorm passed: it is folded into its convolution) plus epsilon everywhere
            return LayerMapComposite(layer_map_base(p.stabilizer) + [(Convolution, Epsilon(epsilon=p.epsilon)),
                                                                     (nn.Linear, Epsilon(epsilon=p.epsilon))])
        return EpsilonPlusFlat(epsilon=p.epsilon, stabilizer=p.stabilizer)

    @classmethod
    def not_differentiable(cls, params: dict) -> str | None:
        """Only ``composite: epsilon`` has a differentiable form (:func:`differentiable_lrp_epsilon`)."""
        if cls.Params.model_validate(params).composite != "epsilon":
            return ("lrp's differentiable map is LRP-epsilon, not the default EpsilonPlusFlat composite the "
                    "explainer scores; set its parameters to {composite: epsilon} and audit with "
                    "{lrp: {composite: epsilon}} so the map attacked is the map scored")
        return None

    def check_model(self, model: nn.Module, x: torch.Tensor) -> dict:
        """The rewritten graph LRP's rules see (:func:`audit.explainers._lrp_graph.lrp_graph`),
        built on ``x`` and checked to compute the model's logits; ``ValueError`` where it cannot."""
        graph = _graph_for(model, x)
        with torch.no_grad():
            problem = _logits_differ(graph.module(x), model(x))
        if problem is not None:
            raise ValueError(f"LRP's rewritten model does not compute the model's logits ({problem}); use "
                             "an explainer that needs no rules (saliency, smoothgrad, integrated_gradients)")
        rules = "Zennit EpsilonPlusFlat" if self.params.composite == "epsilon_plus_flat" else "Zennit epsilon"
        return {"rules": rules, "canonized": graph.describe()}

    def map_problems(self, maps: torch.Tensor) -> list[str | None]:
        """Images whose total relevance (map sum; the explained output is 1) lies outside
        [−tol, 1 + tol] — relevance created or reversed, not conserved (see the module docstring) —
        or whose magnitude is below :data:`RELEVANCE_FLOOR` (relevance vanished)."""
        tol = self.params.conservation_tolerance
        if tol is None:
            return [None] * int(maps.shape[0])
        sums = maps.detach().to(torch.float64).flatten(1).sum(dim=1).cpu().tolist()
        return [f"relevance vanished: the map sums to {total:.4g} of the explained unit (below "
                f"{RELEVANCE_FLOOR:g} in magnitude; biases and stabilisers absorbed it, the map has "
                "nothing left to rank)" if abs(total) < RELEVANCE_FLOOR else
                None if -tol <= total <= 1.0 + tol else
                f"relevance not conserved: the map sums to {total:.4g}, the explained output is 1 "
                f"(accepted [{-tol:g}, {1 + tol:g}]; LRP conservation, Bach et al. 2015)"
                for total in sums]

    def differentiable_map(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           create_graph: bool = True) -> torch.Tensor:
        """LRP-epsilon maps (B, H, W) with a graph to the parameters: this explainer's map with
        ``composite: epsilon``, times the class logit; ``Unsupported`` for any other composite."""
        if (reason := self.not_differentiable(self.params.model_dump())) is not None:
            raise Unsupported(reason)
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
