import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.spec import InputSpec

SPEC = InputSpec(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _ctx(ids, seed=1):
    return AttackContext(SPEC, seed=seed, sample_ids=tuple(ids))


def test_noise_is_per_image_and_batch_invariant():
    attack = ATTACKS.create("gaussian_noise", {"sigma": 0.1})
    x = SPEC.normalize(torch.rand(4, 3, 8, 8))
    whole = attack.perturb(None, x, None, _ctx([10, 11, 12, 13]))
    parts = torch.cat([attack.perturb(None, x[i:i + 1], None, _ctx([10 + i])) for i in range(4)])
    assert torch.allclose(whole, parts)
    assert not torch.allclose(attack.perturb(None, x, None, _ctx([10, 11, 12, 13], seed=2)), whole)


def test_noise_stays_in_pixel_range_and_has_the_asked_scale():
    attack = ATTACKS.create("gaussian_noise", {"sigma": 0.05})
    pixels = torch.full((8, 3, 8, 8), 0.5)
    out = SPEC.denormalize(attack.perturb(None, SPEC.normalize(pixels), None, _ctx(range(8))))
    assert out.min() >= 0 and out.max() <= 1
    assert abs(float((out - pixels).std()) - 0.05) < 0.01
    zero = ATTACKS.create("gaussian_noise", {"sigma": 0.0})
    x = SPEC.normalize(pixels)
    assert torch.allclose(zero.perturb(None, x, None, _ctx(range(8))), x)


def test_none_is_identity():
    attack = ATTACKS.create("none")
    x = torch.randn(2, 3, 8, 8)
    assert attack.perturb(None, x, None, _ctx([0, 1])) is x
    model = torch.nn.Identity()
    assert attack.prepare(model, _ctx([])) is model
