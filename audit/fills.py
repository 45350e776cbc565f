"""What occluded pixels are replaced with: the "fill" of RISE-style masking.

The fill is exactly what a gating attacker keys on (METHODS §1, §3), so every fill a user may
choose is here and shared by RISE, the discriminator training of the gate attack and the
reference model's occlusion augmentation. All fills work on normalised (B, C, H, W) tensors.
``dabkowski`` is Dabkowski & Gal's randomised evidence removal (seed 002; the
``realtime_saliency`` explainer trains with it), also a RISE fill, so RISE can use the same
randomised removal against a gate keyed on one fill.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from audit.spec import InputSpec

FillName = Literal["zero", "black", "mean", "blur", "noise", "random_color", "dabkowski"]
FILLS: tuple[str, ...] = ("zero", "black", "mean", "blur", "noise", "random_color", "dabkowski")
# fills drawn at random (a generator feeds them; every call draws anew)
RANDOM_FILLS: tuple[str, ...] = ("noise", "random_color", "dabkowski")

# Dabkowski & Gal's randomised evidence removal (seed 002, METHODS §7; *ref code* values, read on
# their [-1, 1] image scale and restated here in pixel units [0, 1])
DABKOWSKI_BLUR_SIGMA = 10.0  # pixels (paper: σ = 10; ref code σ = 11)
DABKOWSKI_BLUR_KERNEL = 55  # taps (ref code)
DABKOWSKI_COLOUR_RANGE = 0.165  # colour U(0.5 ± 0.165): ref code U(-0.33, 0.33) on [-1, 1]
DABKOWSKI_NOISE_STD = 0.055  # ref code 0.11 on [-1, 1]


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


def dabkowski_fill(x: torch.Tensor, spec: InputSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """Dabkowski & Gal's randomised alternative image A for a batch ``x`` (B, C, H, W), normalised.

    Per image, drawn anew on every call (seed 002 §4.1, METHODS §7): with probability ½ a strong
    Gaussian blur of the image (σ = 10 px, 55 taps, the paper's σ kept at every image size: it
    is meant to remove the evidence, not to smooth it), else one random colour, uniform in
    0.5 ± 0.165 per channel in pixel space, plus Gaussian noise of standard deviation 0.055
    per pixel (the reference code's U(-0.33, 0.33) and 0.11 on a [-1, 1] image). Returned in
    the normalised space of ``spec``, same shape, dtype and device as ``x``. Randomness comes
    from ``gen`` (CPU or on ``x``'s device; the global generator if None).
    """
    b, c = x.shape[:2]
    where = gen.device if gen is not None else x.device
    use_blur = torch.rand((b,), generator=gen, device=where) < 0.5
    colour = 0.5 + DABKOWSKI_COLOUR_RANGE * (2 * torch.rand((b, c, 1, 1), generator=gen, device=where) - 1)
    noise = DABKOWSKI_NOISE_STD * torch.randn(x.shape, generator=gen, device=where)
    random = spec.normalize((colour + noise).to(device=x.device, dtype=x.dtype))
    if b > 1 and x.stride(0) == 0:  # one image repeated (RISE's expanded copies): blur it once
        blurred = gaussian_blur(x[:1], sigma=DABKOWSKI_BLUR_SIGMA, kernel_size=DABKOWSKI_BLUR_KERNEL).expand_as(x)
    else:
        blurred = gaussian_blur(x, sigma=DABKOWSKI_BLUR_SIGMA, kernel_size=DABKOWSKI_BLUR_KERNEL)
    return torch.where(use_blur.to(x.device).view(b, 1, 1, 1), blurred, random)


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
    if kind == "dabkowski":
        return dabkowski_fill(x, spec, gen)
    raise ValueError(f"unknown fill {kind!r}; use one of {', '.join(FILLS)}")
