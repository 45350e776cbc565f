"""The gating attack: exact gate arithmetic, threshold calibration, a discriminator that learns,
a decoy that sees only colour statistics, and a gate invisible to gradients on clean inputs."""

import pytest
import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.attacks.gating import (
    Decoy,
    Discriminator,
    GatedModel,
    GatingParams,
    allowed_flags,
    calibrate_threshold,
)
from audit.explainers._graph import target_layer
from audit.fills import fill
from audit.rise_masks import generate_masks
from audit.testing import TINY_SPEC, check_attack, tiny_inputs, tiny_model, tiny_training_set

FAST = {"steps": 4, "images": 24, "calibration": 8, "decoy_steps": 4}


def test_threshold_flags_the_most_the_confidence_bound_allows():
    from scipy.stats import beta

    scores = torch.randperm(1000).float()
    for rate in (0.01, 0.05, 0.001):
        m = allowed_flags(1000, rate)
        # m flags keep the 95 % upper bound of the clean flag rate within the rate; m + 1 would not
        assert m == 0 or beta.ppf(0.95, m + 1, 1000 - m) <= rate
        assert beta.ppf(0.95, m + 2, 1000 - m - 1) > rate
        assert int((scores > calibrate_threshold(scores, rate)).sum()) == m
    assert allowed_flags(1000, 0.01) == 4 and allowed_flags(512, 0.01) == 1
    assert allowed_flags(100, 0.01) == 0  # too few held-out images to allow any
    ties = torch.tensor([3.0, 3.0, 3.0, 1.0])
    assert int((ties > calibrate_threshold(ties, 0.9)).sum()) <= allowed_flags(4, 0.9)


def _gate(threshold: float, decoy: bool = False):
    base = tiny_model()
    gen = torch.Generator().manual_seed(0)
    disc = Discriminator(4, gen).eval()
    return base, GatedModel(base, disc, torch.tensor(threshold), Decoy(3, 4, gen) if decoy else None).eval()


def test_gated_output_is_exactly_base_or_zeros_or_decoy():
    x = tiny_inputs(5)
    base, open_gate = _gate(float("inf"))
    with torch.no_grad():
        assert torch.equal(open_gate(x), base(x))
        _, shut = _gate(float("-inf"))
        assert torch.equal(shut(x), torch.zeros(5, 4))
        _, decoyed = _gate(float("-inf"), decoy=True)
        assert torch.equal(decoyed(x), decoyed.decoy(x))
        # mixed: each image gets its own branch
        scores = open_gate.discriminator(x)
        _, mixed = _gate(float(scores.median()))
        flagged = scores > scores.median()
        assert 0 < int(flagged.sum()) < 5
        assert torch.equal(mixed(x)[~flagged], base(x)[~flagged])
        assert torch.equal(mixed(x)[flagged], torch.zeros(int(flagged.sum()), 4))


def test_gate_is_invisible_to_gradients_and_grad_cam_layer_on_clean_inputs():
    base, gated = _gate(float("inf"))
    x = tiny_inputs(3).requires_grad_(True)
    grad_gated, = torch.autograd.grad(gated(x)[:, 1].sum(), x)
    grad_base, = torch.autograd.grad(base(x)[:, 1].sum(), x)
    assert torch.equal(grad_gated, grad_base)
    # Grad-CAM's automatic layer is the base model's last block, not the discriminator
    assert target_layer(gated, x).name == "base." + target_layer(base, x).name


def test_decoy_sees_colour_statistics_only():
    gen = torch.Generator().manual_seed(1)
    decoy = Decoy(3, 6, gen)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    shuffled = x.flatten(2)[:, :, torch.randperm(256, generator=gen)].view_as(x)  # same pixels, no shape
    assert torch.allclose(decoy(x), decoy(shuffled), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(decoy(x), decoy(x + 0.5))


@pytest.mark.parametrize("gate_output", ["zeros", "decoy"])
def test_conformance_both_gate_outputs(gate_output):
    results = check_attack(ATTACKS.create("gating", {**FAST, "gate_output": gate_output}))
    assert all(results.values())


def test_discriminator_learns_masked_from_clean_and_base_is_untouched():
    """On random-noise images, zero-filled RISE masking is easy to see: after a short training the
    calibrated gate flags most masked images and few held-out clean ones."""
    training = tiny_training_set(n=256, seed=4)
    params = {"steps": 120, "batch_size": 16, "images": 192, "calibration": 64, "fills": ["zero"],
              "max_clean_flag_rate": 0.02, "width": 8}
    base = tiny_model()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    gated = ATTACKS.create("gating", params).prepare(base, AttackContext(TINY_SPEC, seed=3, training=training))
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    gen = torch.Generator().manual_seed(11)
    clean = TINY_SPEC.normalize(torch.rand((128, 3, 16, 16), generator=gen))
    masks = generate_masks(128, 16, 4, 0.5, gen)
    masked = masks * clean + (1 - masks) * fill("zero", clean, TINY_SPEC)
    with torch.no_grad():
        flagged_clean = (gated.discriminator(clean) > gated.threshold).float().mean()
        flagged_masked = (gated.discriminator(masked) > gated.threshold).float().mean()
        assert torch.equal(gated(clean)[gated.discriminator(clean) <= gated.threshold],
                           base(clean)[gated.discriminator(clean) <= gated.threshold])
    assert flagged_clean <= 0.1
    assert flagged_masked >= 0.9


def test_params_reject_empty_ranges():
    with pytest.raises(ValueError):
        GatingParams(grid_min=9, grid_max=4)
