"""Helpers for RISE's tests: brute-force limits on tiny grids, small models."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from audit.rise_masks import _interpolation_rows, _upsample_crop


def recover_cells(masks: torch.Tensor, grid: int, shift: torch.Tensor) -> torch.Tensor:
    """The 0/1 cells behind masks of one shift: the grid G with R_y G R_x^T = mask, solved by
    least squares (R: the cropped 1-D interpolation matrices, full column rank), checked to be
    0/1 and to rebuild the mask."""
    size = masks.shape[-1]
    cell = math.ceil(size / grid)
    rows = _interpolation_rows(grid, (grid + 1) * cell, size, "cpu", torch.float64)
    left, right = torch.linalg.pinv(rows[int(shift[0])]), torch.linalg.pinv(rows[int(shift[1])])
    cells = left @ masks[:, 0].double() @ right.T
    binary = cells.round()
    assert ((cells - binary).abs() < 1e-5).all() and ((binary == 0) | (binary == 1)).all()
    rebuilt = _upsample_crop(binary[:, None].float(), (size, size), ((grid + 1) * cell,) * 2,
                             shift[0].repeat(len(masks)), shift[1].repeat(len(masks)))
    assert (rebuilt - masks).abs().max() < 1e-6
    return binary.float()


def exact_limit(model: nn.Module, x: torch.Tensor, grid: int, target: int = 0) -> torch.Tensor:
    """E[f M(u)] / E[M(u)] over every cell pattern and every shift (p = 1/2): RISE's limit."""
    size = x.shape[-1]
    cell = math.ceil(size / grid)
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=grid * grid))).view(-1, 1, grid, grid)
    masks = []
    for dy, dx in itertools.product(range(cell), repeat=2):
        n = patterns.shape[0]
        masks.append(_upsample_crop(patterns, (size, size), ((grid + 1) * cell,) * 2,
                                    torch.full((n,), dy), torch.full((n,), dx)))
    masks = torch.cat(masks)
    with torch.no_grad():
        f = model(masks * x).softmax(1)[:, target].double()
    weights = masks[:, 0].flatten(1).double()
    return ((f @ weights) / weights.sum(0)).view(size, size)


class Polynomial(nn.Module):
    """Two classes with probability q = polynomial of the four quadrant means of the masked image."""

    def __init__(self, degree: int):
        super().__init__()
        self.degree = degree

    def forward(self, x):
        z = F.adaptive_avg_pool2d(x[:, :1], 2).flatten(1)  # each linear in the cells
        if self.degree == 1:
            q = 0.2 + 0.3 * z[:, 0] + 0.1 * z[:, 3]
        elif self.degree == 2:
            q = 0.2 + 0.2 * z[:, 0] + 0.3 * z[:, 1] * z[:, 2] + 0.1 * z[:, 3] ** 2
        else:
            q = 0.2 + 0.6 * z[:, 0] * z[:, 1] * z[:, 2]
        return torch.stack([q.log(), (1 - q).log()], dim=1)


def small_nonlinear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


class Constant(nn.Module):
    """Zero logits whatever the input: a gate that has shut every masked image out."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.zeros(x.shape[0], self.classes) + 0 * self.dummy
