"""RISE's random masks (Petsiuk et al. 2018), generated in batches on any device.

A mask is a Bernoulli(p) grid of s x s cells, upsampled bilinearly to (s + 1) * cell pixels per
side (cell = ceil(size / s)) and cropped to size x size at a uniform random offset in
[0, cell)^2, which shifts the grid by a sub-cell amount so that cell borders fall everywhere.
Values are in [0, 1]; the mean mask value is about p.

Two designs give masks with exactly this distribution each, and differ in how the N masks of one
run depend on each other: ``iid`` (:func:`generate_masks`, the paper's) and ``orthogonal``
(:class:`OrthogonalMasks`: blocks of masks whose cells form a randomised orthogonal array of
strength 3, one shift per block from a scrambled Sobol' sequence), which converges to the same
map with fewer masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from audit.seeding import derive_seed, generator


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


def strength3_array(columns: int) -> torch.Tensor:
    """A two-level orthogonal array of strength 3: (runs, columns) int64 in {0, 1}.

    The runs are all x in F_2^(k+1), k = ceil(log2(columns)), so runs = 2^(k+1) <= 4 * columns
    (and 2 for one column); column j is the parity x . (1, bits(j)). Any three columns (1, a),
    (1, b), (1, c) are linearly independent over F_2 (the sum of two is (0, a + b) != 0, of
    three (1, ...) != 0), so every pattern of values of any three columns appears in exactly
    runs / 8 runs (Hedayat, Sloane & Stufken, *Orthogonal Arrays*, 1999, Thm 3.29: the rows of
    a linear code whose generator has every t columns independent form an OA of strength t;
    this one is the dual of the extended Hamming code).
    """
    if columns < 1:
        raise ValueError(f"an orthogonal array needs at least one column, got {columns}")
    k = max(0, math.ceil(math.log2(columns)))
    return _array_entries(torch.arange(2 ** (k + 1)), torch.arange(columns), k + 1)


def _array_entries(rows: torch.Tensor, columns: torch.Tensor, bits: int) -> torch.Tensor:
    """(len(rows), len(columns)) entries of :func:`strength3_array` with 2^bits runs: the parity
    x . (1, bits(j)) of row x and column j, computed for just these rows and columns."""
    row_bits = (rows[:, None] >> torch.arange(bits)) & 1  # (rows, k + 1)
    vectors = torch.cat([torch.ones(1, len(columns), dtype=torch.long),
                         (columns[None, :] >> torch.arange(bits - 1)[:, None]) & 1])  # (k + 1, columns)
    return (row_bits @ vectors) % 2


def sobol_shifts(blocks: int, cell: tuple[int, int], seed: int) -> torch.Tensor:
    """(blocks, 2) integer shifts (y, x) in [0, cell_h) x [0, cell_w): a scrambled Sobol' sequence.

    Each point is uniform on the square (scipy's ``qmc.Sobol`` scrambling: a random linear matrix
    scramble and a digital shift), so each
    shift is uniform like RISE's; together the first 2^j points stratify the square (a (0, j, 2)
    -net: with power-of-two cells every shift appears exactly once in the first cell_h * cell_w
    blocks). A longer run's shifts start with a shorter run's (the sequence is drawn once).
    """
    from scipy.stats import qmc

    exponent = max(0, math.ceil(math.log2(max(blocks, 1))))
    points = qmc.Sobol(2, scramble=True, rng=np.random.default_rng(seed)).random_base2(exponent)
    scale = np.array(cell, dtype=np.float64)
    return torch.from_numpy(np.minimum((points[:blocks] * scale).astype(np.int64), scale.astype(np.int64) - 1))


def orthogonal_runs(grid: int) -> int:
    """Masks per block of the orthogonal design for an s x s grid: 2^(k+1), 2^k >= s * s."""
    return 2 ** (max(0, math.ceil(math.log2(grid * grid))) + 1)


ORTHOGONAL_PART = 128  # masks made per call: a block of a large grid is made in parts


class OrthogonalMasks:
    """RISE masks (p = 1/2) in blocks of ``runs``: a ``make(m, gen, index)`` for ``mask_stream``.

    Block b takes :func:`strength3_array` for the grid's s * s cells, with its own random row
    order, a random choice and order of its columns and a random flip of every column (from the
    generator (seed, "rise-oa-masks", s, b)), and one shift, the block's point of
    :func:`sobol_shifts`. Each mask is exactly a RISE mask with p = 1/2 (the flips make its cells
    independent fair coins; the shift is uniform), so the estimator's limit is RISE's. Within a
    block every pattern of any three cells appears equally often and the shift is fixed: the
    block's average of f(M) M(u) is exact, not sampled, for any score f of degree <= 2 in the
    cells. What is left is the score's higher-order part and the shift's variation, which the
    Sobol' shifts stratify across blocks. A partial last block (N not a multiple of ``runs``) is
    a random subset of rows: its masks keep the distribution, not the balance.

    The array is never stored: a part of ``part`` (<= ``ORTHOGONAL_PART``) rows is computed
    from the rows' and columns' bits when asked for, so memory stays that of ``part`` masks for
    any grid. ``mask_stream`` must ask for parts in order with ``block_size = part``; its
    generator argument is not used (blocks, not parts, carry the randomness).
    """

    def __init__(self, n: int, size: tuple[int, int], grid: int, seed: int, *,
                 device: torch.device | str = "cpu", dtype=torch.float32):
        self.size, self.grid, self.seed = size, grid, seed
        self.device, self.dtype = torch.device(device), dtype
        self.cell = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
        self.runs = orthogonal_runs(grid)
        self.bits = self.runs.bit_length() - 1  # k + 1: row index bits
        self.part = min(self.runs, ORTHOGONAL_PART)
        self.shifts = sobol_shifts(max(1, math.ceil(n / self.runs)), self.cell,
                                   derive_seed(seed, "rise-oa-shifts", grid))
        self._block: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _randomisation(self, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row order, the chosen columns of the array, flips) of ``block``."""
        if self._block is None or self._block[0] != block:
            gen = generator(self.seed, "rise-oa-masks", self.grid, block)
            cells = self.grid * self.grid
            rows = torch.randperm(self.runs, generator=gen)
            columns = torch.randperm(self.runs // 2, generator=gen)[:cells]
            flips = torch.randint(0, 2, (cells,), generator=gen)
            self._block = (block, rows, columns, flips)
        return self._block[1:]

    def __call__(self, m: int, gen: torch.Generator | None, index: int) -> torch.Tensor:
        del gen  # the block's own generator is used (see the class docstring)
        if m > self.part:
            raise ValueError(f"a part holds at most {self.part} masks, asked for {m}")
        block, start = divmod(index * self.part, self.runs)
        rows, columns, flips = self._randomisation(block)
        entries = _array_entries(rows[start:start + m], columns, self.bits)
        grids = (entries ^ flips).view(m, 1, self.grid, self.grid)
        shift_y = self.shifts[block, 0].repeat(m)
        shift_x = self.shifts[block, 1].repeat(m)
        up = ((self.grid + 1) * self.cell[0], (self.grid + 1) * self.cell[1])
        return _upsample_crop(grids.to(self.device, self.dtype), self.size, up, shift_y.to(self.device),
                              shift_x.to(self.device))
