import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from audit.metrics.base import METRICS
from audit.metrics.similarity import center_of_mass, resolve_k, topk_mask
from tests.metrics.helpers import make_inputs, spot_map

H = W = 16


def run(name, clean, attacked, **params):
    x = torch.zeros(clean.shape[0], 3, H, W)
    return METRICS.create(name, params).compute(make_inputs(x, map_clean=clean, map_attacked=attacked))


def test_spearman_matches_scipy_including_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (8, H, W), generator=gen).float()  # many ties
    b = a + torch.randint(0, 4, (8, H, W), generator=gen).float()
    ours = run("spearman", a, b).values.numpy()
    theirs = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(8)]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_identical_maps_score_one_and_degenerate_zero():
    maps = torch.rand(3, H, W)
    maps[2] = 0.5
    for name in ("spearman", "topk_intersection"):
        result = run(name, maps, maps.clone())
        assert result.values[:2].tolist() == [1.0, 1.0]
        assert result.values[2].item() == 0.0 and result.status[2] == "degenerate"


def test_topk_intersection_is_invariant_to_monotone_rescaling():
    maps = torch.rand(4, H, W)
    assert run("topk_intersection", maps, torch.exp(3 * maps) - 7).values.tolist() == [1.0] * 4


def test_topk_intersection_of_reversed_ranking_is_zero():
    maps = torch.rand(4, H, W)
    assert run("topk_intersection", maps, -maps, k=0.5).values.tolist() == [0.0] * 4


def test_topk_intersection_counts_shared_pixels():
    clean = torch.arange(H * W, dtype=torch.float32).view(1, H, W)  # top 10: the last ten pixels
    attacked = clean.clone().flatten()
    attacked[-4:] = -1  # four of the top ten drop out of the top ten
    result = run("topk_intersection", clean, attacked.view(1, H, W), k=10)
    assert result.values.item() == pytest.approx(6 / 10)


def test_resolve_k_fraction_and_count():
    assert resolve_k(0.1, 256) == 26
    assert resolve_k(10, 256) == 10
    assert resolve_k(1e-6, 256) == 1
    assert resolve_k(1000, 256) == 256


def test_topk_intersection_matches_quantus():
    quantus = pytest.importorskip("quantus", reason="quantus (dev dependency) is not installed")
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(16, H, W, generator=gen)
    attacked = clean + 0.3 * torch.rand(16, H, W, generator=gen)
    k = 25
    ours = run("topk_intersection", clean, attacked, k=k).values.numpy()
    # Quantus scores a map's top k against a binary mask: give it the clean map's top k.
    s = topk_mask(clean, k).view(16, 1, H, W).float().numpy()
    theirs = quantus.TopKIntersection(k=k, disable_warnings=True, abs=False, normalise=False)(
        model=None, x_batch=np.zeros((16, 3, H, W), np.float32), y_batch=np.zeros(16, int),
        a_batch=attacked.unsqueeze(1).numpy(), s_batch=s)
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=float), atol=1e-12)
    assert 0 < ours.mean() < 1


def test_center_of_mass_of_a_spot_and_of_a_flat_map():
    maps = spot_map(2, H, W, [3, 0], [11, 0])
    maps[1] = 7.0  # flat: treated as uniform
    com = center_of_mass(maps)
    assert com[0].tolist() == [3.0, 11.0]
    assert com[1].tolist() == [(H - 1) / 2, (W - 1) / 2]


def test_com_shift_known_displacements():
    clean = spot_map(3, H, W, [0, 5, 4], [0, 5, 4])
    attacked = spot_map(3, H, W, [H - 1, 5, 4], [W - 1, 9, 4])  # opposite corner; 4 px right; same
    result = run("com_shift", clean, attacked)
    expected = [1.0, math.sqrt(4**2 / 2) / (W - 1), 0.0]
    np.testing.assert_allclose(result.values.numpy(), expected, atol=1e-12)
    assert result.status == ["ok"] * 3


def test_com_shift_degenerate_counts_as_centred():
    clean = torch.zeros(1, H, W)
    attacked = spot_map(1, H, W, [0], [0])
    result = run("com_shift", clean, attacked)
    centre = (H - 1) / 2
    assert result.status == ["degenerate"]
    assert result.values.item() == pytest.approx(math.sqrt((centre**2 + centre**2) / 2) / (H - 1))


def test_abs_ranks_magnitudes_not_signs():
    # a randomised model that flips the sign of a signed map (IG, LRP) moves nothing Adebayo et
    # al. test: with abs the rank metrics read the map as unchanged, without it as anti-correlated
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(4, H, W, generator=gen)
    flipped = -clean
    assert run("spearman", clean, flipped).values.tolist() == pytest.approx([-1.0] * 4)
    assert run("spearman", clean, flipped, abs=True).values.tolist() == pytest.approx([1.0] * 4)
    theirs = [spearmanr(clean[i].abs().flatten(), (clean[i] * 0.5 + 0.1).abs().flatten()).statistic
              for i in range(4)]
    ours = run("spearman", clean, clean * 0.5 + 0.1, abs=True).values.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert run("topk_intersection", clean, flipped, k=0.1, abs=True).values.tolist() == [1.0] * 4
    raw = run("topk_intersection", clean, flipped, k=0.1).values
    assert float(raw.max()) < 0.2  # the most positive pixels become the most negative
    # a map whose magnitude is flat carries no ranking once signs are dropped
    signs = torch.where(torch.rand(1, H, W, generator=gen) > 0.5, 1.0, -1.0)
    result = run("spearman", clean[:1], signs, abs=True)
    assert result.status == ["degenerate"] and result.values.tolist() == [0.0]
    assert run("spearman", clean[:1], signs).status == ["ok"]
