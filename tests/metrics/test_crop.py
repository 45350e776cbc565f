import math

import numpy as np
import pytest
import torch
from torch import nn

from audit.metrics.base import METRICS
from audit.metrics.crop import (
    bounding_boxes,
    connected_components,
    crop_resize,
    largest_component,
    largest_component_boxes,
    salient_region,
)
from tests.metrics.helpers import ConstantModel, make_inputs

H = W = 32


def crop(maps, model, x=None, **params):
    x = torch.rand(maps.shape[0], 3, H, W) if x is None else x
    target = torch.zeros(maps.shape[0], dtype=torch.long)
    return METRICS.create("crop", params).compute(make_inputs(x, model, map_clean=maps, target=target))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_boxes_in_one_pass_equal_the_box_of_the_largest_component(connectivity):
    # random foregrounds of every density and odd shapes, many with equal largest components
    gen = torch.Generator().manual_seed(connectivity)
    for _ in range(150):
        b, h, w = (int(v) for v in torch.randint(1, 10, (3,), generator=gen))
        fg = torch.rand(b, h, w, generator=gen) < float(torch.rand(1, generator=gen))
        keys = torch.rand(b, h * w + 1, generator=gen, dtype=torch.float64)
        for key in (None, keys):
            expected = bounding_boxes(largest_component(fg, connectivity, key))
            assert torch.equal(largest_component_boxes(fg, connectivity, key), expected)
    empty = torch.zeros(2, 5, 7, dtype=torch.bool)
    assert largest_component_boxes(empty).tolist() == [[0, 4, 0, 6]] * 2  # no component: the image


def test_full_image_box_with_certain_class_scores_zero():
    model = ConstantModel([60.0, 0.0, 0.0])  # p = 1 up to e^-60
    maps = torch.rand(3, H, W)
    result = crop(maps, model, threshold=0.0)  # every pixel salient: the box is the whole image
    assert result.status == ["ok"] * 3
    assert torch.all(result.values.abs() < 1e-12)


def test_box_under_five_percent_uses_the_floor():
    logits = [1.0, 0.5, -2.0]
    model = ConstantModel(logits)
    log_p = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), 0)[0].item()
    maps = torch.zeros(2, H, W)
    maps[0, 3:5, 3:5] = 1  # 4 px of 1024
    maps[1, 10:20, 4:24] = 1  # 200 px: 19.5 % of the image
    values = crop(maps, model).values
    assert values[0].item() == pytest.approx(math.log(0.05) - log_p, abs=1e-12)
    assert values[1].item() == pytest.approx(math.log(200 / 1024) - log_p, abs=1e-12)


def test_only_the_largest_component_is_boxed():
    fg = torch.zeros(1, H, W, dtype=torch.bool)
    fg[0, 0:3, 0:3] = True  # 9 px
    fg[0, 10:14, 20:25] = True  # 20 px
    fg[0, 30, 30] = True
    assert bounding_boxes(largest_component(fg)).tolist() == [[10, 13, 20, 24]]


def test_connectivity_four_splits_diagonal_neighbours():
    fg = torch.zeros(1, 4, 4, dtype=torch.bool)
    fg[0, 0, 0] = fg[0, 1, 1] = True
    assert connected_components(fg, 8).unique().numel() == 2  # background + one component
    assert connected_components(fg, 4).unique().numel() == 3


def test_components_follow_a_winding_path():
    fg = torch.zeros(1, 9, 9, dtype=torch.bool)
    fg[0, 0, :] = fg[0, :, 8] = fg[0, 8, :] = fg[0, 2:, 0] = fg[0, 2, :7] = True  # a spiral arm
    labels = connected_components(fg, 4)
    assert labels[fg].unique().numel() == 1


def test_crop_resize_identity_and_box_content():
    x = torch.rand(2, 3, H, W)
    full = torch.tensor([[0, H - 1, 0, W - 1]] * 2)
    torch.testing.assert_close(crop_resize(x, full), x)
    x[1, :, 8:16, 4:20] = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)
    out = crop_resize(x, torch.tensor([[0, H - 1, 0, W - 1], [8, 15, 4, 19]]))
    torch.testing.assert_close(out[1], torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, H, W))


def _bilinear_crop(image: np.ndarray, box) -> np.ndarray:
    """Independent reference: output (i, j) reads position (r0 + (r1 - r0) i / (h - 1), ...)."""
    c, h, w = image.shape
    r0, r1, c0, c1 = box
    out = np.empty_like(image, dtype=np.float64)
    for i in range(h):
        y = r0 + (r1 - r0) * i / max(h - 1, 1)
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(w):
            x = c0 + (c1 - c0) * j / max(w - 1, 1)
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1])
                            + fy * ((1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]))
    return out


@pytest.mark.parametrize("size", [(16, 16), (12, 7), (1, 5)])
def test_crop_resize_agrees_with_a_direct_bilinear_computation(size):
    h, w = size
    gen = torch.Generator().manual_seed(h * w)
    x = torch.rand(6, 3, h, w, generator=gen)
    rows = torch.sort(torch.randint(0, h, (6, 2), generator=gen), 1).values
    cols = torch.sort(torch.randint(0, w, (6, 2), generator=gen), 1).values
    boxes = torch.cat([rows, cols], 1)
    out = crop_resize(x, boxes).double().numpy()
    for b in range(6):
        # float32 sampling positions: ~1e-6 of a pixel, so ~1e-5 on values in [0, 1]
        np.testing.assert_allclose(out[b], _bilinear_crop(x[b].double().numpy(), boxes[b].tolist()),
                                   rtol=0, atol=1e-5)


class RedModel(nn.Module):
    """Class 0's logit is 10 × the mean of channel 0: confident only on a red crop."""

    def forward(self, x):
        red = x[:, 0].mean(dim=(1, 2))
        return torch.stack([10 * red, torch.zeros_like(red)], dim=1)


def test_map_on_the_evidence_scores_better_than_a_map_elsewhere():
    x = torch.zeros(2, 3, H, W)
    x[:, 0, 4:12, 4:12] = 1.0  # the red square is the evidence
    on, off = torch.zeros(2, H, W), torch.zeros(2, H, W)
    on[:, 4:12, 4:12] = 1
    off[:, 20:28, 20:28] = 1
    good = crop(on, RedModel(), x=x).values
    bad = crop(off, RedModel(), x=x).values
    assert torch.all(good < bad)


def test_degenerate_map_boxes_the_whole_image():
    model = ConstantModel([0.0, 0.0])
    result = crop(torch.full((1, H, W), 2.0), model)
    assert result.status == ["degenerate"]
    assert result.values.item() == pytest.approx(math.log(2.0))  # log 1 − log ½


def test_threshold_must_be_mean_or_in_unit_interval():
    with pytest.raises(ValueError):
        METRICS.create("crop", {"threshold": 1.5})
    for threshold in (0.5, "mean", 0, 1):
        assert METRICS.create("crop", {"threshold": threshold}).params.threshold == threshold
    with pytest.raises(ValueError):
        METRICS.create("crop", {"threshold": "median"})


def _flood_fill_labels(fg: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Independent labelling (breadth-first flood fill), named by largest flat index + 1."""
    h, w = fg.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    out = torch.zeros(h, w, dtype=torch.long)
    seen = set()
    for start in zip(*torch.nonzero(fg, as_tuple=True), strict=True):
        start = (int(start[0]), int(start[1]))
        if start in seen:
            continue
        component, frontier = [start], [start]
        seen.add(start)
        while frontier:
            r, c = frontier.pop()
            for dr, dc in steps:
                q = (r + dr, c + dc)
                if 0 <= q[0] < h and 0 <= q[1] < w and fg[q] and q not in seen:
                    seen.add(q)
                    component.append(q)
                    frontier.append(q)
        name = max(r * w + c for r, c in component) + 1
        for q in component:
            out[q] = name
    return out


@pytest.mark.parametrize("connectivity", [4, 8])
def test_components_match_a_flood_fill_and_never_cross_images(connectivity):
    gen = torch.Generator().manual_seed(3)
    fg = torch.rand(4, 13, 17, generator=gen) < 0.45
    fg[1] = True  # a full image next to others: its component must not reach them
    labels = connected_components(fg, connectivity)
    for b in range(fg.shape[0]):
        assert torch.equal(labels[b], _flood_fill_labels(fg[b], connectivity))


def test_mean_threshold_is_not_lost_to_float32_rounding_of_the_mean():
    # every pixel but the last column sits above the mean, by 2e-5 relative (not degenerate);
    # a float32 mean rounds to the maximum itself here and marked no pixel at all
    maps = torch.full((1, 8, 512), 1 + 2e-5)
    maps[0, :, -1] = 1.0
    region = salient_region(maps, "mean", 8)
    assert int(region.sum()) == 8 * 511
    assert bounding_boxes(region).tolist() == [[0, 7, 0, 510]]
    logits = [1.0, 0.0]
    log_p = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), 0)[0].item()
    x = torch.rand(1, 3, 8, 512)
    result = METRICS.create("crop", {}).compute(
        make_inputs(x, ConstantModel(logits), map_clean=maps, target=torch.zeros(1, dtype=torch.long)))
    assert result.status == ["ok"]
    assert result.values.item() == pytest.approx(math.log(511 / 512) - log_p, abs=1e-12)
