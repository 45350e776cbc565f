"""blur, jpeg, brightness: identities, known answers, valid range."""

import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.spec import InputSpec

SPEC = InputSpec(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CTX = AttackContext(SPEC, seed=0, sample_ids=(1, 2, 3))


def _pixels():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _apply(name, params, pixels):
    return SPEC.denormalize(ATTACKS.create(name, params).perturb(None, SPEC.normalize(pixels), None, CTX))


def test_blur_keeps_constants_and_removes_high_frequencies():
    flat = torch.full((3, 3, 16, 16), 0.3)
    torch.testing.assert_close(_apply("blur", {"sigma": 2.0}, flat), flat, rtol=0, atol=1e-6)
    pixels = _pixels()
    torch.testing.assert_close(_apply("blur", {"sigma": 0.0}, pixels), pixels, rtol=0, atol=1e-6)
    blurred = _apply("blur", {"sigma": 1.5}, pixels)
    # blur lowers the total variation a lot and keeps the mean (reflect padding)
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert tv(blurred) < 0.35 * tv(pixels)
    assert abs(blurred.mean() - pixels.mean()) < 0.01
    assert blurred.min() >= 0 and blurred.max() <= 1


def test_jpeg_quality_orders_the_error():
    pixels = _pixels()
    err = {q: (_apply("jpeg", {"quality": q}, pixels) - pixels).abs().mean().item() for q in (10, 50, 95)}
    assert err[95] < err[50] < err[10]
    # a flat grey image survives any quality up to 8-bit rounding
    flat = torch.full((3, 3, 16, 16), 128 / 255)
    torch.testing.assert_close(_apply("jpeg", {"quality": 10}, flat), flat, rtol=0, atol=1.5 / 255)
    out = _apply("jpeg", {"quality": 50}, pixels)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    torch.testing.assert_close(out * 255, (out * 255).round(), rtol=0, atol=1e-3)  # 8-bit values


def test_brightness_multiplies_and_clips():
    pixels = _pixels()
    torch.testing.assert_close(_apply("brightness", {"factor": 1.0}, pixels), pixels, rtol=0, atol=1e-6)
    torch.testing.assert_close(_apply("brightness", {"factor": 1.5}, pixels), (pixels * 1.5).clamp(0, 1),
                               rtol=0, atol=1e-6)
    assert _apply("brightness", {"factor": 0.0}, pixels).abs().max() < 1e-6
