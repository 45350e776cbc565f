import math

import pytest
import torch
from pydantic import ValidationError

from audit.metrics.base import METRICS
from audit.metrics.fsr import frame_mask, location_loss, relative_topk_loss, topk_loss
from audit.metrics.similarity import resolve_k, topk_mask
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
    gen = torch.Generator().manual_seed(0)
    maps, swapped = torch.rand(2, H, W, generator=gen), torch.rand(2, H, W, generator=gen)
    result = fsr(maps, maps, fooling="active")
    assert result.status == ["skipped", "skipped"] and all(math.isnan(v) for v in result.values.tolist())
    attacked = torch.stack([swapped[0], maps[1]])  # image 0's c₁ map became the original c₂ map
    result = fsr(maps, attacked, fooling="active", map_swap=swapped)
    assert result.values.tolist() == [1.0, 0.0]  # image 1: unchanged, unrelated to its c₂ map
    assert result.status == ["ok", "ok"]
    unrelated = fsr(maps, -swapped, fooling="active", map_swap=swapped)  # reversed ranking: Spearman −1
    assert unrelated.values.tolist() == [0.0, 0.0]


def test_active_fooling_is_skipped_on_single_object_data():
    gen = torch.Generator().manual_seed(1)
    maps, swapped = torch.rand(2, H, W, generator=gen), torch.rand(2, H, W, generator=gen)
    x = torch.zeros(2, 3, H, W)
    metric = METRICS.create("fsr", {"fooling": "active"})
    one = metric.compute(make_inputs(x, map_clean=maps, map_attacked=swapped, map_swap=swapped,
                                     two_classes_per_image=False))
    assert one.status == ["skipped"] * 2 and "shapes-pairs" in one.reasons[0]
    assert all(math.isnan(v) for v in one.values.tolist())
    two = metric.compute(make_inputs(x, map_clean=maps, map_attacked=swapped, map_swap=swapped,
                                     two_classes_per_image=True))
    assert two.status == ["ok"] * 2 and two.values.tolist() == [1.0, 1.0]


def test_an_image_whose_clean_map_already_passes_is_skipped():
    """Under the identity attack the attacked map is the clean map: FSR must not call it fooled."""
    gen = torch.Generator().manual_seed(2)
    base = torch.rand(1, H, W, generator=gen)
    frame = frame_mask(H, W).float().unsqueeze(0)
    # active: c₁'s clean map already correlates with c₂'s (one object highlighted for both)
    swap = base + 0.1 * torch.rand(1, H, W, generator=gen)
    cases = {"active": (base, {"map_swap": swap}), "location": (frame, {}),
             "center_mass": (base, {"interval": (0.0, 1.0)}), "topk": (base, {"interval": (0.5, 2.0)})}
    for kind, (clean, extra) in cases.items():
        result = fsr(clean, clean.clone(), fooling=kind, **extra)
        assert result.status == ["skipped"], kind
        assert "clean map already passes" in result.reasons[0] and math.isnan(result.values.item())


@pytest.mark.parametrize("kind", ["location", "topk", "center_mass", "active"])
@pytest.mark.parametrize("shape", ["blob", "spiky", "sparse", "ties", "off_centre"])
def test_nothing_attacked_is_never_fooled(kind, shape):
    """FSR with the attacked map equal to the clean map: 0 or skipped, for maps of every kind."""
    gen = torch.Generator().manual_seed(3)
    maps = {"blob": blob(4, 8, 8),
            "spiky": torch.exp(2 * torch.randn(4, H, W, generator=gen)),  # top decile far below the max
            "sparse": spot_map(4, H, W, [3, 5, 9, 12], [2, 14, 8, 1]) + 0.01 * torch.rand(4, H, W, generator=gen),
            "ties": torch.relu(torch.randn(4, H, W, generator=gen) - 1.0),  # mostly exact zeros
            "off_centre": blob(4, 1, 2)}[shape]
    swap = torch.rand(4, H, W, generator=gen) if kind == "active" else None
    extra = {"map_swap": swap} if swap is not None else {}
    result = fsr(maps, maps.clone(), fooling=kind, **extra)
    for value, status in zip(result.values.tolist(), result.status, strict=True):
        assert (status == "skipped" and math.isnan(value)) or value == 0.0


def test_topk_is_relative_to_the_clean_maps_own_top_k():
    gen = torch.Generator().manual_seed(4)
    clean = torch.exp(2 * torch.randn(3, H, W, generator=gen))  # spiky: its top decile is far below its max
    assert (topk_loss(clean, clean, 0.1) < 0.3).all()  # the paper's raw t calls it fooled
    moved = clean.clone()
    top = topk_mask(clean, resolve_k(0.1, H * W)).view(3, H, W)
    moved[top] = 0.0  # the clean top decile emptied: the attack's aim
    half = torch.where(top, clean * 0.5 ** 0.5, clean)  # half its squared saliency kept...
    half[:, 0, 0] = clean.flatten(1).amax(dim=1)  # ...with the maximum kept elsewhere
    torch.testing.assert_close(relative_topk_loss(clean, clean, 0.1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(relative_topk_loss(clean, half, 0.1),
                               topk_loss(clean, half, 0.1) / topk_loss(clean, clean, 0.1))
    assert fsr(clean, clean.clone(), fooling="topk").values.tolist() == [0.0] * 3
    assert fsr(clean, moved, fooling="topk").values.tolist() == [1.0] * 3
    assert fsr(clean, half, fooling="topk").values.tolist() == [0.0] * 3  # kept ≈ 50 % > 30 %


def test_interval_parameter_and_validation():
    clean = spot_map(1, H, W, [2], [2])
    attacked = spot_map(1, H, W, [4], [2])  # displacement √(2²/2)/15 ≈ 0.094
    assert fsr(clean, attacked, fooling="center_mass").values.item() == 0.0  # default R = [0.1, 1]
    assert fsr(clean, attacked, fooling="center_mass", interval=(0.05, 1.0)).values.item() == 1.0
    with pytest.raises(ValidationError):
        METRICS.create("fsr", {"interval": (0.5, 0.1)})


def test_resolution_pools_to_the_target_layer_size():
    # A frame at input resolution, 4 px wide (⌊16/7⌋ = 2 would not match), is a frame at 4×4.
    attacked = torch.ones(1, H, W)
    attacked[:, 4:12, 4:12] = 0
    clean = blob(1, 8, 8)
    assert fsr(clean, attacked, fooling="location", resolution=4).values.item() == 1.0
    assert fsr(clean, attacked, fooling="location").values.item() == 0.0


def test_degenerate_maps_have_documented_values():
    clean = blob(1, 8, 8)
    flat = torch.zeros(1, H, W)
    topk = fsr(clean, flat, fooling="topk")
    assert topk.status == ["degenerate"] and topk.values.item() == 1.0  # the top-k mass is gone
    location = fsr(clean, flat, fooling="location")
    assert location.status == ["degenerate"] and location.values.item() == 0.0
    active = fsr(clean, flat, fooling="active", map_swap=torch.rand(1, H, W))
    assert active.status == ["degenerate"] and active.values.item() == 0.0
    no_topk = fsr(flat, clean, fooling="topk")  # a flat clean map has no top-k to move
    assert no_topk.status == ["skipped"] and "flat" in no_topk.reasons[0]
