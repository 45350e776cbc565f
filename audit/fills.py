"""What occluded pixels are replaced with: the "fill" of RISE-style masking.

The fill is exactly what a gating attacker keys on (METHODS §1, §3), so every fill a user may
choose is here and shared by RISE, the discriminator training of the gate attack and the
reference model's occlusion augmentation. All fills work on normalised (B, C, H, W) tensors.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from audit.spec import InputSpec

FillName = Literal["zero", "black", "mean", "blur", "noise", "random_color"]
FILLS: tuple[str, ...] = ("zero", "black", "mean", "blur", "noise", "random_color")


def gaussian_kernel1d(sigma: float, size: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor with reflect padding."""
    k = gaussian_kernel1d(sigma, kernel_size, dtype=x.dtype, device=x.device)
    c = x.shape[1]
    pad = kernel_size // 2
    # reflect padding needs pad < size; fall back to replicate for tiny inputs
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    out = F.pad(x, (pad, pad, 0, 0), mode=mode)
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, pad, pad), mode=mode)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def fill(kind: str, x: torch.Tensor, spec: InputSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """The replacement image A for the batch ``x`` (normalised), same shape as ``x``."""
    if kind == "zero":  # normalised 0: the data set's mean colour
        return torch.zeros_like(x)
    if kind == "black":
        return spec.normalize(torch.zeros_like(x))
    if kind == "mean":  # each image's own mean colour
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x, sigma=5.0, kernel_size=11)
    if kind == "noise":
        noise = torch.rand(x.shape, generator=gen, device=gen.device if gen else x.device)
        return spec.normalize(noise.to(device=x.device, dtype=x.dtype))
    if kind == "random_color":
        colour = torch.rand((x.shape[0], x.shape[1], 1, 1), generator=gen,
                            device=gen.device if gen else x.device)
        return spec.normalize(colour.to(device=x.device, dtype=x.dtype).expand_as(x).clone())
    raise ValueError(f"unknown fill {kind!r}; use one of {', '.join(FILLS)}")
