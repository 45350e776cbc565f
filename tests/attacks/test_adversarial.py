"""fgsm, pgd, iterative_targeted: known answers on a linear model, pixel-space bounds, targets."""

import pytest
import torch
from torch import nn

from audit.attacks._pixels import choose_targets
from audit.attacks.base import ATTACKS, AttackContext
from audit.spec import InputSpec
from audit.testing import tiny_model

SPEC = InputSpec(8, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


class Linear2(nn.Module):
    """logit_0 = Σ w·x, logit_1 = −Σ w·x: every gradient's sign is known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        score = (x * self.w).flatten(1).sum(1)
        return torch.stack([score, -score], 1)


def _ctx(n, seed=3):
    return AttackContext(SPEC, seed=seed, sample_ids=tuple(range(50, 50 + n)))


def _pixels(n=4, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def test_fgsm_is_one_signed_step_of_eps_pixels():
    w = 0.01 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))  # no saturated softmax
    model, pixels = Linear2(w), _pixels()
    x = SPEC.normalize(pixels)
    target = torch.zeros(4, dtype=torch.long)  # CE of class 0 grows as Σ w·x falls
    out = SPEC.denormalize(ATTACKS.create("fgsm", {"eps": 0.05}).perturb(model, x, target, _ctx(4)))
    torch.testing.assert_close(out, (pixels - 0.05 * w.sign()).clamp(0, 1), rtol=0, atol=1e-6)
    toward = SPEC.denormalize(ATTACKS.create("fgsm", {"eps": 0.05, "targeted": True, "target_class": 1})
                              .perturb(model, x, target, _ctx(4)))
    torch.testing.assert_close(toward, out, rtol=0, atol=1e-6)  # toward class 1 = away from class 0


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_pixel_ball_and_range(random_start):
    model, pixels = tiny_model(), _pixels(6)
    pixels[0] = 1.0  # saturated image: clipping must hold
    x = SPEC.normalize(pixels)
    params = {"eps": 0.03, "steps": 5, "step_size": 0.01, "random_start": random_start}
    out = SPEC.denormalize(ATTACKS.create("pgd", params).perturb(model, x, torch.zeros(6, dtype=torch.long),
                                                                  _ctx(6)))
    assert (out - pixels).abs().max() <= 0.03 + 1e-6
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert (out - pixels).abs().max() > 0.02


def test_pgd_flips_labels_that_noise_does_not():
    w = 0.01 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(4))
    model, x = Linear2(w), SPEC.normalize(_pixels(8))
    with torch.no_grad():
        pred = model(x).argmax(1)
    out = ATTACKS.create("pgd", {"eps": 0.1, "steps": 10, "step_size": 0.02}).perturb(model, x, pred, _ctx(8))
    noise = ATTACKS.create("gaussian_noise", {"sigma": 0.1 / 3}).perturb(model, x, pred, _ctx(8))
    with torch.no_grad():
        adv_ok = (model(out).argmax(1) == pred).float().mean()
        noise_ok = (model(noise).argmax(1) == pred).float().mean()
    assert adv_ok == 0 and noise_ok >= 0.75


def test_target_choices():
    logits = torch.tensor([[3.0, 1.0, -2.0, 0.0], [0.0, 5.0, 1.0, -1.0]])
    ref = torch.tensor([0, 3])
    assert choose_targets(logits, ref, "least_likely").tolist() == [2, 3]
    assert choose_targets(logits, ref, "next").tolist() == [1, 0]
    assert choose_targets(logits, ref, 2).tolist() == [2, 2]
    with pytest.raises(ValueError, match="outside"):
        choose_targets(logits, ref, 4)


def test_iterative_targeted_moves_one_grey_level_per_step_and_stops_at_the_target():
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(2))
    model, pixels = Linear2(w), _pixels(3)
    x = SPEC.normalize(pixels)
    with torch.no_grad():
        pred = model(x).argmax(1)
    attack = ATTACKS.create("iterative_targeted", {"max_steps": 1, "target_class": "next"})
    one = SPEC.denormalize(attack.perturb(model, x, pred, _ctx(3)))
    moved = (one - pixels).abs().flatten(1).amax(1)
    torch.testing.assert_close(moved, torch.full((3,), 1 / 255), rtol=0, atol=1e-6)
    # ascent on the target logit: the step is + grad f_t / max |grad f_t|, pixel gradient w / std
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    for i in range(3):
        g = w / std * (1 if pred[i] == 1 else -1)  # target (pred+1)%2: ∇logit_0 = w, ∇logit_1 = −w
        expected = (pixels[i] + g / g.abs().max() / 255).clamp(0, 1)
        torch.testing.assert_close(one[i], expected, rtol=0, atol=1e-6)
    # in a batch where one image is already predicted as the target, that image is left alone
    # while the other keeps moving
    mixed = torch.stack([0.5 * w.sign() / w.abs().max(), -0.5 * w.sign() / w.abs().max()])
    with torch.no_grad():
        assert model(mixed).argmax(1).tolist() == [0, 1]
    out = ATTACKS.create("iterative_targeted", {"max_steps": 3, "target_class": 0}).perturb(
        model, mixed, torch.tensor([0, 1]), _ctx(2))
    moved = (SPEC.denormalize(out) - SPEC.denormalize(mixed)).abs().flatten(1).amax(1)
    assert moved[0] < 1e-6 and moved[1] > 2.5 / 255  # (float round trip through pixel space)
    long = ATTACKS.create("iterative_targeted", {"max_steps": 400, "target_class": "next"})
    with torch.no_grad():
        assert (model(long.perturb(model, x, pred, _ctx(3))).argmax(1) == (pred + 1) % 2).all()
