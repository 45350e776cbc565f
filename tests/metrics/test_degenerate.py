"""A map constant up to float32 rounding is degenerate (issue O, item 5; audit/maps.py)."""

import pytest
import torch

from audit.maps import DEGENERATE_RTOL, FLOAT32_EPS, is_degenerate, minmax_normalize
from audit.metrics.base import METRICS
from tests.metrics.helpers import make_inputs

H = W = 16


def rounding_noise(level: float, relative: float, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(1, H, W) maps of value ``level`` with a relative spread of ``relative`` (float32 steps)."""
    gen = torch.Generator().manual_seed(seed)
    return (level * (1 + relative * torch.rand(1, H, W, generator=gen, dtype=torch.float64))).to(dtype)


def test_the_tolerance_is_64_float32_ulps():
    assert FLOAT32_EPS == 2.0**-23 and DEGENERATE_RTOL == 64 * 2.0**-23


@pytest.mark.parametrize("level", [1e-8, 0.37, 1.0, -3.0, 5e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_up_to_rounding_is_degenerate_and_a_real_spread_is_not(level, dtype):
    noisy = rounding_noise(level, 1.7e-7, dtype=dtype)  # the example: 1.7e-7 relative
    assert float(noisy.max() - noisy.min()) > 0  # not exactly constant
    assert is_degenerate(noisy).item()
    assert is_degenerate(rounding_noise(level, 20 * FLOAT32_EPS, seed=1, dtype=dtype)).item()
    assert not is_degenerate(rounding_noise(level, 1e-4, seed=2, dtype=dtype)).item()
    assert torch.equal(minmax_normalize(noisy), torch.zeros_like(noisy))


def test_a_float32_sum_that_should_be_constant_is_degenerate():
    # Σ of the same values in different orders: equal in exact arithmetic, not in float32
    gen = torch.Generator().manual_seed(3)
    terms = torch.rand(4096, generator=gen)
    shuffled = torch.stack([terms[torch.randperm(4096, generator=gen)].sum() for _ in range(H * W)])
    assert float(shuffled.max() - shuffled.min()) > 0
    assert is_degenerate(shuffled.view(1, H, W)).item()


def test_metrics_treat_a_rounding_noise_map_as_degenerate():
    noisy = rounding_noise(0.5, 1.7e-7).expand(2, H, W).clone()
    truth = torch.zeros(2, H, W, dtype=torch.bool)
    truth[:, 4:8, 4:8] = True
    x = torch.zeros(2, 3, H, W)
    gen = torch.Generator().manual_seed(4)
    real = torch.rand(2, H, W, generator=gen)
    pointing = METRICS.create("pointing_game").compute(make_inputs(x, map_clean=noisy, truth=truth))
    assert pointing.status == ["degenerate"] * 2 and pointing.values.tolist() == [0.0, 0.0]
    spearman = METRICS.create("spearman").compute(make_inputs(x, map_clean=real, map_attacked=noisy))
    assert spearman.status == ["degenerate"] * 2 and spearman.values.tolist() == [0.0, 0.0]
