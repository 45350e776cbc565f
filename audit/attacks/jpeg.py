"""Benign JPEG compression of the input (METHODS §5), through Pillow's libjpeg codec.

Each image is taken to 8-bit pixels (round, clip to [0, 255]), saved by Pillow as JPEG at
``quality`` (1–100, libjpeg's scale; Pillow's default 4:2:0 chroma subsampling) and decoded
again, on the CPU, one image at a time (so a batch gives the same as its images alone). The result is in
[0, 1] by construction. No randomness.

Evasion / detection: not an attack on the model; JPEG is also a classic (weak) *defence*
against adversarial noise, since it removes high frequencies — a map that moves a lot under
quality 75 is fragile under everyday storage. Blocking artefacts make it visible at low quality.

Source: Dziugaite et al. 2016 and Guo et al. 2018 (JPEG as input transformation); libjpeg.
"""

from __future__ import annotations

import io

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params


class JPEGParams(Params):
    quality: int = Field(75, ge=1, le=100, description="libjpeg quality 1..100 (100: least loss)")


@ATTACKS.register("jpeg")
class JPEG(Attack):
    """Benign JPEG round trip at `quality` (Pillow/libjpeg, 8-bit, one image at a time)."""

    Params = JPEGParams
    kind = "input"

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 colour channels, the model takes {x.shape[1]}")
        pixels = ctx.spec.denormalize(x.detach()).cpu()
        images = (pixels * 255).round().clamp(0, 255).to(torch.uint8)
        out = [self._round_trip(image) for image in images]
        decoded = torch.stack(out).to(x.dtype) / 255 if out else pixels
        return ctx.spec.normalize(decoded.to(x.device))

    def _round_trip(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) uint8 -> JPEG bytes at ``quality`` -> (C, H, W) uint8."""
        import numpy as np
        from PIL import Image

        array = image.permute(1, 2, 0).numpy()
        mode = "RGB" if array.shape[2] == 3 else "L"
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if mode == "L" else array).save(
            buffer, format="JPEG", quality=self.params.quality)
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert(mode))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        return torch.from_numpy(decoded.copy()).permute(2, 0, 1)
