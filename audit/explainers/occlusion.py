"""Occlusion (Zeiler & Fergus, ECCV 2014): what hiding each part of the image does to the answer.

The image is cut into a ``grid`` × ``grid`` partition (rows and columns split as evenly as the
side allows, so every pixel lies in exactly one cell whatever the input size); cell k is
replaced by the ``fill`` (default ``zero``: the data set's mean colour in the model's normalised
space, as AOPC's baseline) and the map's value on every pixel of cell k is the drop of the
target class's softmax probability,

    map(x)[cell k] = p_c(x) − p_c(x with cell k filled),

so positive where hiding the cell lowers the answer, negative where it raises it (signed; in
probability units, in [−1, 1]). ``grid²`` forward passes per image, no randomness for the
``zero``, ``black`` and ``mean`` fills (``noise`` and ``blur`` fills are seeded by the image's id).
A black-box explainer: it reads only the model's outputs, which is what makes it the reference a
gradient map can be compared with on the same model (``explainer_agreement``).

Own implementation rather than Captum's ``Occlusion``: Captum's sliding windows leave the last
rows and columns uncovered (attribution 0) when the side is not a multiple of the stride.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode
from audit.fills import FillName, fill
from audit.models.inference import target_probs
from audit.registry import Params


class OcclusionParams(Params):
    grid: int = Field(8, ge=1, description="cells per side of the occlusion partition (grid² forwards per image)")
    fill: FillName = Field("zero", description="what occluded pixels become (audit.fills)")
    batch_size: int | None = Field(None, ge=1, description="occluded images per forward pass; default 32 "
                                   "on a CPU, 512 on a GPU")


def cell_edges(side: int, grid: int) -> list[int]:
    """grid + 1 boundaries 0 = e₀ < … < e_grid = side splitting ``side`` pixels as evenly as possible."""
    grid = min(grid, side)
    return [round(i * side / grid) for i in range(grid + 1)]


def cell_masks(height: int, width: int, grid: int, device=None) -> torch.Tensor:
    """(K, H, W) bool: cell k of the row-major partition (each pixel in exactly one cell)."""
    rows, cols = cell_edges(height, grid), cell_edges(width, grid)
    masks = []
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True):
            m = torch.zeros(height, width, dtype=torch.bool, device=device)
            m[r0:r1, c0:c1] = True
            masks.append(m)
    return torch.stack(masks)


@EXPLAINERS.register("occlusion")
class Occlusion(Explainer):
    """Occlusion: drop of the target probability when each cell of a grid is filled (black box)."""

    Params = OcclusionParams
    needs_gradients = False
    black_box = True
    signed = True

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        b, _, h, w = x.shape
        masks = cell_masks(h, w, self.params.grid, x.device)  # (K, H, W)
        k = masks.shape[0]
        with torch.no_grad():
            filled = torch.cat([fill(self.params.fill, x[i:i + 1], ctx.spec, ctx.sample_generator(i, "occlusion"))
                                for i in range(b)])
        per_image = k + 1  # row 0 of an image: the image itself; row j >= 1: its cell j - 1 filled

        def build(start: int, end: int) -> torch.Tensor:
            rows = torch.arange(start, end, device=x.device)
            image, cell = rows // per_image, rows % per_image
            hidden = torch.zeros(end - start, 1, h, w, dtype=torch.bool, device=x.device)
            occluded = cell > 0
            hidden[occluded, 0] = masks[cell[occluded] - 1]
            return torch.where(hidden, filled[image], x[image])

        with eval_mode(model):
            probs = target_probs(model, b * per_image, build, target.to(x.device).repeat_interleave(per_image),
                                 self.params.batch_size).view(b, per_image)
        drops = (probs[:, :1] - probs[:, 1:]).to(torch.float32)  # (B, K)
        return torch.einsum("bk,khw->bhw", drops, masks.to(torch.float32))
