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


def _upsample_crop(cells: torch.Tensor, size: tuple[int, int], up: tuple[int, int],
                   shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of (n, k, s, s) grids to ``up``, cropped to ``size`` at the shifts."""
    n, k = cells.shape[:2]
    height, width = size
    device = cells.device
    upsampled = F.interpolate(cells, size=up, mode="bilinear", align_corners=False)
    rows = shift_y[:, None] + torch.arange(height, device=device)[None, :]
    cols = shift_x[:, None] + torch.arange(width, device=device)[None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(k, device=device)[None, :, None, None]
    return upsampled[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


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
