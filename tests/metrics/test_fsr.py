import math

import pytest
import torch
from pydantic import ValidationError

from audit.metrics.base import METRICS
from audit.metrics.fsr import frame_mask, location_loss, topk_loss
from tests.metrics.helpers import make_inputs, spot_map

H = W = 16


def fsr(clean, attacked, **params):
    x = torch.zeros(clean.shape[0], 3, H, W)
    extra = {"map_swap": params.pop("map_swap")} if "map_swap" in params else {}
    inputs = make_inputs(x, map_clean=clean, map_attacked=attacked, **extra)
    return METRICS.create("fsr", params).compute(inputs)


def blob(b, r, c, sigma=2.0):
    rows = torch.arange(H).view(-1, 1).float()
    cols = torch.arange(W).view(1, -1).float()
    return torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)).expand(b, H, W).clone()


def test_frame_width_is_a_seventh_of_the_side():
    m = frame_mask(16, 16)
    assert m[2, 2] == 0 and m[1, 8] == 1 and m[8, 14] == 1 and m[13, 8] == 0  # width ⌊16/7⌋ = 2
    assert frame_mask(6, 6).sum() == 6 * 6 - 4 * 4  # width at least 1


def test_location_fooling_known_answers():
    clean = blob(2, 8, 8)
    attacked = torch.stack([frame_mask(H, W).float(), blob(1, 8, 8)[0]])
    loss = location_loss(attacked)
    assert loss[0].item() == 0.0
    assert loss[1].item() > 0.2
    assert fsr(clean, attacked, fooling="location").values.tolist() == [1.0, 0.0]


def test_topk_fooling_known_answers():
    clean = blob(2, 8, 8)
    attacked = torch.stack([blob(1, 8, 8)[0], blob(1, 1, 1)[0]])  # unchanged; moved to a corner
    loss = topk_loss(clean, attacked, 0.1)
    assert loss[0].item() > 0.3  # unchanged map: the clean top 10 % keeps its saliency (outside R)
    assert loss[1].item() < 0.01
    assert fsr(clean, attacked, fooling="topk").values.tolist() == [0.0, 1.0]


def test_center_mass_fooling_known_answers():
    clean = spot_map(3, H, W, [2, 2, 2], [2, 2, 2])
    attacked = spot_map(3, H, W, [2, 3, 13], [2, 2, 13])  # same; one pixel; across the image
    result = fsr(clean, attacked, fooling="center_mass")
    assert result.values.tolist() == [0.0, 0.0, 1.0]


def test_active_fooling_needs_the_swapped_map():
    maps = torch.rand(2, H, W)
    result = fsr(maps, maps, fooling="active")
    assert result.status == ["skipped", "skipped"] and all(math.isnan(v) for v in result.values.tolist())
    swapped = torch.stack([maps[0], torch.rand(H, W)])
    result = fsr(maps, maps, fooling="active", map_swap=swapped)
    assert result.values[0].item() == 1.0  # the attacked map of c₁ is the original map of c₂
    assert result.status == ["ok", "ok"]
    unrelated = fsr(maps, -maps, fooling="active", map_swap=maps)  # reversed ranking: Spearman −1
    assert unrelated.values.tolist() == [0.0, 0.0]


def test_interval_parameter_and_validation():
    clean, attacked = blob(1, 8, 8), blob(1, 8, 8)
    assert fsr(clean, attacked, fooling="location", interval=(0.0, 1.0)).values.item() == 1.0
    with pytest.raises(ValidationError):
        METRICS.create("fsr", {"interval": (0.5, 0.1)})


def test_resolution_pools_to_the_target_layer_size():
    # A frame at input resolution, 4 px wide (⌊16/7⌋ = 2 would not match), is a frame at 4×4.
    attacked = torch.ones(1, H, W)
    attacked[:, 4:12, 4:12] = 0
    assert fsr(attacked, attacked, fooling="location", resolution=4).values.item() == 1.0


def test_degenerate_maps_have_documented_values():
    clean = blob(1, 8, 8)
    flat = torch.zeros(1, H, W)
    topk = fsr(clean, flat, fooling="topk")
    assert topk.status == ["degenerate"] and topk.values.item() == 1.0  # the top-k mass is gone
    location = fsr(clean, flat, fooling="location")
    assert location.status == ["degenerate"] and location.values.item() == 0.0
    active = fsr(clean, flat, fooling="active", map_swap=clean)
    assert active.status == ["degenerate"] and active.values.item() == 0.0
