"""Differentiable maps (issue F puts them inside a loss): values, weight gradients, hooks."""

import pytest
import torch
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.explainers.lrp import differentiable_lrp_epsilon
from audit.testing import FLOAT32_RTOL, TINY_SPEC, hook_counts, tiny_inputs, tiny_model

DIFFERENTIABLE = ["saliency", "gradcam", "lrp"]


def _penalty(explainer, model, x, target, probe):
    """A fixed random linear functional of the map: generic, so a zero gradient means a bug."""
    return (explainer.differentiable_map(model, x, target, create_graph=True) * probe).sum()


def _setup(dtype=torch.float64):
    model = tiny_model(seed=2).to(dtype)
    x = tiny_inputs(2, seed=3).to(dtype)
    with torch.no_grad():
        target = model(x).argmax(1)
    probe = torch.randn(2, TINY_SPEC.size, TINY_SPEC.size, generator=torch.Generator().manual_seed(4),
                        dtype=dtype)
    return model, x, target, probe


@pytest.mark.parametrize("name", ["saliency", "gradcam"])
def test_differentiable_map_equals_the_explainer(name):
    model, x, target, _ = _setup(torch.float32)
    explainer = EXPLAINERS.create(name)
    plain = explainer(model, x, target, ExplainContext(TINY_SPEC))
    torch.testing.assert_close(explainer.differentiable_map(model, x, target).detach(), plain,
                               rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * float(plain.abs().max()))


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_weight_gradient_matches_finite_differences(name):
    """d penalty / d weights along a random direction vs central differences, float64.

    LRP's variant holds its denominators constant (stop-gradient); that leaves out a term of
    order eps / z per unit (at eps = 1e-9 one unit of this model sits close enough to z = 0 to
    move the directional derivative by 0.4 %), so it is checked at eps = 1e-12, where the term
    is below the tolerance.
    """
    model, x, target, probe = _setup()
    params = {"epsilon": 1e-12, "composite": "epsilon"} if name == "lrp" else {}
    explainer = EXPLAINERS.create(name, params)
    weights = [p for p in model.parameters()]
    grads = torch.autograd.grad(_penalty(explainer, model, x, target, probe), weights, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads, weights, strict=True)]
    assert sum(float(g.abs().sum()) for g in grads) > 0
    gen = torch.Generator().manual_seed(5)
    direction = [torch.randn(w.shape, generator=gen, dtype=w.dtype) for w in weights]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    step = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for w, d in zip(weights, direction, strict=True):
                w.add_(sign * step * d)
        values.append(float(_penalty(explainer, model, x, target, probe).detach()))
        with torch.no_grad():
            for w, d in zip(weights, direction, strict=True):
                w.sub_(sign * step * d)
    numeric = (values[0] - values[1]) / (2 * step)
    assert abs(analytic - numeric) <= 1e-5 * max(1.0, abs(numeric)), (analytic, numeric)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_no_hook_left_and_caller_mode_respected(name):
    model, x, target, probe = _setup()
    model.train()  # the caller's choice (issue F freezes BN itself); the map must not flip it
    before = hook_counts(model)
    explainer = EXPLAINERS.create(name, {"composite": "epsilon"} if name == "lrp" else {})
    _penalty(explainer, model, x, target, probe).backward()
    assert hook_counts(model) == before == {}
    assert all(m.training for m in model.modules())
    from audit.explainers._graph import functional_twin
    assert hook_counts(functional_twin(model)) == {}


def test_differentiable_lrp_equals_zennit_epsilon():
    """Gradient x input with stop-gradient denominators is LRP-epsilon (Zennit as the reference)."""
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon

    from tests.explainers.test_gradient_explainers import NoBiasConvNet

    model = NoBiasConvNet(seed=1).double().eval()
    model.conv2.bias = nn.Parameter(torch.linspace(-0.2, 0.2, 8, dtype=torch.float64))  # eps sees biases
    x = tiny_inputs(2, seed=6).double()
    target = torch.tensor([0, 2])
    eps = 0.05  # large enough that the rule visibly differs from gradient x input
    ours = differentiable_lrp_epsilon(model, x, target, epsilon=eps, create_graph=False)
    # Zennit's base map: pass-through at activations, proportional (Norm, no stabiliser) at avg pooling
    composite = LayerMapComposite(layer_map_base(1e-30) + [(nn.Conv2d, Epsilon(epsilon=eps)),
                                                      (nn.Linear, Epsilon(epsilon=eps))])
    inputs = x.clone().requires_grad_(True)
    with torch.no_grad():
        logits = model(x)
    start = torch.zeros_like(logits)
    start[torch.arange(2), target] = logits[torch.arange(2), target]  # relevance z_c, as ours
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(inputs, start)
    torch.testing.assert_close(ours, relevance.sum(1), rtol=1e-6, atol=1e-9)
    plain_gxi = differentiable_lrp_epsilon(model, x, target, epsilon=1e-12, create_graph=False)
    assert not torch.allclose(ours, plain_gxi, rtol=1e-3)


def test_lrp_epsilon_explainer_is_the_differentiable_map_over_the_logit():
    """The map an attack differentiates (LRP-epsilon from z_c) is the scored ``lrp`` map with
    ``composite: epsilon`` (from one unit) times z_c — on a model with BatchNorm, which the
    explainer folds into its convolution and the differentiable form treats as its own layer."""
    from audit.explainers.base import Unsupported

    model, x, target, _ = _setup(torch.float64)
    model.eval()
    # stabilisers at 1e-12: Zennit's proportional rule at sums and pools adds one (1e-6 moves the
    # map by 3e-4 of its largest value), where the gradient form divides exactly
    explainer = EXPLAINERS.create("lrp", {"composite": "epsilon", "epsilon": 1e-9, "stabilizer": 1e-12})
    scored = explainer(model, x, target, ExplainContext(TINY_SPEC))
    with torch.no_grad():
        logit = model(x).gather(1, target.view(-1, 1)).view(-1, 1, 1)
    attacked = explainer.differentiable_map(model, x, target, create_graph=False).detach()
    torch.testing.assert_close(attacked, scored * logit, rtol=1e-5, atol=1e-5 * float(attacked.abs().max()))
    # the default composite scores a different map, and has no differentiable form
    default = EXPLAINERS.create("lrp")
    assert not torch.allclose(default(model, x, target, ExplainContext(TINY_SPEC)), scored, rtol=1e-2)
    with pytest.raises(Unsupported, match="composite: epsilon"):
        default.differentiable_map(model, x, target)
