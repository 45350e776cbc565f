"""RISE's random masks (Petsiuk et al. 2018), generated in batches on any device.

A mask is a Bernoulli(p) grid of s x s cells, upsampled bilinearly to (s + 1) * cell pixels per
side (cell = ceil(size / s)) and cropped to size x size at a uniform random offset in
[0, cell)^2, which shifts the grid by a sub-cell amount so that cell borders fall everywhere.
Values are in [0, 1]; the mean mask value is about p.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def generate_masks(n: int, size: int | tuple[int, int], grid: int, p: float, gen: torch.Generator,
                   *, device: torch.device | str | None = None, dtype=torch.float32) -> torch.Tensor:
    """``n`` RISE masks of shape (n, 1, H, W), drawn from ``gen`` (on ``gen``'s device)."""
    height, width = (size, size) if isinstance(size, int) else size
    device = torch.device(device) if device is not None else gen.device
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    up_h, up_w = (grid + 1) * cell_h, (grid + 1) * cell_w
    cells = (torch.rand((n, 1, grid, grid), generator=gen, device=gen.device) < p).to(dtype)
    shift_y = torch.randint(0, cell_h, (n,), generator=gen, device=gen.device)
    shift_x = torch.randint(0, cell_w, (n,), generator=gen, device=gen.device)
    return _upsample_crop(cells.to(device), (height, width), (up_h, up_w), shift_y.to(device),
                          shift_x.to(device))


def _interpolation_rows(grid: int, up: int, size: int, device, dtype) -> torch.Tensor:
    """(up - size + 1, size, grid): for each shift, the rows of 1-D linear upsampling grid -> up.

    Bilinear upsampling (align_corners=False) is separable and linear: up(G) = R G R^T with R
    the 1-D interpolation matrix, and a crop at offset t keeps rows t .. t + size - 1 of R.
    R is read off by upsampling the identity, so it matches ``F.interpolate`` exactly.
    """
    eye = torch.eye(grid, device=device, dtype=dtype)[None]  # (1, grid, grid) as (N, C, L)
    matrix = F.interpolate(eye, size=up, mode="linear", align_corners=False)[0].T  # (up, grid)
    return matrix.unfold(0, size, 1).permute(0, 2, 1)  # (shifts, size, grid)


def _upsample_crop(cells: torch.Tensor, size: tuple[int, int], up: tuple[int, int],
                   shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of (n, k, s, s) grids to ``up``, cropped to ``size`` at the shifts.

    Computed as R_y[shift_y] @ G @ R_x[shift_x]^T per mask (two small batched products), which
    writes each mask once instead of upsampling the full (s + 1) * cell square and gathering.
    """
    n, k, grid_h, grid_w = cells.shape
    height, width = size
    rows_y = _interpolation_rows(grid_h, up[0], height, cells.device, cells.dtype)[shift_y]  # (n, H, s)
    rows_x = _interpolation_rows(grid_w, up[1], width, cells.device, cells.dtype)[shift_x]  # (n, W, s)
    out = torch.matmul(torch.matmul(rows_y[:, None], cells), rows_x[:, None].transpose(-1, -2))
    # the interpolation weights sum to 1 up to rounding; masks must stay in [0, 1]
    return out.clamp_(0.0, 1.0)


def generate_palette_masks(n: int, size: int | tuple[int, int], grid: int, p: float, colours: int,
                           gen: torch.Generator, *, device: torch.device | str | None = None,
                           dtype=torch.float32) -> torch.Tensor:
    """Multi-colour RISE masks (n, 1 + colours, H, W): channel 0 keeps, channel k fills colour k.

    Each grid cell is kept with probability p, else filled with one of ``colours`` palette
    colours chosen uniformly; the one-hot cell grids are upsampled and cropped like RISE masks.
    Bilinear upsampling is linear, so the channels sum to 1 at every pixel: a masked image is
    sum_k channel_k * image_k with image_0 the input and image_k a flat colour.
    """
    height, width = (size, size) if isinstance(size, int) else size
    device = torch.device(device) if device is not None else gen.device
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    keep = torch.rand((n, grid, grid), generator=gen, device=gen.device) < p
    colour = torch.randint(1, colours + 1, (n, grid, grid), generator=gen, device=gen.device)
    shift_y = torch.randint(0, cell_h, (n,), generator=gen, device=gen.device)
    shift_x = torch.randint(0, cell_w, (n,), generator=gen, device=gen.device)
    category = torch.where(keep, torch.zeros_like(colour), colour).to(device)
    cells = F.one_hot(category, colours + 1).permute(0, 3, 1, 2).to(dtype)
    return _upsample_crop(cells, (height, width), ((grid + 1) * cell_h, (grid + 1) * cell_w),
                          shift_y.to(device), shift_x.to(device))
