"""fragility and targeted_map on the tiny model: the map moves, the label stays, the ball holds."""

import pytest
import torch
from torch import nn

from audit.attacks._pixels import SoftplusCopy
from audit.attacks.base import ATTACKS, AttackContext
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.similarity import topk_mask
from audit.metrics.spearman import spearman
from audit.testing import TINY_SPEC, tiny_model, tiny_training_set

N = 6


def _setup():
    model = tiny_model()
    x = TINY_SPEC.normalize(torch.rand(N, 3, 16, 16, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        pred = model(x).argmax(1)
    return model, x, pred


def _saliency(model, x, target):
    return EXPLAINERS.create("saliency")(model, x, target, ExplainContext(TINY_SPEC, 0, tuple(range(N))))


def _linf(a, b):
    return (TINY_SPEC.denormalize(a) - TINY_SPEC.denormalize(b)).abs().max().item()


def test_fragility_topk_moves_the_top_pixels_and_keeps_labels():
    model, x, pred = _setup()
    ctx = AttackContext(TINY_SPEC, seed=1, sample_ids=tuple(range(N)))
    attack = ATTACKS.create("fragility", {"eps": 0.03, "steps": 15, "step_size": 0.005, "k": 0.1})
    out = attack.perturb(model, x, pred, ctx)
    assert _linf(out, x) <= 0.03 + 1e-6
    with torch.no_grad():
        assert torch.equal(model(out).argmax(1), pred)
    k = 26  # 10 % of 256 pixels, as resolve_k rounds it
    clean, moved = _saliency(model, x, pred), _saliency(model, out, pred)
    inter = (topk_mask(clean, k) & topk_mask(moved, k)).sum(1).float() / k
    assert inter.mean() < 0.7


class _Tied(nn.Module):
    """The tiny model with its top-2 logits tied up to 1e-6 at one image: any move may flip it."""

    def __init__(self, base, x):
        super().__init__()
        self.base = base
        with torch.no_grad():
            logits = base(x)[0]
        top2 = logits.topk(2).indices
        offset = torch.zeros_like(logits)
        offset[top2[0]] = logits[top2[0]] - logits[top2[1]] - 1e-6
        self.register_buffer("offset", offset)

    def forward(self, x):
        return self.base(x) - self.offset


def test_fragility_returns_only_iterates_that_keep_the_label():
    base, x, _ = _setup()
    flipped = 0
    for i in range(N):
        model = _Tied(base, x[i:i + 1]).eval()
        with torch.no_grad():
            pred = model(x[i:i + 1]).argmax(1)
        ctx = AttackContext(TINY_SPEC, seed=1, sample_ids=(i,))
        out = ATTACKS.create("fragility", {"eps": 0.03, "steps": 4, "step_size": 0.01}).perturb(
            model, x[i:i + 1], pred, ctx)
        with torch.no_grad():
            assert torch.equal(model(out).argmax(1), pred)
        # the same steps without the label check would flip this near-tied image
        noise = ATTACKS.create("gaussian_noise", {"sigma": 0.01}).perturb(model, x[i:i + 1], pred, ctx)
        with torch.no_grad():
            flipped += int(model(noise).argmax(1).item() != pred.item())
    assert flipped >= 1  # the images are really on the boundary


def test_fragility_center_mass_moves_the_centre():
    from audit.metrics.similarity import com_displacement

    model, x, pred = _setup()
    ctx = AttackContext(TINY_SPEC, seed=1, sample_ids=tuple(range(N)))
    out = ATTACKS.create("fragility", {"mode": "center_mass", "eps": 0.03, "steps": 15,
                                       "step_size": 0.005}).perturb(model, x, pred, ctx)
    noise = ATTACKS.create("gaussian_noise", {"sigma": 0.01}).perturb(model, x, pred, ctx)
    clean = _saliency(model, x, pred)
    assert com_displacement(clean, _saliency(model, out, pred)).mean() > \
        2 * com_displacement(clean, _saliency(model, noise, pred)).mean()


def test_targeted_map_approaches_its_target_and_keeps_labels():
    model, x, pred = _setup()
    ctx = AttackContext(TINY_SPEC, seed=1, sample_ids=tuple(range(N)), training=tiny_training_set(size=16))
    attack = ATTACKS.create("targeted_map", {"eps": 0.05, "steps": 20, "lr": 0.01})
    goal = attack.target_maps(model, x, pred, ctx)
    out = attack.perturb(model, x, pred, ctx)
    assert _linf(out, x) <= 0.05 + 1e-6
    with torch.no_grad():
        assert torch.equal(model(out).argmax(1), pred)
    before = spearman(_saliency(model, x, pred), goal).mean()
    after = spearman(_saliency(model, out, pred), goal).mean()
    assert after > before + 0.1


def test_targeted_map_shifted_target_is_the_rolled_clean_map():
    model, x, pred = _setup()
    ctx = AttackContext(TINY_SPEC, seed=1, sample_ids=tuple(range(N)))
    attack = ATTACKS.create("targeted_map", {"target_map": "shifted"})
    goal = attack.target_maps(model, x, pred, ctx)
    torch.testing.assert_close(goal, torch.roll(_saliency(model, x, pred), (8, 8), (-2, -1)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["fragility", "targeted_map"])
def test_refuses_an_explainer_without_a_differentiable_map(name):
    with pytest.raises(ValueError, match="no differentiable map"):
        ATTACKS.create(name, {"explainer": "smoothgrad"})


def test_softplus_copy_replaces_relus_and_refuses_models_without():
    model = tiny_model()
    copy = SoftplusCopy(model, 10.0)
    assert not any(isinstance(m, nn.ReLU) for m in copy.model.modules())
    assert any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(2, 3, 16, 16)
    copy.set_beta(1e4)
    with torch.no_grad():  # softplus → ReLU as β grows
        torch.testing.assert_close(copy.model(x), model(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        SoftplusCopy(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)), 10.0)
