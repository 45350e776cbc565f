import math

import numpy as np
import pytest
import torch

from audit.metrics.base import METRICS
from audit.metrics.localisation import dilate
from tests.metrics.helpers import make_inputs, spot_map

H = W = 32


def box_masks(b: int, r0=8, r1=16, c0=8, c1=16) -> torch.Tensor:
    truth = torch.zeros(b, H, W, dtype=torch.bool)
    truth[:, r0:r1, c0:c1] = True
    return truth


def pointing(maps, truth, **params):
    x = torch.zeros(maps.shape[0], 3, H, W)
    return METRICS.create("pointing_game", params).compute(make_inputs(x, map_clean=maps, truth=truth))


def test_map_pointing_at_the_object_hits_and_away_misses():
    truth = box_masks(2)
    maps = spot_map(2, H, W, [12, 28], [12, 28])  # inside the box; far outside it
    maps += 0.01 * torch.rand(2, H, W)  # background texture below the peak
    result = pointing(maps, truth)
    assert result.values.tolist() == [1.0, 0.0]
    assert result.status == ["ok", "ok"]


def test_map_that_is_the_object_mask_scores_one():
    truth = box_masks(3, 4, 9, 20, 30)
    assert pointing(truth.float(), truth).values.tolist() == [1.0] * 3


def test_tolerance_is_a_fraction_of_the_side():
    truth = box_masks(1)  # rows/cols 8..15
    maps = spot_map(1, H, W, [12], [18])  # three pixels right of the box's last column (15)
    assert pointing(maps, truth, tolerance=0.0).values.item() == 0.0
    assert pointing(maps, truth, tolerance=3 / W).values.item() == 1.0  # radius 3 px reaches it
    assert pointing(maps, truth, tolerance=2.9 / W).values.item() == 0.0


def test_dilate_grows_by_a_euclidean_disk():
    seed = torch.zeros(1, 11, 11, dtype=torch.bool)
    seed[0, 5, 5] = True
    grown = dilate(seed, 2.0)[0]
    r, c = torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij")
    expected = ((r - 5) ** 2 + (c - 5) ** 2) <= 4
    assert torch.equal(grown, expected)


def test_degenerate_map_is_a_miss_and_empty_mask_is_skipped():
    truth = box_masks(2)
    truth[1] = False
    maps = torch.ones(2, H, W)  # constant: "points" everywhere, including inside the object
    result = pointing(maps, truth)
    assert result.values[0].item() == 0.0 and result.status[0] == "degenerate"
    assert result.status[1] == "skipped" and math.isnan(result.values[1].item())


def test_pointing_game_matches_quantus_without_tolerance():
    quantus = pytest.importorskip("quantus", reason="quantus (dev dependency) is not installed")
    gen = torch.Generator().manual_seed(3)
    b = 24
    maps = torch.rand(b, H, W, generator=gen)
    peak_rows, peak_cols = torch.randint(0, H, (2, b), generator=gen)
    maps[torch.arange(b), peak_rows, peak_cols] = 2
    truth = torch.zeros(b, H, W, dtype=torch.bool)
    for i in range(b):  # random rectangles, some containing the peak, some not
        r0, c0 = torch.randint(0, H - 8, (2,), generator=gen).tolist()
        truth[i, r0:r0 + 10, c0:c0 + 10] = True
    ours = pointing(maps, truth, tolerance=0.0).values.numpy()
    theirs = quantus.PointingGame(disable_warnings=True, abs=False, normalise=False)(
        model=None, x_batch=np.zeros((b, 3, H, W), np.float32), y_batch=np.zeros(b, int),
        a_batch=maps.unsqueeze(1).numpy(), s_batch=truth.unsqueeze(1).float().numpy())
    np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=float))
    assert 0 < ours.sum() < b  # the check saw both hits and misses


def relevance(maps, truth):
    x = torch.zeros(maps.shape[0], 3, H, W)
    return METRICS.create("relevance_mass").compute(make_inputs(x, map_clean=maps, truth=truth))


def test_relevance_mass_known_answers():
    truth = box_masks(3)
    maps = torch.zeros(3, H, W)
    maps[0] = truth[0].float()  # all positive relevance on the object
    maps[1] = truth[1].float() - 5 * (~truth[1]).float()  # negatives outside are ignored
    maps[2] = torch.rand(H, W)
    maps[2][truth[2]] = 0  # nothing on the object
    result = relevance(maps, truth)
    assert result.values.tolist() == [1.0, 1.0, 0.0]


def test_relevance_mass_is_the_share_of_positive_mass():
    truth = box_masks(1)
    maps = torch.rand(1, H, W) + 0.1
    expected = (maps[0][truth[0]].double().sum() / maps.double().sum()).item()
    assert relevance(maps, truth).values.item() == pytest.approx(expected, rel=1e-9)


def test_relevance_mass_degenerate_maps():
    truth = box_masks(2)
    maps = torch.stack([torch.full((H, W), 3.0), -torch.rand(H, W)])
    result = relevance(maps, truth)
    assert result.status == ["degenerate", "degenerate"]
    assert result.values[0].item() == pytest.approx(truth[0].float().mean().item())  # uniform spread
    assert result.values[1].item() == 0.0  # no positive relevance at all


def test_relevance_mass_ratio_is_mass_over_the_objects_area_share():
    truth = box_masks(4)  # 64 of 1024 pixels: area share 1/16
    truth[3] = False
    gen = torch.Generator().manual_seed(5)
    maps = torch.stack([truth[0].float(),  # everything on the object: 1/share = 16
                        torch.full((H, W), 2.0),  # uniform: exactly what chance gives, 1
                        torch.rand(H, W, generator=gen) + 5.0,  # offset + noise: ≈ 1, not "0.06"
                        torch.rand(H, W, generator=gen)])
    x = torch.zeros(4, 3, H, W)
    inputs = make_inputs(x, map_clean=maps, truth=truth)
    mass = METRICS.create("relevance_mass").compute(inputs)
    ratio = METRICS.create("relevance_mass_ratio").compute(inputs)
    assert ratio.values[0].item() == pytest.approx(16.0) and ratio.status[0] == "ok"
    assert ratio.values[1].item() == pytest.approx(1.0) and ratio.status[1] == "degenerate"
    assert ratio.values[2].item() == pytest.approx(1.0, abs=0.02) and mass.values[2].item() < 0.07
    assert ratio.status[3] == "skipped" and math.isnan(ratio.values[3].item())  # empty mask
    torch.testing.assert_close(ratio.values[:3], mass.values[:3] * 16)
