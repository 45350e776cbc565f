"""METHODS defaults of the metrics, pinned through the plugins (METHODS §1, §4, §6).

Each test here kills a one-line change that every other test let through: the insertion
baseline, the FSR top-k loss's square, the crop metric's largest-component step, the FSR
success intervals. (Separate from the per-metric test files, which another branch edits.)
"""

import math

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from audit.metrics.base import METRICS
from tests.metrics.helpers import SPEC, ConstantModel, make_inputs, tiny_cnn


def images(b: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return SPEC.normalize(torch.rand(b, 3, 16, 16, generator=gen))


def probs(model, x, target):
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=1).gather(1, target.view(-1, 1)).squeeze(1)


@pytest.mark.parametrize("name", ["insertion", "deletion"])
def test_causal_curves_start_and_end_where_methods_says(name):
    # with one step the curve is (start, end) and the AUC their mean (trapezoid rule): insertion
    # starts from blur(x) (Gaussian, kernel 11, σ 5; the RISE paper), deletion ends at zeros
    # (normalised 0, the RISE reference code)
    model, x = tiny_cnn(), images()
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    inputs = make_inputs(x, model, map_clean=maps)
    result = METRICS.create(name, {"steps": 1}).compute(inputs)
    target = inputs.target
    if name == "insertion":
        other = gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])  # torchvision: reflect padding
    else:
        other = torch.zeros_like(x)
    expected = (probs(model, x, target) + probs(model, other, target)) / 2
    torch.testing.assert_close(result.values, expected, rtol=1e-5, atol=1e-6)
    assert METRICS.get(name).Params().baseline == ("blur" if name == "insertion" else "zero")


def test_fsr_topk_loss_squares_the_normalised_map():
    # clean map: a ramp, its top 10 % (26 of 256 pixels) are the last 26; attacked map normalised
    # to 0.5 on exactly those pixels: mean h² = 0.25, relative to the clean map's own mean h² there
    # (issue O: the clean map scores t = 1) t = 0.25 / 0.905 = 0.276 ∈ [0, 0.3] (fooled); with |h|
    # t would be 0.5 / 0.951 = 0.526 (not fooled)
    clean = torch.arange(256, dtype=torch.float32).view(1, 16, 16)
    attacked = torch.zeros(1, 256)
    attacked[0, 0] = 1.0
    attacked[0, -26:] = 0.5
    inputs = make_inputs(images(1), map_clean=clean, map_attacked=attacked.view(1, 16, 16))
    fsr = METRICS.create("fsr", {"fooling": "topk"})
    assert fsr.params.topk_fraction == 0.1
    loss, _ = fsr.test_loss(inputs)
    own = ((torch.arange(230, 256, dtype=torch.float64) / 255) ** 2).mean().item()
    assert float(loss[0]) == pytest.approx(0.25 / own)
    assert fsr.compute(inputs).values.tolist() == [1.0]
    attacked[0, -26:] = 0.6  # t = 0.36 / 0.905 = 0.40, outside R
    inputs = make_inputs(images(1), map_clean=clean, map_attacked=attacked.view(1, 16, 16))
    assert fsr.compute(inputs).values.tolist() == [0.0]


def test_fsr_success_intervals_are_the_papers():
    from audit.metrics.fsr import DEFAULT_INTERVALS

    assert DEFAULT_INTERVALS == {"location": (0.0, 0.2), "topk": (0.0, 0.3), "center_mass": (0.1, 1.0),
                                 "active": (0.5, 1.0)}  # Heo et al. §4.2 (METHODS §4)


def test_crop_boxes_only_the_largest_component():
    # two salient blobs above the map's mean: a 4x4 one and a 2x2 one far away; the box is the
    # 4x4 blob's (a = 16/256), not the box around both (a = 169/256)
    maps = torch.zeros(1, 16, 16)
    maps[0, 1:5, 1:5] = 1.0
    maps[0, 12:14, 12:14] = 1.0
    model = ConstantModel([0.0, 0.0])  # p = 1/2 whatever the crop
    inputs = make_inputs(images(1), model, map_clean=maps, target=torch.tensor([0]))
    crop = METRICS.create("crop")
    assert (crop.params.threshold, crop.params.min_area) == ("mean", 0.05)
    value = crop.compute(inputs).values.item()
    assert value == pytest.approx(math.log(16 / 256) - math.log(0.5))


def test_pointing_game_tolerance_is_15_of_224():
    assert METRICS.get("pointing_game").Params().tolerance == pytest.approx(15 / 224)
