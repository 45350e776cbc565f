"""The Adebayo randomisation attack: which layers, on a copy, seeded, global RNG untouched."""

import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.testing import TINY_SPEC, tiny_inputs, tiny_model


def _changed(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sorted({k.rsplit(".", 1)[0] for k in sa if not torch.equal(sa[k], sb[k])})


def test_top_layers_are_reinitialised_top_down_on_a_copy():
    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = AttackContext(TINY_SPEC, seed=3)
    one = ATTACKS.create("model_randomization", {"layers": 1}).prepare(model, ctx)
    assert _changed(model, one) == ["fc"]
    # BasicBlock runs conv1, conv2, then the downsample conv: from the top that is
    # fc, downsample conv, conv2
    three = ATTACKS.create("model_randomization", {"layers": 3}).prepare(model, ctx)
    assert _changed(model, three) == ["fc", "layer1.0.conv2", "layer1.0.downsample.0"]
    with_norm = ATTACKS.create("model_randomization", {"layers": 2, "include_norm": True}).prepare(model, ctx)
    assert _changed(model, with_norm) == ["fc", "layer1.0.downsample.1"]
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert not three.training and three is not model


def test_seeded_and_global_rng_untouched():
    model = tiny_model()
    attack = ATTACKS.create("model_randomization", {"layers": 2})
    state = torch.random.get_rng_state()
    a = attack.prepare(model, AttackContext(TINY_SPEC, seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = attack.prepare(model, AttackContext(TINY_SPEC, seed=1))
    c = attack.prepare(model, AttackContext(TINY_SPEC, seed=2))
    assert _changed(a, b) == []
    assert _changed(a, c) == ["fc", "layer1.0.downsample.0"]


def test_randomising_moves_a_gradient_map():
    model, x = tiny_model(), tiny_inputs(2)
    target = torch.tensor([0, 1])
    attacked = ATTACKS.create("model_randomization", {"layers": 4}).prepare(model, AttackContext(TINY_SPEC))
    explain = EXPLAINERS.create("saliency")
    before = explain(model, x, target, ExplainContext(TINY_SPEC))
    after = explain(attacked, x, target, ExplainContext(TINY_SPEC))
    assert not torch.allclose(before, after, rtol=0.05)


def test_a_model_this_seed_already_randomised_is_refused_not_scored():
    """Exported after this very attack, the top layers hold the seed's draw: drawing them again
    changes nothing, and the maps would look 'unmoved' for no fault of the explainer."""
    import pytest

    attack = ATTACKS.create("model_randomization", {"layers": 2})
    once = attack.prepare(tiny_model(), AttackContext(TINY_SPEC, seed=1))
    with pytest.raises(ValueError, match="left every weight unchanged.*use another suite seed"):
        attack.prepare(once, AttackContext(TINY_SPEC, seed=1))
    twice = attack.prepare(once, AttackContext(TINY_SPEC, seed=2))
    assert _changed(once, twice) == ["fc", "layer1.0.downsample.0"]
