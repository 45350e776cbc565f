"""The control-variate RISE estimator: exact mask moments, same limit, less noise."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from audit.explainers.rise import RiseParams, rise_maps
from audit.explainers.rise_cv import features, mask_moments
from audit.maps import is_degenerate
from audit.rise_masks import generate_masks
from audit.spec import InputSpec
from tests.explainers.rise_helpers import Constant

SPEC = InputSpec(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalised == pixels


@pytest.mark.parametrize("size, grid, p, feature_grid", [(16, 4, 0.5, 4), (20, 3, 0.3, 5)])
def test_mask_moments_match_monte_carlo(size, grid, p, feature_grid):
    conditional, mean = mask_moments(size, size, grid, p, feature_grid)
    gen = torch.Generator().manual_seed(0)
    masks = torch.cat([generate_masks(4000, size, grid, p, gen) for _ in range(10)]).double()
    z = features(masks, feature_grid)
    sampled_mean = masks.flatten(1).mean(0)
    sampled = (z.T @ masks.flatten(1)) / masks.shape[0] / sampled_mean
    # 40k masks: Monte Carlo error ~ 0.5 / sqrt(40k) = 0.0025 per entry
    assert (sampled_mean - mean).abs().max() < 0.012
    assert (sampled - conditional).abs().max() < 0.02


class LinearInFeatures(nn.Module):
    """Class 0's probability is q = 0.2 + 0.6 * (w . pooled image), exactly (two classes)."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid
        w = torch.rand(grid * grid, generator=torch.Generator().manual_seed(3))
        self.register_buffer("w", w / w.sum())

    def forward(self, x):
        q = 0.2 + 0.6 * (F.adaptive_avg_pool2d(x[:, :1], self.grid).flatten(1) @ self.w)
        return torch.stack([q.log(), (1 - q).log()], dim=1)


def test_control_variate_is_exact_for_a_model_linear_in_the_features():
    """Residuals are zero, so the estimate is the exact limit E[f M(u)] / E[M(u)] at any N."""
    model = LinearInFeatures(4)
    x = torch.ones(1, 3, 16, 16)  # with fill zero the masked image is the mask itself
    target = torch.zeros(1, dtype=torch.long)
    conditional, _ = mask_moments(16, 16, 4, 0.5, 4)
    w = model.w.double()
    expected = (0.2 + 0.6 * (w @ conditional)).view(16, 16)  # E[q M(u)] / E[M(u)], exactly
    base = dict(n_masks=100, grid=4, p=0.5, batch_size=50, cv_grid=4, cv_ridge=0.0, design="iid")
    cv = rise_maps(model, x, target, SPEC, RiseParams(**base, estimator="control_variate"), seed=1)[0]
    plain = rise_maps(model, x, target, SPEC, RiseParams(**base), seed=1)[0]
    torch.testing.assert_close(cv, expected, rtol=0, atol=1e-6)
    assert (plain - expected).abs().max() > 100 * (cv - expected).abs().max()


def test_control_variate_converges_to_the_plain_limit():
    """On a nonlinear model, CV with few masks is nearer a long plain run than plain with as few."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1])
    base = dict(grid=4, p=0.5, batch_size=200, cv_grid=4, design="iid")
    long = rise_maps(model, x, target, SPEC, RiseParams(n_masks=12000, **base), seed=5)
    errors = {}
    for estimator in ("plain", "control_variate"):
        short = [rise_maps(model, x, target, SPEC, RiseParams(n_masks=200, estimator=estimator, **base),
                           seed=s) for s in range(4)]
        errors[estimator] = sum(float((m - long).pow(2).mean()) for m in short)
    assert errors["control_variate"] < 0.5 * errors["plain"], errors


def test_constant_model_still_degenerate_and_expectation_rejected():
    maps = rise_maps(Constant(3), torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), SPEC,
                     RiseParams(n_masks=60, grid=4, estimator="control_variate"), seed=0)
    assert torch.isfinite(maps).all() and is_degenerate(maps).all()
    with pytest.raises(ValidationError, match="mask_sum"):
        RiseParams(estimator="control_variate", normalize="expectation")
