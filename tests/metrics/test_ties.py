"""Tied saliencies get a seeded random order, never raster order (issue O, item 1).

The known answer: a model that reads a bright band through a saturated tanh (input gradient
exactly 0 on it) and a faint patch linearly. Its gradient map is 0 everywhere but on the patch:
uninformative about the band, which carries 90 % of the evidence. Whether the band is at the top
or the bottom of the image, such a map must score what an uninformed order scores (≈ 0.5 here:
the probability falls linearly in the band pixels removed) — and the mirror images alike.
"""

import pytest
import torch

from audit.metrics.base import METRICS
from audit.metrics.crop import bounding_boxes, largest_component, largest_component_boxes
from audit.spec import InputSpec
from tests.metrics.helpers import BandModel, make_inputs, tiny_cnn


def gradient_map(model, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.softmax(model(x), 1)[:, 0].sum(), x)
    return grad.abs().sum(1)


def band_pair(size: int, axis: str):
    """The scene and its mirror image: band at the top (left) and patch below (right of) centre,
    and the other way round."""
    mid = slice(size // 2 - 2, size // 2 + 2)
    near, far = slice(0, 6), slice(size - 6, size)
    patch_a, patch_b = slice(size - 12, size - 8), slice(8, 12)
    scenes = [BandModel.scene(size, near, patch_a, mid), BandModel.scene(size, far, patch_b, mid)]
    if axis == "cols":  # the same scenes turned by 90°
        scenes = [(BandModel(m.band.T.contiguous(), m.patch.T.contiguous()).eval(), x.transpose(2, 3).contiguous())
                  for m, x in scenes]
    return scenes


def score(name, params, model, x, size, seed=0):
    spec = InputSpec(size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    inputs = make_inputs(x, model, map_clean=gradient_map(model, x), target=torch.tensor([0]), seed=seed,
                         spec=spec)
    result = METRICS.create(name, params).compute(inputs)
    assert result.status == ["ok"]
    return result.values.item()


def test_the_gradient_map_is_exactly_zero_on_the_band():
    (model, x), _ = band_pair(32, "rows")
    maps = gradient_map(model, x)
    assert torch.all(maps[0, :6] == 0) and torch.all(maps[0, 20:24, 14:18] > 0)
    assert int((maps > 0).sum()) == 16  # only the patch


@pytest.mark.parametrize(("name", "params"), [
    ("deletion", {"baseline": "zero"}), ("insertion", {"baseline": "zero"}),
    ("deletion", {"baseline": "zero", "steps": 100}), ("aopc", {"region_size": 8}),
    ("aopc_lerf", {"region_size": 8}), ("aopc", {"region_size": 4}), ("aopc", {"region_size": 5})])
@pytest.mark.parametrize(("size", "axis"), [(32, "rows"), (32, "cols"), (48, "rows")])
def test_mirror_images_score_alike_and_like_an_uninformed_order(name, params, size, axis):
    (model_a, x_a), (model_b, x_b) = band_pair(size, axis)
    a, b = score(name, params, model_a, x_a, size), score(name, params, model_b, x_b, size)
    assert abs(a - b) <= 0.1, (a, b)
    assert abs(a - 0.5) <= 0.1 and abs(b - 0.5) <= 0.1, (a, b)


def test_tie_order_is_seeded_by_the_cell_and_stable_under_its_seed():
    (model, x), _ = band_pair(32, "rows")
    first, again = score("deletion", {"baseline": "zero"}, model, x, 32, seed=1), score(
        "deletion", {"baseline": "zero"}, model, x, 32, seed=1)
    other = score("deletion", {"baseline": "zero"}, model, x, 32, seed=2)
    assert first == again and first != other and abs(first - other) < 0.02


def plateau_maps(size: int, rows: slice, value: float = 1.0) -> torch.Tensor:
    maps = torch.zeros(1, size, size)
    maps[0, rows] = value
    return maps


def topk(clean, attacked, k, seed=0, sample_ids=(0,)):
    x = torch.zeros(clean.shape[0], 3, *clean.shape[-2:])
    inputs = make_inputs(x, map_clean=clean, map_attacked=attacked, seed=seed, sample_ids=sample_ids)
    return METRICS.create("topk_intersection", {"k": k}).compute(inputs).values


@pytest.mark.parametrize("mirror", [False, True])
def test_topk_intersection_with_plateaus_straddling_the_cut(mirror):
    """Clean: a plateau of 8 rows; attacked: 16 rows holding it; k = 4 rows' worth of pixels.
    By index both top-k would be the first 4 rows (1.0) — or, mirrored, different rows (0.0).
    Over tie orders the attacked top-k holds half its pixels in the clean plateau: 0.5."""
    size, k = 64, 256
    clean_rows, att_rows = (slice(56, 64), slice(48, 64)) if mirror else (slice(0, 8), slice(0, 16))
    clean, attacked = plateau_maps(size, clean_rows), plateau_maps(size, att_rows)
    n = 24
    values = topk(clean.expand(n, -1, -1), attacked.expand(n, -1, -1), k, sample_ids=range(n))
    assert torch.all((values - 0.5).abs() <= 0.12)  # hypergeometric sd 0.027
    assert abs(values.mean().item() - 0.5) <= 0.02
    same = topk(clean, clean.clone(), k)  # one key for both maps: a map keeps its own top-k
    assert same.item() == 1.0


def pointing(maps, truth, sample_ids):
    x = torch.zeros(maps.shape[0], 3, *maps.shape[-2:])
    inputs = make_inputs(x, map_clean=maps, truth=truth, sample_ids=sample_ids)
    return METRICS.create("pointing_game", {"tolerance": 0.0}).compute(inputs)


def test_pointing_game_points_at_one_pixel_of_a_maximum_plateau():
    """A map maximal on 4 rows of which 1 lies on the object: a hit with probability 1/4 (not
    always, as "any plateau pixel" would say; not by raster order either)."""
    size, n = 32, 200
    maps = torch.zeros(n, size, size)
    maps[:, 10:14] = 1.0
    truth = torch.zeros(n, size, size, dtype=torch.bool)
    truth[:, 13, :] = True  # the last plateau row: raster order would always miss it
    result = pointing(maps, truth, range(n))
    assert set(result.values.tolist()) <= {0.0, 1.0} and result.status == ["ok"] * n
    assert abs(result.values.mean().item() - 0.25) <= 4 * (0.25 * 0.75 / n) ** 0.5
    again = pointing(maps[:5], truth[:5], range(5))  # an image's pick does not depend on its batch
    assert torch.equal(again.values, result.values[:5])
    unique = maps.clone()
    unique[:, 13, 5] = 2.0  # a single maximum on the object: always a hit
    assert pointing(unique, truth, range(n)).values.eq(1.0).all()


def test_crop_picks_between_equal_largest_components_at_random():
    fg = torch.zeros(40, 16, 16, dtype=torch.bool)
    fg[:, 1:4, 1:4] = True
    fg[:, 12:15, 12:15] = True  # same size, later in raster order
    keys = torch.stack([torch.randperm(257, generator=torch.Generator().manual_seed(i)) for i in range(40)])
    chosen = largest_component(fg, 8, keys.double())
    upper = chosen[:, 2, 2]
    assert torch.equal(chosen.sum(dim=(1, 2)), torch.full((40,), 9))
    assert 5 <= int(upper.sum()) <= 35  # both components are picked, about evenly
    bigger = fg.clone()
    bigger[:, 1:4, 4] = True  # the upper component now has 12 pixels: always it
    assert largest_component(bigger, 8, keys.double())[:, 2, 2].all()


def test_crop_tie_keys_drawn_only_for_tied_images_choose_as_keys_for_all():
    fg = torch.zeros(40, 16, 16, dtype=torch.bool)
    fg[:, 1:4, 1:4] = True
    fg[:, 12:15, 12:15] = True
    fg[::3, 1:4, 4] = True  # every third image: no tie, the upper component is larger
    keys = torch.stack([torch.randperm(257, generator=torch.Generator().manual_seed(i)) for i in range(40)])
    asked: list[list[int]] = []

    def lazy(rows):
        asked.append(rows)
        return keys[rows].double()

    assert torch.equal(largest_component(fg, 8, lazy), largest_component(fg, 8, keys.double()))
    assert asked == [[i for i in range(40) if i % 3]]  # keys for the tied images only


def test_crop_boxes_in_one_pass_ask_tie_keys_for_the_tied_images_only():
    fg = torch.zeros(40, 16, 16, dtype=torch.bool)
    fg[:, 1:4, 1:4] = True
    fg[:, 12:15, 12:15] = True
    fg[::3, 1:4, 4] = True  # every third image: no tie
    keys = torch.stack([torch.randperm(257, generator=torch.Generator().manual_seed(i)) for i in range(40)])
    asked: list[list[int]] = []

    def lazy(rows):
        asked.append(rows)
        return keys[rows].double()

    expected = bounding_boxes(largest_component(fg, 8, keys.double()))
    assert torch.equal(largest_component_boxes(fg, 8, lazy), expected)
    assert asked == [[i for i in range(40) if i % 3]]  # rows of the batch, not of the tied subset
    assert torch.equal(largest_component_boxes(fg, 8, keys.double()), expected)
    assert {tuple(b) for b in expected.tolist()} == {(1, 3, 1, 4), (1, 3, 1, 3), (12, 14, 12, 14)}
    # equal components that are not the largest are no tie
    small = torch.zeros(3, 16, 16, dtype=torch.bool)
    small[:, 0, 0] = small[:, 0, 15] = True  # two single pixels in every image
    small[0, 5:8, 5:8] = True
    small[2, 9:11, 2:4] = True
    asked.clear()
    assert largest_component_boxes(small, 8, lazy).tolist()[::2] == [[5, 7, 5, 7], [9, 10, 2, 3]]
    assert asked == [[1]]  # image 1's two single pixels are its largest: the only tie


def test_crop_metric_boxes_either_of_two_equal_components_by_the_cells_seed():
    n = 24
    maps = torch.zeros(n, 16, 16)
    maps[:, 1:4, 1:4] = 1.0
    maps[:, 11:14, 10:13] = 1.0
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).expand(n, -1, -1, -1).clone()
    model = tiny_cnn(seed=3)
    inputs = make_inputs(x, model, map_clean=maps, target=torch.zeros(n, dtype=torch.long), sample_ids=range(n))
    values = METRICS.create("crop").compute(inputs).values
    distinct = sorted(set(round(v, 9) for v in values.tolist()))
    assert len(distinct) == 2  # the same box area, two different crops
    upper = sum(abs(v - distinct[0]) < 1e-9 for v in values.tolist())
    assert 3 <= upper <= n - 3
