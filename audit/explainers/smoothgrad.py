"""SmoothGrad (Smilkov et al. 2017): SimpleGrad averaged over noisy copies of the image.

sigma = noise_level * (max x - min x) per image, n = 25 copies (the PAIR defaults, METHODS §2;
Captum's NoiseTunnel defaults of 5 copies and an absolute sigma of 1.0 are too few and too loud).
The noise is drawn here, per image, from ``ctx.sample_generator`` — NoiseTunnel would draw it
from the global RNG, so a batch would not explain the same as its images one by one — and the
gradients come from Captum's ``Saliency`` on all noisy copies at once.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode, without_inplace
from audit.explainers.saliency import SaliencyParams, _Output
from audit.models.inference import forward_chunk


class SmoothGradParams(SaliencyParams):
    n_samples: int = Field(25, ge=1, description="noisy copies per image")
    noise_level: float = Field(0.15, ge=0.0, description="sigma as a fraction of the image's value range")
    batch_size: int | None = Field(None, ge=1, description="noisy images per backward pass; default "
                                   "32 on a CPU, 128 on a GPU")


@EXPLAINERS.register("smoothgrad")
class SmoothGrad(Explainer):
    """SmoothGrad: mean |d f_c / d x| over 25 noisy copies (sigma = 0.15 range), channels summed."""

    Params = SmoothGradParams
    needs_gradients = True
    black_box = False
    differentiable = False
    signed = False

    def noisy_copies(self, x: torch.Tensor, ctx: ExplainContext) -> torch.Tensor:
        """(B * n, C, H, W): image b's copies are rows b*n .. b*n + n - 1."""
        n = self.params.n_samples
        copies = []
        for b in range(x.shape[0]):
            image = x[b].detach()
            sigma = self.params.noise_level * (image.max() - image.min())
            noise = torch.randn((n, *image.shape), generator=ctx.sample_generator(b, "smoothgrad"))
            noise = noise.to(device=x.device, dtype=x.dtype)
            copies.append(image.unsqueeze(0) + sigma * noise)
        return torch.cat(copies) if copies else x.detach()[:0]

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        from captum.attr import Saliency as CaptumSaliency

        n = self.params.n_samples
        forward = _Output(without_inplace(model), self.params.output)
        noisy = self.noisy_copies(x, ctx)
        targets = target.repeat_interleave(n)
        grads = []
        with eval_mode(forward):
            saliency = CaptumSaliency(forward)
            chunk = forward_chunk(x.device, self.params.batch_size, gradients=True)
            for start in range(0, noisy.shape[0], chunk):
                part = noisy[start:start + chunk].clone().requires_grad_(True)
                grads.append(saliency.attribute(part, target=targets[start:start + part.shape[0]],
                                                abs=True).sum(dim=1))
        maps = torch.cat(grads) if grads else x.new_zeros((0, *x.shape[-2:]))
        return maps.view(x.shape[0], n, *x.shape[-2:]).mean(dim=1)
