"""What a model expects as input: resolution and per-channel normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InputSpec:
    """Input resolution and the normalisation x = (pixels - mean) / std the model expects.

    Explainers, attacks and metrics work on normalised tensors (the model's input space); they
    use this to reach pixel space, e.g. for a black fill or to clip to the valid pixel range.
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Clip a normalised tensor to the valid pixel range [0, 1]."""
        return self.normalize(self.denormalize(x).clamp(0.0, 1.0))

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}
