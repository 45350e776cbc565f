"""constant_shift (Kindermans): exact compensation incl. zero-padded borders, refusals, invariance."""

import copy

import pytest
import torch
from torch import nn

from audit.attacks.base import ATTACKS, AttackContext
from audit.attacks.constant_shift import normalised_shift
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.spearman import spearman
from audit.testing import TINY_SPEC, tiny_model

CTX = AttackContext(TINY_SPEC, seed=4, sample_ids=tuple(range(6)))


def _x(n=6):
    return TINY_SPEC.normalize(torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("shift", [-1.0, 0.5])
def test_outputs_unchanged_to_1e_4(shift):
    model, x = tiny_model(), _x()
    attack = ATTACKS.create("constant_shift", {"shift": shift})
    prepared = attack.prepare(model, CTX).eval()
    x_att = attack.perturb(prepared, x, None, CTX)
    torch.testing.assert_close(TINY_SPEC.denormalize(x_att), TINY_SPEC.denormalize(x) + shift, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert (prepared(x_att) - model(x)).abs().max().item() <= 1e-4
        assert (model(x_att) - model(x)).abs().max().item() > 0.01  # the shift matters uncompensated


def test_a_bias_change_alone_is_not_exact_with_zero_padding():
    """Why the offset is per position: Kindermans' bias change leaves errors at padded borders."""
    model, x = tiny_model(), _x()
    conv = model.stem[0]
    delta = normalised_shift(TINY_SPEC, -1.0).float()
    naive = copy.deepcopy(model)
    naive.stem[0] = nn.Conv2d(3, conv.out_channels, 3, padding=1, bias=True)
    with torch.no_grad():
        naive.stem[0].weight.copy_(conv.weight)
        naive.stem[0].bias.copy_(-(conv.weight * delta.view(1, 3, 1, 1)).sum(dim=(1, 2, 3)))
        error = (naive(x + delta.view(1, 3, 1, 1)) - model(x)).abs().max().item()
    assert error > 1e-3


def test_linear_first_layer_and_export_round_trip():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    class Wrap(nn.Module):  # images (B, 3, 16, 16): the Linear acts on the last axis
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x).mean(dim=(1, 2))

    wrap, x = Wrap().eval(), _x()
    attack = ATTACKS.create("constant_shift", {"shift": 0.3})
    prepared = attack.prepare(wrap, CTX)
    rebuilt = attack.import_state(wrap, attack.export_state(prepared))
    x_att = attack.perturb(prepared, x, None, CTX)
    with torch.no_grad():
        assert (prepared(x_att) - wrap(x)).abs().max().item() <= 1e-4
        assert torch.equal(rebuilt(x_att), prepared(x_att))


class _NormFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(self.bn(x)).mean(dim=(2, 3))


class _RawSkip(nn.Module):
    """The raw input also reaches the output: no first-layer change can compensate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return (self.conv(x) + x[:, :2]).mean(dim=(2, 3))


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(2 * x).mean(dim=(2, 3))


@pytest.mark.parametrize("model, needle", [(_NormFirst(), "not a Conv2d or Linear"), (_RawSkip(), "logits differ"),
                                           (_Scaled(), "does not receive the model's input")])
def test_refuses_what_it_cannot_compensate(model, needle):
    with pytest.raises(ValueError, match=needle):
        ATTACKS.create("constant_shift").prepare(model.eval(), CTX)


def test_gradient_is_input_invariant_and_gradient_times_input_is_not():
    model, x = tiny_model(), _x()
    attack = ATTACKS.create("constant_shift", {"shift": -1.0})
    prepared = attack.prepare(model, CTX).eval()
    x_att = attack.perturb(prepared, x, None, CTX)
    with torch.no_grad():
        target = model(x).argmax(1)
    ectx = ExplainContext(TINY_SPEC, 0, tuple(range(6)))
    grad = EXPLAINERS.create("saliency")
    torch.testing.assert_close(grad(prepared, x_att, target, ectx), grad(model, x, target, ectx),
                               rtol=1e-4, atol=1e-6)
    ig = EXPLAINERS.create("integrated_gradients")
    assert spearman(ig(model, x, target, ectx), ig(prepared, x_att, target, ectx)).mean() < 0.99
