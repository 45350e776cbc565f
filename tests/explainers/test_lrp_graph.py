"""LRP sees the whole computation (issue P): functional sums, pools and activations become modules
the rules target, BatchNorm is folded only into the convolution computed before it, and what
no rule covers is refused; every explanation checks the rewritten model's logits."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from zennit.layer import Sum

from audit.explainers import lrp as lrp_module
from audit.explainers._lrp_graph import lrp_graph
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.spec import InputSpec

SPEC = InputSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def images(n=3, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def explain(model, x):
    target = model(x).argmax(dim=1)
    return EXPLAINERS.create("lrp")(model, x, target, ExplainContext(SPEC))


class Residual(nn.Module):
    """Bias-free conv net: residual '+', ReLU, global pool and the head, written functionally
    (``functional=True``) or as modules; the same function with the same weights."""

    def __init__(self, functional: bool, pool: str = "mean"):
        super().__init__()
        torch.manual_seed(0)
        self.functional, self.pool_kind = functional, pool
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.branch = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 4, bias=False)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.sum = Sum()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        if self.functional:
            h = F.relu(self.stem(x))
            h = F.relu(h + self.branch(h))
            pooled = h.mean([2, 3]) if self.pool_kind == "mean" else F.adaptive_avg_pool2d(h, 1).flatten(1)
            return self.fc(pooled)
        h = self.relu1(self.stem(x))
        h = self.relu2(self.sum(torch.stack([h, self.branch(h)], dim=-1)))
        return self.fc(self.pool(h).flatten(1))


@pytest.mark.parametrize("pool", ["mean", "adaptive_avg_pool2d"])
def test_functional_and_module_forms_give_the_same_conserved_map(pool):
    functional, modules, x = Residual(True, pool).eval(), Residual(False).eval(), images()
    torch.testing.assert_close(functional(x), modules(x))
    got, expected = explain(functional, x), explain(modules, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    # bias-free: one unit of relevance enters at the target logit and all of it reaches the input
    torch.testing.assert_close(got.double().flatten(1).sum(dim=1), torch.ones(3, dtype=torch.float64),
                               rtol=1e-4, atol=0.0)


def test_the_functional_forms_left_to_autograd_would_create_and_lose_relevance():
    """What the rewrite fixes, measured with Zennit on the model as written."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    model, x = Residual(True).eval(), images()
    target = model(x).argmax(dim=1)
    with Gradient(model=model, composite=EpsilonPlusFlat()) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), torch.eye(4)[target])
    sums = relevance.sum(dim=(1, 2, 3))
    # the '+' passes all of the relevance to both branches (created: 1.26-1.32 here); the mean
    # spreads it evenly over the positions instead of in proportion to their activations
    assert bool((sums > 1.2).all()), sums
    assert not torch.allclose(relevance.sum(dim=1), explain(model, x), rtol=0.1)


class ReluThenBatchNorm(nn.Module):
    """conv -> F.relu -> BatchNorm -> conv: the BatchNorm is declared right after the first conv,
    but computed after the ReLU; folding it into that conv changes the function."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            for bn in (self.bn, self.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(-1.5, 1.5)
                bn.bias.uniform_(-1, 1)

    def forward(self, x):
        h = self.bn(F.relu(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_batchnorm_is_folded_only_into_the_convolution_computed_before_it():
    model, x = ReluThenBatchNorm().eval(), images()
    graph = lrp_graph(model, x)
    assert graph.counts["BatchNorm folded"] == 1  # bn2 into conv2; bn stays after the ReLU
    with torch.no_grad():
        torch.testing.assert_close(graph.module(x), model(x), rtol=1e-5, atol=1e-5)
    assert EXPLAINERS.create("lrp").check_model(model, x)["canonized"].startswith("torch.fx graph")
    maps = explain(model, x)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0


class SqueezeExcite(nn.Module):
    """Bias-free conv with a squeeze-and-excitation gate ``h * sigmoid(fc(mean(h)))``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.squeeze = nn.Conv2d(8, 8, 1, bias=False)
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = h * torch.sigmoid(self.squeeze(F.adaptive_avg_pool2d(h, 1)))
        return self.fc(h.mean(dim=(2, 3)))


def test_a_gating_product_passes_all_relevance_to_the_signal():
    model, x = SqueezeExcite().eval(), images()
    assert lrp_graph(model, x).counts["gates"] == 1
    sums = explain(model, x).double().flatten(1).sum(dim=1)
    torch.testing.assert_close(sums, torch.ones(3, dtype=torch.float64), rtol=1e-4, atol=0.0)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc((self.conv(x) * 2.0).mean(dim=(2, 3)))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.conv(F.relu(self.conv(x))).mean(dim=(2, 3)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
            x = -x
        return self.fc(x.mean(dim=(2, 3)))


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.norm(self.patch(x).flatten(2).transpose(1, 2)).mean(dim=1))


@pytest.mark.parametrize("model,needle", [
    (Scaled(), "function mul() with a constant operand"),
    (Shared(), "Conv2d module 'conv', called 2 times"),
    (Branchy(), "torch.fx cannot trace"),
    (TinyViT(), "LayerNorm module 'norm'"),
])
def test_what_no_rule_covers_is_refused_naming_it(model, needle):
    with pytest.raises(ValueError, match="LRP") as info:
        EXPLAINERS.create("lrp").check_model(model.eval(), images())
    assert needle in str(info.value)


def test_a_rewritten_model_with_other_logits_is_an_error_never_a_map(monkeypatch):
    model, other, x = Residual(True).eval(), Residual(False).eval(), images()
    with torch.no_grad():
        other.fc.weight.mul_(2.0)
    graph = lrp_graph(other, x)
    monkeypatch.setattr(lrp_module, "_graph_for", lambda _model, _x: graph)
    with pytest.raises(RuntimeError, match="does not compute the model's logits"):
        explain(model, x)
    with pytest.raises(ValueError, match="does not compute the model's logits"):
        EXPLAINERS.create("lrp").check_model(model, x)


def test_densenet121_is_explained_with_conserved_relevance():
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=5).eval()
    x = images(2, 32)
    lrp = EXPLAINERS.create("lrp")
    details = lrp.check_model(model, x)
    assert "BatchNorm folded" in details["canonized"]
    maps = explain(model, x)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    sums = maps.double().flatten(1).sum(dim=1)
    assert bool(((sums > 0.9) & (sums < 1.01)).all()), sums
    assert lrp.map_problems(maps) == [None, None]
