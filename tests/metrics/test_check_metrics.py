"""The check's two new metrics: explainer_agreement and aopc_gap (known answers, independent
computations)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from audit.metrics.base import METRICS
from audit.testing import PROB_ATOL
from tests.metrics.helpers import LinearPixelModel, make_inputs

H = W = 16


def agreement(maps, reference, **params):
    x = torch.rand(maps.shape[0], 3, H, W)
    inputs = make_inputs(x, map_clean=maps, map_reference=reference)
    return METRICS.create("explainer_agreement", {"reference": "rise", **params}).compute(inputs)


def test_agreement_is_scipys_spearman_of_the_pooled_maps():
    gen = torch.Generator().manual_seed(0)
    maps, reference = torch.rand(4, H, W, generator=gen), torch.rand(4, H, W, generator=gen)
    result = agreement(maps, reference, resolution=4)
    pooled = F.avg_pool2d(maps[:, None], 4)[:, 0].flatten(1).numpy()
    pooled_ref = F.avg_pool2d(reference[:, None], 4)[:, 0].flatten(1).numpy()
    expected = [spearmanr(a, b).statistic for a, b in zip(pooled, pooled_ref, strict=True)]
    np.testing.assert_allclose(result.values.numpy(), expected, rtol=1e-9)
    pixels = agreement(maps, reference, resolution=None)
    expected = [spearmanr(a, b).statistic for a, b in zip(maps.flatten(1).numpy(), reference.flatten(1).numpy(),
                                                          strict=True)]
    np.testing.assert_allclose(pixels.values.numpy(), expected, rtol=1e-9)


def test_agreement_known_answers():
    coarse = torch.arange(16.0).view(1, 4, 4)
    smooth = F.interpolate(coarse[:, None], size=(H, W), mode="nearest")[:, 0]
    noisy = smooth + 0.01 * torch.rand(1, H, W)  # detail finer than the grid: the same ranking
    assert agreement(noisy, smooth, resolution=4).values.tolist() == [1.0]
    assert agreement(-noisy, smooth, resolution=4).values.tolist() == [-1.0]
    # |maps|: a sign flip is not a disagreement
    assert agreement(-noisy, smooth, resolution=4, abs=True).values.tolist() == [1.0]


def test_agreement_with_a_constant_map_is_zero_and_degenerate():
    maps = torch.rand(2, H, W)
    reference = torch.stack([torch.full((H, W), 0.3), torch.rand(H, W)])
    result = agreement(maps, reference)
    assert result.values[0].item() == 0.0 and result.status == ["degenerate", "ok"]


def test_agreement_declares_its_reference():
    metric = METRICS.create("explainer_agreement", {"reference": "rise"})
    assert metric.reference_explainer() == "rise"
    assert METRICS.create("spearman", {}).reference_explainer() is None
    with pytest.raises(RuntimeError, match="reference"):
        metric.compute(make_inputs(torch.rand(1, 3, H, W), map_clean=torch.rand(1, H, W)))


def linear_setup(b=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.rand(1, H, W, generator=gen) ** 3 * 0.01
    x = torch.rand(b, 3, H, W, generator=gen) + 0.5
    return LinearPixelModel(weight), x, weight.expand(b, H, W).clone(), torch.zeros(b, dtype=torch.long)


def test_aopc_gap_is_aopc_minus_aopc_random_per_image():
    model, x, maps, target = linear_setup()
    inputs = make_inputs(x, model, map_clean=maps, target=target, seed=5)
    gap = METRICS.create("aopc_gap", {"grid": 4, "steps": 6}).compute(inputs)
    params = {"region_size": 4, "steps": 6}
    morf = METRICS.create("aopc", params).compute(inputs).values
    random = METRICS.create("aopc_random", params).compute(inputs).values
    torch.testing.assert_close(gap.values, morf - random, rtol=0, atol=PROB_ATOL)
    assert gap.status == ["ok"] * 4


def test_aopc_gap_sign_follows_the_map_and_the_grid_scales():
    model, x, maps, target = linear_setup()
    faithful = METRICS.create("aopc_gap", {"grid": 4, "steps": 6}).compute(
        make_inputs(x, model, map_clean=maps, target=target))
    inverted = METRICS.create("aopc_gap", {"grid": 4, "steps": 6}).compute(
        make_inputs(x, model, map_clean=-maps, target=target))
    assert (faithful.values > 0).all() and (inverted.values < 0).all()  # worse than random: Heo Fig. 4a
    # the same grid at twice the resolution: regions of twice the side, the same gap
    big = F.interpolate(x, scale_factor=2, mode="nearest")
    big_model = LinearPixelModel(F.interpolate(model.weight[None], scale_factor=2, mode="nearest")[0] / 4)
    big_maps = F.interpolate(maps[:, None], scale_factor=2, mode="nearest")[:, 0]
    scaled = METRICS.create("aopc_gap", {"grid": 4, "steps": 6}).compute(
        make_inputs(big, big_model, map_clean=big_maps, target=target))
    torch.testing.assert_close(scaled.values, faithful.values, rtol=0, atol=1e-4)


def test_pearson_agreement_is_numpys_corrcoef_of_the_pooled_maps():
    gen = torch.Generator().manual_seed(1)
    maps, reference = torch.rand(3, H, W, generator=gen) ** 4, torch.rand(3, H, W, generator=gen)
    result = agreement(maps, reference, resolution=4, correlation="pearson")
    pooled = F.avg_pool2d(maps[:, None].double(), 4)[:, 0].flatten(1).numpy()
    pooled_ref = F.avg_pool2d(reference[:, None].double(), 4)[:, 0].flatten(1).numpy()
    expected = [np.corrcoef(a, b)[0, 1] for a, b in zip(pooled, pooled_ref, strict=True)]
    np.testing.assert_allclose(result.values.numpy(), expected, rtol=1e-9)
    # a map whose largest cells moved: the ranks barely change, the values do (Heo's top-k fooling)
    base = torch.linspace(0, 1, 16).view(1, 4, 4)
    moved = base.clone()
    moved.view(-1)[0] = 8.0  # the top cell now sits where the reference is lowest, and dominates
    spear = agreement(moved, base, resolution=4).values.item()
    pear = agreement(moved, base, resolution=4, correlation="pearson").values.item()
    assert spear == pytest.approx(1 - 6 * (15**2 + 15) / (16 * 255)) and pear < 0.0
