"""Every METHODS default of the explainers, pinned through the plugins (METHODS §1, §2).

A default that drifts (SmoothGrad's σ or n, IG's baseline or steps, RISE's bilinear masks or
its fill) changes every number an audit reports without failing any other test.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.fills import fill
from audit.rise_masks import generate_masks
from tests.metrics.helpers import SPEC, LinearPixelModel


class Recording(nn.Module):
    """A linear two-class model that keeps every input it is called with.

    The explainers run on a deep copy of the model (in-place ReLUs replaced); a hook's function is
    shared by reference across the copy, so its list still sees the copy's inputs.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.inner = LinearPixelModel(weight)
        self.seen: list[torch.Tensor] = []
        seen = self.seen
        self.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))

    def forward(self, x):
        return self.inner(x)


def images(b: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return SPEC.normalize(torch.rand(b, 3, 16, 16, generator=gen))


def test_smoothgrad_draws_25_copies_with_sigma_015_of_the_range():
    params = EXPLAINERS.get("smoothgrad").Params()
    assert (params.n_samples, params.noise_level) == (25, 0.15)  # PAIR defaults, METHODS §2
    x = images()
    model = Recording(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    maps = EXPLAINERS.create("smoothgrad")(model, x, torch.tensor([0, 0]), ExplainContext(SPEC, seed=3))
    # the logit is linear, so every noisy copy has the gradient w: the map is Σ_c |w| (SimpleGrad
    # reduces |·| over channels, METHODS §2), the same for both images
    expected = model.inner.weight.abs().sum(dim=1).expand(2, 16, 16)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    seen = torch.cat(model.seen)
    assert seen.shape[0] == 2 * 25
    for b in range(2):
        noise = seen[b * 25:(b + 1) * 25] - x[b]
        sigma = 0.15 * float(x[b].max() - x[b].min())
        # 19200 draws: the sample sd is within ~1 % of sigma; 0.14 or 0.16 would be ~7 % off
        assert float(noise.std()) == pytest.approx(sigma, rel=0.03)
        assert abs(float(noise.mean())) < 0.05 * sigma


def test_integrated_gradients_zero_baseline_and_50_steps():
    params = EXPLAINERS.get("integrated_gradients").Params()
    assert (params.n_steps, params.baseline) == (50, "zero")  # METHODS §2
    weight = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    model = Recording(weight)
    x = images()
    maps = EXPLAINERS.create("integrated_gradients")(model, x, torch.tensor([0, 0]), ExplainContext(SPEC))
    # a linear logit: IG from the baseline 0 is exactly (x - 0)·w, channels summed
    torch.testing.assert_close(maps, (x * weight).sum(dim=1), rtol=1e-4, atol=1e-5)
    assert sum(s.shape[0] for s in model.seen) == 50 * 2
    black = EXPLAINERS.create("integrated_gradients", {"baseline": "black"})(
        Recording(weight), x, torch.tensor([0, 0]), ExplainContext(SPEC))
    torch.testing.assert_close(black, ((x - fill("black", x, SPEC)) * weight).sum(dim=1), rtol=1e-4, atol=1e-5)


def test_rise_defaults():
    params = EXPLAINERS.get("rise").Params()
    assert (params.n_masks, params.grid, params.p) == (2000, 8, 0.5)
    assert (params.fill, params.normalize) == ("zero", "mask_sum")  # METHODS §1 prefers mask_sum


def test_rise_masks_are_bilinear_upsampled_grids_cropped_at_the_shift():
    n, size, grid, p = 6, 20, 4, 0.5
    masks = generate_masks(n, size, grid, p, torch.Generator().manual_seed(7))
    # the same draws, upsampled by F.interpolate itself (METHODS §1: bilinear to (s+1)·cell)
    gen = torch.Generator().manual_seed(7)
    cell = -(-size // grid)
    cells = (torch.rand((n, 1, grid, grid), generator=gen) < p).float()
    dy = torch.randint(0, cell, (n,), generator=gen)
    dx = torch.randint(0, cell, (n,), generator=gen)
    up = F.interpolate(cells, size=((grid + 1) * cell,) * 2, mode="bilinear", align_corners=False)
    expected = torch.stack([up[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])
    torch.testing.assert_close(masks, expected, rtol=0, atol=1e-6)
    # bilinear masks take values between 0 and 1, not just the grid's two
    assert int(((masks > 0.01) & (masks < 0.99)).sum()) > masks.numel() // 10


def test_black_fill_is_pixel_zero_not_normalised_zero():
    x = images()
    black, zero = fill("black", x, SPEC), fill("zero", x, SPEC)
    std = torch.tensor(SPEC.std).view(1, 3, 1, 1)
    mean = torch.tensor(SPEC.mean).view(1, 3, 1, 1)
    torch.testing.assert_close(black * std + mean, torch.zeros_like(x))  # pixel value 0
    torch.testing.assert_close(zero, torch.zeros_like(x))  # the data set's mean colour
    assert float((black - zero).abs().min()) > 1.0  # (0 - 0.5) / 0.25 = -2 in every channel
