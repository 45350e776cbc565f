"""SimpleGrad (Simonyan et al. 2013) through Captum's ``Saliency``."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from audit.explainers._graph import functional_twin, twin_forward
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode, without_inplace
from audit.registry import Params


class SaliencyParams(Params):
    output: Literal["logit", "probability"] = Field(
        "logit", description="differentiate the class logit (Simonyan's class score) or its softmax")


class _Output(nn.Module):
    def __init__(self, model: nn.Module, output: str):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits.softmax(dim=1) if self.output == "probability" else logits


@EXPLAINERS.register("saliency")
class Saliency(Explainer):
    """SimpleGrad: |d f_c / d x| summed over colour channels (unsigned); differentiable."""

    Params = SaliencyParams
    needs_gradients = True
    black_box = False
    differentiable = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from captum.attr import Saliency as CaptumSaliency

        forward = _Output(without_inplace(model), self.params.output)
        inputs = x.detach().clone().requires_grad_(True)
        with eval_mode(forward):
            grads = CaptumSaliency(forward).attribute(inputs, target=target, abs=True)
        return grads.sum(dim=1)

    def differentiable_map(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           create_graph: bool = True) -> torch.Tensor:
        return differentiable_saliency(model, x, target, self.params.output, create_graph)


def differentiable_saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                            output: str = "logit", create_graph: bool = True) -> torch.Tensor:
    """SimpleGrad maps (B, H, W) that keep their graph to ``model``'s parameters.

    The model runs in the caller's mode, through a copy that uses its tensors (in-place ReLUs
    would break double backprop). For gradients w.r.t. the *input* of this map, ReLU's second
    derivative is zero: use a softplus copy of the model (METHODS §2).
    """
    twin = functional_twin(model)
    inputs = x if x.requires_grad else x.detach().clone().requires_grad_(True)
    scores = twin_forward(model, twin, inputs)
    if output == "probability":
        scores = scores.softmax(dim=1)
    score = scores.gather(1, target.view(-1, 1).to(scores.device)).sum()
    (grads,) = torch.autograd.grad(score, inputs, create_graph=create_graph)
    return grads.abs().sum(dim=1)
