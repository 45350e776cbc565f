"""Gradient explainers against known answers and independent computations."""

import torch
from torch import nn

from audit.builtin.shapes_resnet import ShapesResNet
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.testing import FLOAT32_RTOL, TINY_SPEC, tiny_inputs, tiny_model

SIZE = TINY_SPEC.size


def ctx(n, seed=0):
    return ExplainContext(TINY_SPEC, seed=seed, sample_ids=tuple(range(n)))


class Linear(nn.Module):
    """logits = W x (flattened): every gradient is the weight row, at every input."""

    def __init__(self, classes=3, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, 3, SIZE, SIZE, generator=gen))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.weight)


class CamNet(nn.Module):
    """1x1 conv -> ReLU -> global average pool -> linear: Grad-CAM has a closed form (CAM)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


def test_saliency_and_smoothgrad_of_a_linear_model_are_abs_weights():
    model, x = Linear(), tiny_inputs(3)
    target = torch.tensor([0, 2, 1])
    expected = model.weight.detach()[target].abs().sum(dim=1)
    saliency = EXPLAINERS.create("saliency")(model, x, target, ctx(3))
    torch.testing.assert_close(saliency, expected)
    # the gradient is the same at every noisy copy, so SmoothGrad must equal it exactly
    smooth = EXPLAINERS.create("smoothgrad", {"n_samples": 5})(model, x, target, ctx(3))
    torch.testing.assert_close(smooth, expected)


def test_smoothgrad_without_noise_is_saliency_and_noise_changes_it():
    model, x = tiny_model(), tiny_inputs(2)
    target = torch.tensor([1, 0])
    plain = EXPLAINERS.create("saliency")(model, x, target, ctx(2))
    silent = EXPLAINERS.create("smoothgrad", {"n_samples": 3, "noise_level": 0.0})(model, x, target, ctx(2))
    # SmoothGrad backpropagates its copies as one larger batch: equal to float32 rounding, relative
    # to the map's scale (gradients are not probabilities)
    torch.testing.assert_close(silent, plain, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * float(plain.abs().max()))
    noisy = EXPLAINERS.create("smoothgrad", {"n_samples": 3})(model, x, target, ctx(2))
    assert not torch.allclose(noisy, plain)


def test_smoothgrad_noise_scale_is_fraction_of_range():
    sg = EXPLAINERS.create("smoothgrad", {"n_samples": 400, "noise_level": 0.15})
    x = tiny_inputs(2)
    copies = sg.noisy_copies(x, ctx(2)).view(2, 400, *x.shape[1:])
    for i in range(2):
        sigma = float((copies[i] - x[i]).std())
        expected = 0.15 * float(x[i].max() - x[i].min())
        assert abs(sigma - expected) < 0.03 * expected


def test_integrated_gradients_completeness():
    """IG's attributions sum to f(x) - f(baseline) (up to the path integral's error)."""
    model, x = tiny_model(), tiny_inputs(3)
    target = torch.tensor([0, 1, 2])
    maps = EXPLAINERS.create("integrated_gradients", {"n_steps": 64})(model, x, target, ctx(3))
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x)))[torch.arange(3), target]
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap, rtol=0.03, atol=0.01 * float(gap.abs().max()))


def test_gradcam_equals_class_activation_map():
    """For conv -> ReLU -> GAP -> linear, Grad-CAM = ReLU(sum_k w_ck A_k) / (h w), upsampled."""
    model, x = CamNet().eval(), tiny_inputs(2)
    target = torch.tensor([2, 0])
    maps = EXPLAINERS.create("gradcam", {"layer": "relu"})(model, x, target, ctx(2))
    with torch.no_grad():
        act = model.relu(model.conv(x))
        weights = model.fc.weight[target][:, :, None, None]
        cam = torch.relu((weights * act).sum(1, keepdim=True)) / (act.shape[-2] * act.shape[-1])
        expected = nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear",
                                             align_corners=False)[:, 0]
    torch.testing.assert_close(maps, expected)
    assert (maps >= 0).all()
    # the automatic layer is the activation after the last conv, the same thing here
    auto = EXPLAINERS.create("gradcam")(model, x, target, ctx(2))
    torch.testing.assert_close(auto, maps)


class NoBiasConvNet(nn.Module):
    """Bias-free conv net (no BN): LRP rules conserve relevance exactly here."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))))


def test_lrp_conserves_one_unit_of_relevance():
    model, x = NoBiasConvNet().eval(), tiny_inputs(3)
    with torch.no_grad():
        target = model(x).argmax(1)
    maps = EXPLAINERS.create("lrp")(model, x, target, ctx(3))
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(3), rtol=1e-3, atol=1e-3)


def test_lrp_runs_on_basicblock_resnet_and_leaves_it_alone():
    model = ShapesResNet().eval()
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = EXPLAINERS.create("lrp")(model, x, torch.tensor([0, 1]), ExplainContext(TINY_SPEC))
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
