"""RISE mask designs (issue K item 1, exploration): i.i.d. cells against a randomised orthogonal array.

    PYTHONPATH=. .venv/bin/python benchmarks/rise_designs.py      (~7 min on 2 cores)

The exploration behind RISE's orthogonal design (issue K); the last row is the design itself.
Every design gives each mask RISE's own distribution (cells Bernoulli(1/2), shift uniform), so
all converge to the same map; they differ in how the N masks depend on each other:

- ``iid``: plain RISE;
- ``oa_iid_shift``: cells from a strength-3 orthogonal array, OA(128, 64, 2, 3) (the runs x in
  F_2^7, columns (1, v) for the 64 v in F_2^6: any three columns are independent, so every
  pattern of any 3 cells appears equally often in a block of 128), per block a random column
  order and a random flip of each column (uniform marginals), shifts i.i.d. per mask;
- ``oa_fixed_shift``: the same, one random shift per block of 128, so each block is an exact
  orthogonal array of the masks themselves;
- ``orthogonal``: RISE's default design (:class:`audit.rise_masks.OrthogonalMasks`): as
  ``oa_fixed_shift``, the blocks' shifts from a scrambled Sobol' sequence (stratified).

Error: the centred relative L2 error (map minus its mean; see ``benchmarks/rise.py``) from 4
independent replicates of N = 1024 masks, 16 reference test images, zero fill, grid 8, p 1/2.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import math

import torch

from audit.builtin import shapes
from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.explainers.rise import RiseParams, class_probability, rise_mask_stream
from audit.rise_masks import _upsample_crop, strength3_array

GRID, SIZE, N, REPLICATES, IMAGES, BLOCK = 8, 64, 1024, 4, 16, 128
ARRAY = strength3_array(GRID * GRID)  # (128, 64), strength 3


def design(kind: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cell = math.ceil(SIZE / GRID)
    cells, shift_y, shift_x = [], [], []
    for _ in range(n // BLOCK):
        if kind == "iid":
            cells.append((torch.rand(BLOCK, GRID * GRID, generator=gen) < 0.5).long())
        else:
            order = torch.randperm(GRID * GRID, generator=gen)
            cells.append(ARRAY[:, order] ^ torch.randint(0, 2, (GRID * GRID,), generator=gen))
        if kind == "oa_fixed_shift":
            shift = torch.randint(0, cell, (2,), generator=gen)
            shift_y.append(shift[0].repeat(BLOCK))
            shift_x.append(shift[1].repeat(BLOCK))
        else:
            shift_y.append(torch.randint(0, cell, (BLOCK,), generator=gen))
            shift_x.append(torch.randint(0, cell, (BLOCK,), generator=gen))
    return (torch.cat(cells).view(-1, 1, GRID, GRID).float(), torch.cat(shift_y), torch.cat(shift_x))


def rise_maps(model, x, target, kind: str, seed: int) -> torch.Tensor:
    """(B, H*W) self-normalised RISE maps sum_i f_i M_i / sum_i M_i with the design's masks."""
    cell = math.ceil(SIZE / GRID)
    if kind == "orthogonal":
        params = RiseParams(n_masks=N, grid=GRID, design="orthogonal")
        masks = torch.cat(list(rise_mask_stream(params, (SIZE, SIZE), seed, N, reuse=False)))
    else:
        cells, shift_y, shift_x = design(kind, N, torch.Generator().manual_seed(seed))
        masks = _upsample_crop(cells, (SIZE, SIZE), ((GRID + 1) * cell,) * 2, shift_y, shift_x)
    flat = masks[:, 0].flatten(1).double()
    score = class_probability(model, BLOCK)
    out = torch.zeros(x.shape[0], SIZE * SIZE, dtype=torch.float64)
    with torch.inference_mode():
        for b in range(x.shape[0]):
            out[b] = score(masks * x[b:b + 1], int(target[b])).double() @ flat
    return out / flat.sum(0)


def main() -> None:
    model = load_reference()
    x = INPUT_SPEC.normalize(shapes.render(range(IMAGES), "test").images)
    with torch.inference_mode():
        target = model(x).argmax(1)
    spread, signal = {}, None
    for kind in ("iid", "oa_iid_shift", "oa_fixed_shift", "orthogonal"):
        reps = torch.stack([rise_maps(model, x, target, kind, 100 * r + 7) for r in range(REPLICATES)])
        reps = reps - reps.mean(-1, keepdim=True)
        mean = reps.mean(0)
        spread[kind] = ((reps - mean) ** 2).sum(-1).sum(0) / (REPLICATES - 1)
        if signal is None:  # ||E m||^2 from the plain replicates, without the noise's share
            signal = (mean ** 2).sum(-1) - spread[kind] / REPLICATES
    result: dict = {"benchmark": "rise_designs", "masks": N, "replicates": REPLICATES, "images": IMAGES}
    for kind, v in spread.items():
        error = float((v / signal).sqrt().mean())
        ratio = (float((spread["iid"] / signal).sqrt().mean()) / error) ** 2
        result[kind] = {"centred_error": round(error, 4), "masks_ratio_vs_iid": round(ratio, 3),
                        "mean_variance_ratio_vs_iid": round(float((spread["iid"] / v).mean()), 3)}
        print(f"{kind:>15}: centred relative error at N={N} {error:.3f}, masks ratio vs iid {ratio:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
