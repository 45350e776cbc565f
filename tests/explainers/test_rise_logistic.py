"""RISE's logistic control variate: the fit, the limit, the gain on a saturating model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from audit.explainers.rise import RiseParams, rise_maps
from audit.explainers.rise_logistic import LogisticControlVariate
from audit.maps import is_degenerate
from audit.spec import InputSpec
from tests.explainers.rise_helpers import Constant, exact_limit, small_nonlinear_model

SPEC = InputSpec(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class LogisticInFeatures(nn.Module):
    """Two classes, q = sigmoid(a + w . quadrant means): exactly the surrogate's family when the
    masked image is the mask (x = 1, fill zero) and the feature grid is 2."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.w = torch.tensor([3.0, -2.0, 1.5, 4.0]) * scale
        self.a = -1.0 * scale

    def forward(self, x):
        z = F.adaptive_avg_pool2d(x[:, :1], 2).flatten(1)
        logit = self.a + z @ self.w
        return torch.stack([F.logsigmoid(logit), F.logsigmoid(-logit)], dim=1)


def test_the_fit_recovers_a_logistic_score():
    model, gen = LogisticInFeatures(), torch.Generator().manual_seed(0)
    masks = (torch.rand(600, 1, 8, 8, generator=gen) < 0.5).float()
    with torch.no_grad():
        f = model(masks).softmax(1)[:, 0]
    cv = LogisticControlVariate(1, 2, ridge=0.0)
    cv.add_masks(masks)
    cv.add_scores(0, f)
    cv.fit()
    torch.testing.assert_close(cv.surrogate(masks)[0], f.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("design", "tolerance"), [("orthogonal", 0.01), ("iid", 0.02)])
def test_converges_to_the_rise_limit(design, tolerance):
    """4096 masks: i.i.d. plain RISE is off by 2.5 % of the map's spread here, orthogonal 0.35 %."""
    model = small_nonlinear_model()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1])
    limit = exact_limit(model, x, 2, target=1)
    params = RiseParams(n_masks=4096, grid=2, design=design, estimator="logistic_control_variate", cv_grid=2,
                        cv_samples=4, batch_size=512)
    ours = rise_maps(model, x, target, SPEC, params, seed=7)[0]
    spread = float(limit.max() - limit.min())
    assert float((ours - limit).abs().max()) < tolerance * spread


def test_far_fewer_masks_on_a_saturating_model():
    """Against the exact limit, 128 masks with the surrogate beat 128 without, design fixed."""
    model, x = LogisticInFeatures(scale=2.0), torch.ones(1, 3, 8, 8)
    target = torch.zeros(1, dtype=torch.long)
    limit = exact_limit(model, x, 2)
    errors = {}
    for estimator in ("plain", "logistic_control_variate"):
        params = RiseParams(n_masks=128, grid=2, cv_grid=2, cv_ridge=0.0, estimator=estimator, design="iid")
        maps = [rise_maps(model, x, target, SPEC, params, seed=s)[0] for s in range(4)]
        errors[estimator] = sum(float((m - limit).pow(2).mean()) for m in maps)
    assert errors["logistic_control_variate"] < 0.1 * errors["plain"], errors


def test_constant_model_stays_degenerate_and_expectation_is_refused():
    params = RiseParams(n_masks=64, grid=2, estimator="logistic_control_variate")
    maps = rise_maps(Constant(3), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), SPEC, params, seed=0)
    assert torch.isfinite(maps).all() and is_degenerate(maps).all()
    torch.testing.assert_close(maps, torch.full_like(maps, 1 / 3), rtol=0, atol=1e-6)
    with pytest.raises(ValidationError, match="mask_sum"):
        RiseParams(estimator="logistic_control_variate", normalize="expectation")


def test_batch_size_and_image_batch_do_not_change_the_map():
    model = small_nonlinear_model()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 2])
    params = RiseParams(n_masks=100, grid=2, estimator="logistic_control_variate", cv_grid=2)
    both = rise_maps(model, x, target, SPEC, params.model_copy(update={"batch_size": 7}), seed=1)
    one = rise_maps(model, x[1:], target[1:], SPEC, params.model_copy(update={"batch_size": 100}), seed=1)
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-7)


def test_the_surrogate_sees_its_own_masks_not_the_runs():
    """With as many extra masks as run masks, the same masks would cancel: the map would be plain."""
    model, x = LogisticInFeatures(), torch.ones(1, 3, 8, 8)
    target = torch.zeros(1, dtype=torch.long)
    base = dict(n_masks=64, grid=2, cv_grid=2, design="iid")
    plain = rise_maps(model, x, target, SPEC, RiseParams(**base), seed=1)
    ours = rise_maps(model, x, target, SPEC, RiseParams(**base, estimator="logistic_control_variate",
                                                        cv_samples=1), seed=1)
    assert (ours - plain).abs().max() > 1e-4
