"""RISE with fewer model calls: a linear control variate on coarse mask features.

Plain (self-normalised) RISE estimates, for every pixel u, S(u) = E[f M(u)] / E[M(u)] by
A(u) / T(u) with A = sum_i f_i M_i(u), T = sum_i M_i(u). Much of the sampling noise is the model
reacting to the *other* occluded regions: f_i varies with the whole mask, not only with M_i(u).
A linear surrogate g(M) = b0 + beta . Z(M) of coarse features Z (the mask averaged over an
s' x s' grid of image blocks), fitted by ridge regression to the (f_i, Z_i) already computed,
explains that part; its own conditional mean is known in closed form, so it need not be sampled:

    S_cv(u) = sum_i (f_i - g_i) M_i(u) / T(u) + E[g M(u)] / E[M(u)]
            = A(u) / T(u) + beta . (E[Z M(u)] / E[M(u)] - Q(u) / T(u)),   Q = sum_i Z_i M_i(u).

b0 cancels. The estimator has the same limit as plain RISE for any fixed beta (control variates
are unbiased); fitting beta on the same samples adds an O(1/N) bias. E[Z M(u)] and E[M(u)]
follow exactly from the mask distribution (independent Bernoulli(p) cells, separable bilinear
upsampling, uniform shifts), per image axis, so they cost no model calls and no extra masks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from audit.rise_masks import _interpolation_rows


def features(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """(m, grid * grid): each mask averaged over a grid x grid partition of the image."""
    return F.adaptive_avg_pool2d(masks[:, :1], grid).flatten(1)


def _axis_moments(length: int, grid: int, feature_grid: int, dtype=torch.float64):
    """Per-axis pieces of E[M(u)] and E[Z_c M(u)] for one image axis (averaged over shifts)."""
    cell = -(-length // grid)
    rows = _interpolation_rows(grid, (grid + 1) * cell, length, "cpu", dtype)[:cell]  # (shift, u, g)
    # the feature's average over its block of u, like adaptive_avg_pool (separable per axis)
    pooled = F.adaptive_avg_pool1d(rows.permute(0, 2, 1), feature_grid).permute(0, 2, 1)  # (shift, c, g)
    cross = torch.einsum("scg,sug->cu", pooled, rows) / cell  # E_shift[sum_g pooled_g rows_g]
    product = torch.einsum("sc,su->cu", pooled.sum(-1), rows.sum(-1)) / cell
    mean = rows.sum(-1).mean(0)  # E_shift[sum_g rows_g]
    return cross, product, mean


@functools.lru_cache(maxsize=16)
def mask_moments(height: int, width: int, grid: int, p: float, feature_grid: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[Z M(u)] / E[M(u)] as (F, H*W), E[M(u)] as (H*W,)) for RISE masks, exactly (float64).

    M(u) = sum_g a_u[g] G[g] and Z_c = sum_g b_c[g] G[g] for a fixed shift, with independent
    cells: E[G_g G_g'] = p^2 + p (1 - p) [g = g'], so E[Z_c M(u)] = p(1-p) b_c.a_u + p^2 (sum b_c)
    (sum a_u); a and b factor into a row part and a column part, and so do the shift averages.
    """
    y_cross, y_prod, y_mean = _axis_moments(height, grid, feature_grid)
    x_cross, x_prod, x_mean = _axis_moments(width, grid, feature_grid)
    joint = (p * (1 - p) * torch.einsum("cu,dv->cduv", y_cross, x_cross)
             + p * p * torch.einsum("cu,dv->cduv", y_prod, x_prod))
    mean = p * torch.outer(y_mean, x_mean).flatten()
    joint = joint.reshape(feature_grid * feature_grid, height * width)
    return joint / mean, mean


def ridge(z: torch.Tensor, f: torch.Tensor, strength: float) -> torch.Tensor:
    """beta of f ~ b0 + beta . z by ridge regression (intercept free), float64."""
    z, f = z.to(torch.float64), f.to(torch.float64)
    zc, fc = z - z.mean(0), f - f.mean()
    gram = zc.T @ zc
    scale = gram.diagonal().mean().clamp_min(1e-300)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + strength * scale * eye, zc.T @ fc)


class ControlVariate:
    """Collects Z_i, f_i and Q = sum_i Z_i M_i(u) during a RISE pass; corrects the map after."""

    def __init__(self, batch: int, height: int, width: int, grid: int, p: float, feature_grid: int,
                 strength: float, device: torch.device):
        self.feature_grid, self.strength = feature_grid, strength
        self.shape, self.grid, self.p = (height, width), grid, p
        self.z: list[torch.Tensor] = []
        self.f: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        self.q = torch.zeros(feature_grid * feature_grid, height * width, dtype=torch.float64,
                             device=device)

    def add_masks(self, masks: torch.Tensor) -> None:
        z = features(masks, self.feature_grid)
        self.z.append(z.to(torch.float64))
        self.q += (z.T @ masks[:, 0].flatten(1)).to(torch.float64)

    def add_scores(self, image: int, scores: torch.Tensor) -> None:
        self.f[image].append(scores.detach().to(torch.float64))

    def correction(self, mask_total: torch.Tensor) -> torch.Tensor:
        """(B, H*W): beta_b . (E[Z M(u)] / E[M(u)] - Q(u) / T(u)) for every image b."""
        conditional, _ = mask_moments(*self.shape, self.grid, self.p, self.feature_grid)
        conditional = conditional.to(self.q.device)
        sampled = self.q / mask_total.clamp_min(1e-300)[None, :]
        gap = torch.where(mask_total[None, :] > 0, conditional - sampled, torch.zeros_like(sampled))
        z = torch.cat(self.z)
        betas = torch.stack([ridge(z, torch.cat(f), self.strength) for f in self.f])  # (B, F)
        return betas @ gap
