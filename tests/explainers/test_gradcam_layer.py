"""Grad-CAM's target layer, chosen from a traced eval-mode forward pass (issue P).

Each architecture kind that broke "the last Conv2d in registration order" gets the right
outcome: a spatial layer that runs once in eval mode and reaches the logits (with a non-constant
map), or a refusal naming the shape.
"""

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from audit.builtin.shapes_resnet import ShapesResNet
from audit.engine.run import run_suite
from audit.engine.suite import load_suite
from audit.explainers._graph import target_layer
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.spec import InputSpec

SPEC = InputSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def gradcam(model, x, layer=None):
    target = model(x).argmax(dim=1)
    params = {} if layer is None else {"layer": layer}
    ctx = ExplainContext(SPEC, seed=0, sample_ids=tuple(range(len(x))))
    return EXPLAINERS.create("gradcam", params)(model, x, target, ctx)


def manual_gradcam(features: torch.Tensor, head, target: torch.Tensor, size: int) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) from a layer's activations and the rest of the net."""
    features = features.detach().requires_grad_(True)
    score = head(features).gather(1, target.view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(score, features)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def non_constant(maps: torch.Tensor) -> bool:
    return bool((maps.flatten(1).std(dim=1) > 1e-6 * maps.flatten(1).abs().max(dim=1).values).all())


class CamNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18(num_classes=4)

    def forward(self, x):
        return self.backbone(x)


def test_known_architectures_and_explicit_names():
    x = images()
    assert target_layer(ShapesResNet().eval(), x).name == "layer3"
    assert target_layer(torchvision.models.resnet18(num_classes=4).eval(), x).name == "layer4"
    assert target_layer(CamNet().eval(), x).name == "relu"
    assert target_layer(Wrapped().eval(), x).name == "backbone.layer4"
    given = target_layer(ShapesResNet().eval(), x, "layer2.0")
    assert given.name == "layer2.0" and not given.automatic
    with pytest.raises(ValueError, match="not a module"):
        target_layer(ShapesResNet().eval(), x, "layer9")
    with pytest.raises(ValueError, match=r"no layer of the model outputs a \(B, C, h, w\)"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2)).eval(), x)


def test_googlenet_skips_its_training_only_aux_heads():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=5).eval()
    x = images()
    choice = target_layer(model, x)
    # aux2 holds the last Conv2d in registration order, but never runs in eval mode
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1].startswith("aux2")
    assert choice.name == "inception5b" and choice.output[1:] == (2, 2)
    with pytest.raises(ValueError, match="never runs in an eval-mode forward"):
        target_layer(model, x, "aux2.conv")
    maps = gradcam(model, x)
    assert torch.isfinite(maps).all() and maps.shape == (2, 64, 64)


def test_squeezenet_explained_at_its_last_spatial_layer_with_a_varying_map():
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(num_classes=6).eval()
    x = images()
    choice = target_layer(model, x)
    # classifier = (dropout, 1x1 conv, ReLU, global pool): the pooled output is 1x1 (a constant map)
    assert choice.name == "classifier.2" and choice.output == (6, 3, 3)
    with pytest.raises(ValueError, match=r"outputs shape \(B, 6, 1, 1\), not a \(B, C, h, w\)"):
        target_layer(model, x, "classifier")
    maps = gradcam(model, x)
    target = model(x).argmax(dim=1)
    features = model.classifier[2](model.classifier[1](model.features(x)))
    expected = manual_gradcam(features, lambda a: model.classifier[3](a).flatten(1), target, 64)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert non_constant(maps)


class ReusedReLU(nn.Module):
    """One nn.ReLU module called three times: twice on maps, last on a (B, 16) vector."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def head(self, a):
        return self.fc2(self.act(self.fc1(self.act(a).mean(dim=(2, 3)))))

    def forward(self, x):
        return self.head(self.conv2(self.act(self.conv1(x))))


def test_a_reused_relu_is_passed_over_for_the_last_layer_called_once():
    model, x = ReusedReLU().eval(), images()
    assert target_layer(model, x).name == "conv2"
    with pytest.raises(ValueError, match="runs 3 times in one forward"):
        target_layer(model, x, "act")
    maps = gradcam(model, x)
    target = model(x).argmax(dim=1)
    expected = manual_gradcam(model.conv2(model.act(model.conv1(x))), model.head, target, 64)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert non_constant(maps)


class TinyViT(nn.Module):
    """Patch embedding (a conv) then a transformer on tokens: the last conv is the patch embedding."""

    def __init__(self, dim=8):
        super().__init__()
        torch.manual_seed(2)
        self.patch = nn.Conv2d(3, dim, 16, stride=16)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.encoder(tokens).mean(dim=1))


def test_a_vision_transformer_is_refused_automatically_and_a_token_layer_by_shape():
    model, x = TinyViT().eval(), images()
    with pytest.raises(ValueError, match=r"'patch' \(B, 8, 4, 4\) is followed by layers on tokens"):
        target_layer(model, x)
    with pytest.raises(ValueError, match=r"'encoder' outputs shape \(B, 16, 8\), not a \(B, C, h, w\)"):
        target_layer(model, x, "encoder")
    # naming the patch embedding is the user's explicit choice, and allowed
    assert target_layer(model, x, "patch").name == "patch"


class ChannelsLast(nn.Module):
    """Swin-like: features kept as (B, h, w, C) after the stem; 4-D, but not a (B, C, h, w) map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.stem = nn.Conv2d(3, 24, 4, stride=4)
        self.mlp = nn.Linear(24, 24)
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        h = self.mlp(self.stem(x).permute(0, 2, 3, 1))  # (B, 16, 16, 24)
        return self.head(h.mean(dim=(1, 2)))


def test_channels_last_tensors_are_not_mistaken_for_feature_maps():
    model, x = ChannelsLast().eval(), images()
    with pytest.raises(ValueError, match=r"'mlp' outputs \(B, 16, 16, 24\)"):
        target_layer(model, x)
    with pytest.raises(ValueError, match=r"outputs shape \(B, 16, 16, 24\)"):
        target_layer(model, x, "mlp")


class SideBranch(nn.Module):
    """A spatial module registered and run last whose output the logits do not use."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)
        self.monitor = nn.Conv2d(3, 2, 3, padding=1)
        self.last_monitor = None

    def forward(self, x):
        logits = self.fc(self.body(x).mean(dim=(2, 3)))
        self.last_monitor = self.monitor(x).detach()  # e.g. a logging head: no path to the logits
        return logits


def test_a_module_the_logits_do_not_depend_on_is_never_chosen():
    model, x = SideBranch().eval(), images()
    assert target_layer(model, x).name == "body"
    with pytest.raises(ValueError, match="the logits do not depend on"):
        target_layer(model, x, "monitor")


def test_the_chosen_layer_is_in_the_manifest_and_report(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""\
        name: layer
        device: cpu
        model: {source: "builtin:shapes-resnet"}
        data: {source: "builtin:shapes", n: 2, batch_size: 2}
        explainers: [gradcam, {gradcam: {layer: layer2}, id: cam2}]
        attacks: [none]
        metrics: [spearman]
        """))
    run_suite(load_suite(suite), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["explainers"]["gradcam"] == {"layer": "layer3", "layer_output": "(B, 96, 8, 8)",
                                                 "layer_choice": "automatic"}
    assert manifest["explainers"]["cam2"]["layer"] == "layer2"
    assert manifest["explainers"]["cam2"]["layer_choice"] == "given"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- explainer gradcam: layer layer3; layer output (B, 96, 8, 8); layer choice automatic" in report


def test_a_non_spatial_layer_stops_the_run_at_preflight_naming_the_shape(tmp_path, explain_audit, cli_env):
    import subprocess

    (tmp_path / "vit.py").write_text(textwrap.dedent("""\
        import torch
        from torch import nn

        class TinyViT(nn.Module):
            def __init__(self):
                super().__init__()
                self.patch = nn.Conv2d(3, 8, 16, stride=16)
                self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
                self.head = nn.Linear(8, 6)

            def forward(self, x):
                return self.head(self.encoder(self.patch(x).flatten(2).transpose(1, 2)).mean(dim=1))
        """))
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: vit
        device: cpu
        model:
          source: "import:vit:TinyViT"
          input: {size: 64, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
        data: {source: "builtin:shapes", n: 2}
        explainers: [{gradcam: {layer: encoder}}]
        metrics: [spearman]
        """))
    out = tmp_path / "out"
    proc = subprocess.run([*explain_audit, "run", str(tmp_path / "s.yaml"), "--out", str(out), "-q"],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'encoder' outputs shape (B, 16, 8)" in proc.stderr
    assert not out.exists()
