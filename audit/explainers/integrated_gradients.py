"""Integrated Gradients (Sundararajan et al. 2017) through Captum, baseline 0, 50 steps."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode, without_inplace
from audit.explainers.saliency import SaliencyParams, _Output
from audit.fills import fill
from audit.models.inference import forward_chunk


class IntegratedGradientsParams(SaliencyParams):
    n_steps: int = Field(50, ge=1)
    baseline: Literal["zero", "black"] = Field(
        "zero", description="zero: normalised 0 (the data set's mean colour); black: pixel value 0")
    internal_batch_size: int | None = Field(None, ge=1, description="interpolated images per backward pass; "
                                            "default 32 on a CPU, 128 on a GPU")


@EXPLAINERS.register("integrated_gradients")
class IntegratedGradients(Explainer):
    """Integrated Gradients: (x - x0) times the path-averaged gradient, channels summed (signed)."""

    Params = IntegratedGradientsParams
    needs_gradients = True
    black_box = False
    differentiable = False
    signed = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        forward = _Output(without_inplace(model), self.params.output)
        inputs = x.detach().clone()
        baseline = fill(self.params.baseline, inputs, ctx.spec)
        with eval_mode(forward):
            attr = CaptumIG(forward).attribute(inputs, baselines=baseline, target=target,
                                               n_steps=self.params.n_steps,
                                               internal_batch_size=forward_chunk(
                                                   x.device, self.params.internal_batch_size, gradients=True))
        return attr.sum(dim=1)
