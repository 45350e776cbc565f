"""Fooling penalties L_F of adversarial model manipulation (Heo et al. 2019, METHODS §4).

Differentiable in the manipulated model's map ``h`` (B, l, l); the original model's maps are
constants. Every function returns the batch mean (a scalar tensor) and is a pure formula: the
attack (:mod:`audit.attacks.manipulation`) computes the maps. Maps are normalised first
(:func:`normalize`): Grad-CAM-like unsigned maps by their maximum (Heo: ReLU(Σ α_k A_k)/max),
signed maps (LRP) min–max.

The test losses that decide success at evaluation time are the ``fsr`` metric's
(:mod:`audit.metrics.fsr`); these training losses share their frame, top-k and centre-of-mass
definitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Keeps a map that is exactly 0 everywhere (e.g. Grad-CAM whose ReLU cut every cell) at 0
# instead of NaN; small against any map that carries a ranking.
EPS = 1e-12


def leaky_relu_gradient(z: torch.Tensor, slope: float) -> torch.Tensor:
    """ReLU(z) in value; in the backward pass gradient 1 where z > 0 and ``slope`` where z ≤ 0.

    Grad-CAM's ReLU gives cells with negative pre-activation zero gradient, so a penalty that
    wants mass there (location: the frame; center-mass: anywhere away from the object) cannot
    raise them: measured on the reference model, location fooling left every circle and ring
    image unfooled — their frame cells sat below zero, ReLU-cut, and only sank further. The
    leak lets the penalty's gradient reach them while the loss value stays Heo et al.'s exact
    ReLU map. ``slope`` 0: the plain ReLU gradient.
    """
    relu = F.relu(z)
    if slope == 0:
        return relu
    negative = (z <= 0).to(z.dtype)
    return relu + slope * negative * (z - z.detach())


def normalize(maps: torch.Tensor, signed: bool) -> torch.Tensor:
    """(B, H, W) maps scaled into [0, 1]: min–max where ``signed``, else divided by the maximum
    (unsigned maps are ≥ 0; their zero stays zero). Differentiable; an all-zero map stays 0."""
    flat = maps.flatten(1)
    high = flat.amax(dim=1).view(-1, 1, 1)
    if signed:
        low = flat.amin(dim=1).view(-1, 1, 1)
        return (maps - low) / (high - low + EPS)
    return maps / (high + EPS)


def pool(maps: torch.Tensor, side: int | None) -> torch.Tensor:
    """(B, H, W) maps average-pooled to (B, side, side); ``None`` or the same size: unchanged."""
    if side is None or tuple(maps.shape[-2:]) == (side, side):
        return maps
    return F.adaptive_avg_pool2d(maps.unsqueeze(1), (side, side)).squeeze(1)


def frame(h: int, w: int, width: int | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W): 1 on a border frame, 0 inside. Width max(1, ⌊side/7⌋) per axis unless given
    (METHODS §4; the ``fsr`` metric's ``frame_mask`` uses the same default)."""
    top = width if width is not None else max(1, h // 7)
    side = width if width is not None else max(1, w // 7)
    m = torch.ones(h, w, device=device, dtype=dtype)
    if h > 2 * top and w > 2 * side:
        m[top:h - top, side:w - side] = 0.0
    return m


def location_penalty(h: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Location fooling: mean over images and cells of (h − m)², m the border frame."""
    m = frame(*h.shape[-2:], width=width, device=h.device, dtype=h.dtype)
    return ((h - m) ** 2).mean()


def topk_cells(original: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, H, W) bool: the top ``fraction`` cells (at least one) of each original map; ties by index."""
    flat = original.flatten(1)
    k = max(1, min(flat.shape[1], round(fraction * flat.shape[1])))
    # a stable descending sort breaks ties by position, as the top-k metrics do
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
    return chosen.view_as(original)


def topk_penalty(h: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Top-k fooling: mean over images of mean_{j∈P} h_j², P = ``chosen`` (the original's top k)."""
    per_image = (h * h * chosen).flatten(1).sum(dim=1) / chosen.flatten(1).sum(dim=1)
    return per_image.mean()


def center_of_mass(h: torch.Tensor) -> torch.Tensor:
    """(B, 2) (row, col) centre of mass Σ i·h / Σ h of non-negative maps, in cells; a map
    with no mass has its centre at the middle."""
    b, rows, cols = h.shape
    i = torch.arange(rows, device=h.device, dtype=h.dtype).view(1, rows, 1)
    j = torch.arange(cols, device=h.device, dtype=h.dtype).view(1, 1, cols)
    total = h.sum(dim=(1, 2))
    empty = total <= EPS
    safe = torch.where(empty, torch.ones_like(total), total)
    centre = torch.stack([(h * i).sum(dim=(1, 2)) / safe, (h * j).sum(dim=(1, 2)) / safe], dim=1)
    middle = torch.tensor([(rows - 1) / 2, (cols - 1) / 2], device=h.device, dtype=h.dtype)
    return torch.where(empty.view(-1, 1), middle.expand_as(centre), centre)


def center_mass_penalty(h: torch.Tensor, original_centre: torch.Tensor) -> torch.Tensor:
    """Center-mass fooling: −mean ‖C(h) − C(h₀)‖₁ (lower is further away), in cells."""
    return -(center_of_mass(h) - original_centre).abs().sum(dim=1).mean()


def active_penalty(h_c1: torch.Tensor, h_c2: torch.Tensor, original_c1: torch.Tensor,
                   original_c2: torch.Tensor) -> torch.Tensor:
    """Active fooling: ½[MSE(h_c₁(w), h_c₂(w₀)) + MSE(h_c₂(w), h_c₁(w₀))]."""
    return 0.5 * (F.mse_loss(h_c1, original_c2) + F.mse_loss(h_c2, original_c1))
