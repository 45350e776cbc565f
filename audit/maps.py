"""Small facts about saliency maps shared by explainers and metrics (METHODS §0).

Degenerate maps (METHODS §0, with the tolerance float32 justifies). Explainers compute in
float32, whose unit roundoff is ε = 2⁻²³ ≈ 1.19e-7: a map that is constant in exact arithmetic
comes back with a spread of a few ε times its magnitude (each value carries the rounding of the
operations that made it, e.g. a sum of products over mask draws or channels). METHODS' 1e-12 is
below one float32 ulp, so such a map would be ranked by its rounding noise. A map counts as
degenerate when max − min ≤ ``DEGENERATE_RTOL`` · max(|min|, |max|) with
``DEGENERATE_RTOL`` = 64 ε ≈ 7.6e-6: room for the rounding of a few dozen chained float32
operations (or √N growth over thousands of summed terms), still ~10⁵× below the spread of any
map that ranks pixels by what the model does. The test is the same for float64 maps, because the
maps are float32-made; a map whose every value is 0 is degenerate too.

Non-finite maps (NaN or ±inf) are not degenerate: they are an explainer failure. The engine
marks every cell that reads such a map ``error`` (reason "explainer returned NaN/inf in K of N
pixels") before any metric sees it (:func:`nonfinite_pixels`); a metric called directly with one
treats it as degenerate so it never divides by zero, but its number means nothing.
"""

from __future__ import annotations

import torch

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 2**-23
# A map whose value range is at most this fraction of its magnitude carries no ranking.
DEGENERATE_RTOL = 64 * FLOAT32_EPS


def value_range(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = maps.flatten(1)
    return flat.amin(dim=1), flat.amax(dim=1)


def nonfinite_pixels(maps: torch.Tensor) -> torch.Tensor:
    """(B,) long: how many pixels of each (B, H, W) map are NaN or ±inf."""
    return (~torch.isfinite(maps.detach())).flatten(1).sum(dim=1)


def is_degenerate(maps: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where a (B, H, W) map is constant up to float32 rounding (see the module
    docstring: span ≤ 64·ε_float32·magnitude) or not finite, and so has no ranking."""
    low, high = value_range(maps.detach())
    scale = torch.maximum(low.abs(), high.abs())
    finite = torch.isfinite(maps.detach().flatten(1)).all(dim=1)
    return ~finite | (scale == 0) | ((high - low) <= DEGENERATE_RTOL * scale)


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a degenerate map becomes all zeros (never NaN)."""
    low, high = value_range(maps)
    span = (high - low).view(-1, *([1] * (maps.dim() - 1)))
    out = (maps - low.view_as(span)) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(is_degenerate(maps).view_as(span), torch.zeros_like(out), out)
