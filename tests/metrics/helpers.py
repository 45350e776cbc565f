"""Small models and inputs with known answers for the metric tests."""

from __future__ import annotations

import torch
from torch import nn

from audit.metrics.base import MetricInputs
from audit.spec import InputSpec

SPEC = InputSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class LinearPixelModel(nn.Module):
    """Two classes; logit of class 0 = Σ weight·x over pixels and channels, class 1 = 0.

    So f_0 = sigmoid(Σ weight·x): the pixels that matter are exactly those with large |weight|.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        score = (x * self.weight).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class ConstantModel(nn.Module):
    """Ignores its input: fixed logits for every image (a known probability)."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1).clone()


def tiny_cnn(classes: int = 3, seed: int = 0) -> nn.Module:
    """A seeded random small CNN that works at any resolution."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))
    return model.eval()


def make_inputs(x: torch.Tensor, model: nn.Module | None = None, map_clean: torch.Tensor | None = None,
                map_attacked: torch.Tensor | None = None, target: torch.Tensor | None = None,
                truth: torch.Tensor | None = None, seed: int = 0, sample_ids=None,
                spec: InputSpec | None = None, **extra) -> MetricInputs:
    b = x.shape[0]
    model = model if model is not None else tiny_cnn()
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    target = target if target is not None else predicted
    if map_attacked is None:
        map_attacked = map_clean
    return MetricInputs(spec=spec or SPEC, x=x, x_attacked=x, model=model, attacked_model=model,
                        target=target, labels=target.clone(), predicted=predicted,
                        predicted_attacked=predicted, map=map_clean, map_attacked=map_attacked,
                        truth=truth, seed=seed,
                        sample_ids=tuple(range(b)) if sample_ids is None else tuple(sample_ids), **extra)


def spot_map(b: int, h: int, w: int, rows, cols, value: float = 1.0) -> torch.Tensor:
    """(B, H, W) zero maps with ``value`` at (rows[i], cols[i])."""
    maps = torch.zeros(b, h, w)
    maps[torch.arange(b), torch.as_tensor(rows), torch.as_tensor(cols)] = value
    return maps


class ProbabilityModel(nn.Module):
    """Two classes whose class-0 softmax probability is exactly ``prob(x)`` (clamped to
    [1e-6, 1 − 1e-6]): logits (log p, log(1 − p)). Subclasses define ``prob``."""

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.prob(x).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log(p), torch.log1p(-p)], dim=1)


class BandModel(ProbabilityModel):
    """Reads a bright band through a saturated tanh plus a faint patch linearly (issue O's model).

    p = 0.02 + 0.9·mean_band tanh(20·x₀) + 0.06·mean_patch x₀ / patch_level, x₀ channel 0. On
    the band x₀ = 1, so tanh(20) rounds to 1 in float32 and the input gradient there is exactly
    0: the gradient map is zero everywhere but on the patch, although the band carries 90 % of
    the evidence. Deleting (zeroing) band pixels lowers p linearly in their number.
    """

    def __init__(self, band: torch.Tensor, patch: torch.Tensor, patch_level: float = 0.2):
        super().__init__()
        self.register_buffer("band", band.float())
        self.register_buffer("patch", patch.float())
        self.patch_level = patch_level

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0]
        band = (torch.tanh(20 * x0) * self.band).flatten(1).sum(1) / self.band.sum()
        patch = (x0 * self.patch).flatten(1).sum(1) / self.patch.sum() / self.patch_level
        return 0.02 + 0.9 * band + 0.06 * patch

    @staticmethod
    def scene(size: int, band_rows: slice, patch_rows: slice, patch_cols: slice, patch_level: float = 0.2):
        """(model, x (1, 3, S, S)): band pixels 1, patch pixels ``patch_level``, the rest 0."""
        band = torch.zeros(size, size)
        band[band_rows] = 1
        patch = torch.zeros(size, size)
        patch[patch_rows, patch_cols] = 1
        x = (band + patch_level * patch).expand(1, 3, size, size).clone()
        return BandModel(band, patch, patch_level).eval(), x


class LinearProbabilityModel(ProbabilityModel):
    """p = bias + Σ weight·x₀ (channel 0): exactly linear in the pixels kept."""

    def __init__(self, weight: torch.Tensor, bias: float):
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.bias = bias

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + (x[:, 0] * self.weight).flatten(1).sum(1)
