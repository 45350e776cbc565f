"""Real-time saliency (issue I; seed 002; METHODS §7): the evidence-removal fill, the masking
model's encoder choice, training plumbing on tiny models, and on the embedded default (slow)
the issue's must-shows that hold: pointing game >= 0.8, near-empty masks for absent classes."""

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from audit.data.training import TrainingContext
from audit.explainers._masking_model import feature_stages
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.fills import DABKOWSKI_COLOUR_RANGE, DABKOWSKI_NOISE_STD, dabkowski_fill, fill, gaussian_blur
from audit.testing import TINY_SPEC, check_explainer, tiny_inputs, tiny_model, tiny_training_set


# -- the fill -------------------------------------------------------------------------------------
def test_dabkowski_fill_is_a_strong_blur_or_a_random_colour_with_noise_per_image():
    gen = torch.Generator().manual_seed(0)
    image = TINY_SPEC.normalize(torch.rand((1, 3, 32, 32), generator=gen))
    x = image.expand(400, -1, -1, -1).contiguous()
    out = dabkowski_fill(x, TINY_SPEC, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    blurred = gaussian_blur(image, sigma=10.0, kernel_size=55)[0]
    is_blur = torch.tensor([torch.allclose(row, blurred, atol=1e-5) for row in out])
    assert 150 < int(is_blur.sum()) < 250  # p = 1/2 per image (binomial n=400: ±5 sd)
    pixels = TINY_SPEC.denormalize(out[~is_blur])
    colour = pixels.mean(dim=(2, 3))
    # a random colour in 0.5 ± 0.165 per channel (noise averages out over 1024 pixels: sd 0.002)
    assert float(colour.min()) > 0.5 - DABKOWSKI_COLOUR_RANGE - 0.01
    assert float(colour.max()) < 0.5 + DABKOWSKI_COLOUR_RANGE + 0.01
    assert float(colour.std()) > 0.05  # not one colour for all
    noise_sd = (pixels - colour[..., None, None]).std()
    assert abs(float(noise_sd) / DABKOWSKI_NOISE_STD - 1) < 0.05
    # drawn from the generator: same seed, same fill; the registered name is the same function
    again = fill("dabkowski", x, TINY_SPEC, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    assert not torch.equal(out, dabkowski_fill(x, TINY_SPEC, torch.Generator().manual_seed(6)))


def test_rise_with_the_dabkowski_fill_draws_anew_per_mask_and_differs_from_zero():
    model, x = tiny_model(), tiny_inputs(2)
    target = model(x).argmax(dim=1)
    ctx = ExplainContext(TINY_SPEC, seed=3, sample_ids=(1, 2))
    maps = {f: EXPLAINERS.create("rise", {"n_masks": 64, "fill": f})(model, x, target, ctx)
            for f in ("dabkowski", "zero")}
    assert not torch.allclose(maps["dabkowski"], maps["zero"])
    rerun = EXPLAINERS.create("rise", {"n_masks": 64, "fill": "dabkowski"})(model, x, target, ctx)
    assert torch.equal(rerun, maps["dabkowski"])


# -- the encoder ----------------------------------------------------------------------------------
class TwoStage(nn.Module):
    """A ResNet-like tiny model with layer1 and layer2 (16 -> 8 -> 4 pixels)."""

    def __init__(self, classes: int = 4, width: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True))
        d1 = nn.Sequential(nn.Conv2d(width, width, 1, stride=2), nn.BatchNorm2d(width))
        d2 = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2), nn.BatchNorm2d(2 * width))
        self.layer1 = nn.Sequential(BasicBlock(width, width, stride=2, downsample=d1))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2, downsample=d2))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean(dim=(2, 3)))


class Wrapper(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.gate = nn.Linear(1, 1)
        self.base = base

    def forward(self, x):
        return self.base(x)


def test_the_encoder_is_the_models_own_stages_where_it_has_them():
    model = TwoStage().eval()
    assert feature_stages(model) == ["layer1", "layer2"]
    assert feature_stages(Wrapper(model)) == ["base.layer1", "base.layer2"]  # e.g. the gated model
    assert feature_stages(tiny_model()) == []  # one stage is no U-Net
    assert feature_stages(torch.jit.script(model)) == []  # TorchScript runs no hooks
    explainer = EXPLAINERS.create("realtime_saliency")
    assert explainer.check_model(model, tiny_inputs(2))["encoder"].startswith("model stages")
    assert explainer.check_model(tiny_model(), tiny_inputs(2))["encoder"].startswith("scratch")
    with pytest.raises(ValueError, match="encoder: model needs"):
        EXPLAINERS.create("realtime_saliency", {"encoder": "model"}).check_model(tiny_model(), tiny_inputs(2))


@pytest.mark.parametrize("model", [TwoStage().eval(), tiny_model()], ids=["model-stages", "scratch"])
def test_training_plumbing_conforms(model):
    explainer = EXPLAINERS.create("realtime_saliency", {"steps": 3, "batch_size": 4, "width": 8})
    results = check_explainer(explainer, model=model, x=tiny_inputs(3))
    assert results["train_deterministic"] and results["batch_invariant"]


def test_maps_are_masks_and_errors_name_the_problem():
    model, x = TwoStage().eval(), tiny_inputs(3)
    explainer = EXPLAINERS.create("realtime_saliency", {"steps": 2, "batch_size": 4, "width": 8})
    state = explainer.train(model, TrainingContext(TINY_SPEC, seed=1, training=tiny_training_set()))
    assert int(state["meta.num_classes"]) == 4 and bool(state["meta.encoder_model"])
    assert all(p.grad is None for p in model.parameters())  # gradients never reach the weights
    target = torch.tensor([0, 1, 3])
    maps = explainer(model, x, target, ExplainContext(TINY_SPEC, trained=state))
    assert maps.shape == (3, 16, 16) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    # the class selector matters: another class, another mask
    other = explainer(model, x, (target + 1) % 4, ExplainContext(TINY_SPEC, trained=state))
    assert not torch.equal(maps, other)
    with pytest.raises(RuntimeError, match="no trained masking model"):
        explainer(model, x, target, ExplainContext(TINY_SPEC))
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 4\)"):
        explainer(model, x, torch.tensor([0, 1, 4]), ExplainContext(TINY_SPEC, trained=state))
    # a state explains only the model it was trained on
    other = TwoStage().eval()
    with torch.no_grad():
        other.fc.weight.mul_(2.0)
    with pytest.raises(ValueError, match="trained on another model"):
        explainer(other, x, target, ExplainContext(TINY_SPEC, trained=state))
    summary = explainer.state_summary(state)
    assert summary["encoder"] == "model stages (frozen)" and summary["steps"] == 2


# -- the embedded default (issue I's must-shows) --------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
    from audit.data.sources import ShapesData
    from audit.data.training import TrainingSet

    model = load_reference()
    explainer = EXPLAINERS.create("realtime_saliency")
    training = TrainingSet(ShapesData("train", None, INPUT_SPEC.size))
    state = explainer.train(model, TrainingContext(INPUT_SPEC, seed=0, training=training))
    batch = ShapesData("test", 64, INPUT_SPEC.size).batch(range(64))
    x = INPUT_SPEC.normalize(batch.images)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    ctx = ExplainContext(INPUT_SPEC, sample_ids=batch.ids, trained=state)
    return model, explainer, ctx, x, target, batch


def _mean(metric, model, x, target, maps, batch):
    from audit.builtin.shapes_resnet import INPUT_SPEC
    from audit.metrics.base import METRICS, MetricInputs

    inputs = MetricInputs(spec=INPUT_SPEC, x=x, x_attacked=x, model=model, attacked_model=model, target=target,
                          labels=batch.labels, predicted=target, predicted_attacked=target, map=maps,
                          map_attacked=maps, truth=batch.masks, sample_ids=batch.ids)
    result = METRICS.create(metric).compute(inputs)
    assert all(s == "ok" for s in result.status)
    return float(result.values.mean())


@pytest.mark.slow
def test_on_the_embedded_default_masks_point_at_the_object(reference):
    model, explainer, ctx, x, target, batch = reference
    maps = explainer(model, x, target, ctx)
    assert _mean("pointing_game", model, x, target, maps, batch) >= 0.8
    # the masks cover the object: most of the mask's mass lies on it (its area is ~9 % of the image)
    inside = (maps * batch.masks).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    assert float(inside.mean()) > 0.25
    # (the crop metric is reported, not asserted: on these 64 images it is -0.48 against Grad-CAM's
    # -0.50, a tie; see benchmarks/realtime.py and the report)


@pytest.mark.slow
def test_on_the_embedded_default_an_absent_class_gets_a_near_empty_mask(reference):
    model, explainer, ctx, x, target, _ = reference
    # shapes images hold one object: every other class is absent
    for shift in (1, 3):
        wrong = explainer(model, x, (target + shift) % 6, ctx)
        assert float(wrong.mean()) <= 0.05
    assert float(explainer(model, x, target, ctx).mean()) > 0.1  # the true class is not empty
