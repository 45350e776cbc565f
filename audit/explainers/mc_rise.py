"""Multi-Color RISE (Hatakeyama et al., ACCV 2020): occlusions filled from a palette of colours.

Each grid cell is kept with probability p or filled with one palette colour chosen uniformly
(:func:`audit.rise_masks.generate_palette_masks`). For every pixel and colour k,
with f_i the target's softmax probability on masked image i, M_i the keep weight and O_ik the
weight of colour k:

    S_keep(pixel) = sum_i f_i M_i / sum_i M_i         (RISE's self-normalised map)
    S_k(pixel)    = sum_i f_i O_ik / sum_i O_ik       (the score when the pixel shows colour k)

``S_keep - S_k`` is the (pixel, colour) saliency: how much the score drops when that pixel is
replaced by colour k. The returned pixel map is its mean over the palette — a pixel matters when
replacing it by any colour hurts, so evidence a single fill introduces averages out.
A model that ignores the masks gives exactly 0 everywhere (degenerate). Masks are seeded from
``ctx.seed`` only (common random numbers, as for ``rise``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode
from audit.explainers.rise import MaskedScores, chunks, class_probability, mask_stream
from audit.models.inference import model_device
from audit.registry import Params
from audit.rise_masks import generate_palette_masks

Colour = tuple[float, float, float]
DEFAULT_PALETTE: tuple[Colour, ...] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0),
                                       (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


class McRiseParams(Params):
    n_masks: int = Field(3000, ge=1, description="number of random masks N")
    grid: int = Field(8, ge=1)
    p: float = Field(0.5, gt=0.0, lt=1.0, description="probability that a cell is kept")
    palette: tuple[Colour, ...] = Field(DEFAULT_PALETTE, min_length=1,
                                        description="fill colours, RGB in pixel space [0, 1]")
    batch_size: int | None = Field(None, ge=1, description="masked images per forward pass; default "
                                   "32 on a CPU, 512 on a GPU")


def mc_rise_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec, params: McRiseParams,
                 seed: int) -> torch.Tensor:
    """Pixel maps (B, H, W): the (pixel, colour) contrasts averaged over the palette's colours."""
    device = model_device(model, x.device)
    x = x.detach().to(device)
    batch, channels, height, width = x.shape
    k = len(params.palette)
    colours = torch.tensor(params.palette, dtype=x.dtype, device=device)[:, :channels]
    colours = spec.normalize(colours.view(k, channels, 1, 1))  # (K, C, 1, 1), normalised
    acc = MaskedScores(batch, k + 1, height, width, device)
    totals = torch.zeros(k + 1, height * width, dtype=torch.float64, device=device)

    def make(m: int, gen: torch.Generator, _block: int) -> torch.Tensor:
        return generate_palette_masks(m, (height, width), params.grid, params.p, k, gen,
                                      device=device, dtype=x.dtype)

    mask_chunk, forward = chunks(device, params.batch_size)
    stream = mask_stream(params.n_masks, make, seed, mask_chunk, "mc-rise-masks", params.grid,
                         params.p, k, reuse=True)
    score = class_probability(model, forward)
    buffer: torch.Tensor | None = None
    with torch.inference_mode():
        for masks in stream:
            m = masks.shape[0]
            totals += masks.flatten(2).sum(dim=0)
            # the colour part of every masked image, shared by the batch's images
            painted = torch.einsum("mkhw,kc->mchw", masks[:, 1:], colours[:, :, 0, 0])
            if buffer is None or buffer.shape[0] < m:  # one buffer for every image (as RISE)
                buffer = torch.empty_like(painted)
            for b in range(batch):
                masked = torch.addcmul(painted, masks[:, :1], x[b:b + 1], out=buffer[:m])
                acc.add(b, score(masked, int(target[b])), masks)
    # r + sums / totals per channel; r cancels in S_keep - S_k, so it is left out
    means = torch.where(totals > 0, acc.sums / totals.clamp_min(1e-300), torch.zeros_like(acc.sums))
    contrast = (means[:, :1] - means[:, 1:]).view(batch, k, height, width)
    return contrast.mean(dim=1)


@EXPLAINERS.register("mc_rise")
class McRise(Explainer):
    """Multi-Color RISE: drop in target probability when a pixel is filled by palette colours (black box)."""

    Params = McRiseParams
    needs_gradients = False
    black_box = True
    differentiable = False
    signed = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        with eval_mode(model):
            return mc_rise_maps(model, x, target, ctx.spec, self.params, ctx.seed).float()
