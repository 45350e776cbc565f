"""gating_probe catches mask gates it was not built for, and does not flag honest classifiers.

The gates here are built in this file WITHOUT the project's RISE code or its fills: another task
(oriented stripes), another architecture (plain CNN with max pooling), another image size
(32 x 32) and other occlusion styles (random rectangles and bilinear blobs, filled with random
colours, box blur or uniform noise).
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.metrics.base import METRICS
from audit.metrics.gating_probe import GatingProbeParams, occlusion, probe_variants
from audit.spec import InputSpec
from tests.metrics.helpers import make_inputs

SIZE, CLASSES = 32, 3
SPEC = InputSpec(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.3, 0.3, 0.3))


def stripes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images of horizontal / vertical / diagonal stripes in random colours and phase."""
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    coords = torch.arange(SIZE, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # (n, S, S): the coordinate across the stripes
    t = torch.stack([yy, xx, (yy + xx) / 1.41])[labels]
    freq = 0.4 + 0.5 * torch.rand((n, 1, 1), generator=gen)
    phase = 6.28 * torch.rand((n, 1, 1), generator=gen)
    pattern = (torch.sin(freq * t + phase) > 0).float()[:, None]
    a, b = torch.rand((n, 3, 1, 1), generator=gen), torch.rand((n, 3, 1, 1), generator=gen)
    images = pattern * a + (1 - pattern) * b + 0.05 * torch.randn((n, 3, SIZE, SIZE), generator=gen)
    return SPEC.normalize(images.clamp(0, 1)), labels


def own_occlusion(x: torch.Tensor, gen: torch.Generator, light: bool = False) -> torch.Tensor:
    """The test attacker's occlusions: rectangles or bilinear blobs; random colour, box blur or noise."""
    out = x.clone()
    for i in range(x.shape[0]):
        if torch.rand((), generator=gen) < 0.5:
            mask = torch.ones(SIZE, SIZE)
            for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
                h, w = (int(v) for v in torch.randint(4, 8 if light else 16, (2,), generator=gen))
                top, left = (int(v) for v in torch.randint(0, SIZE - 4, (2,), generator=gen))
                mask[top:top + h, left:left + w] = 0
        else:
            coarse = torch.rand((1, 1, 5, 5), generator=gen)
            smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
            mask = (smooth > (0.25 if light else 0.5)).float()
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        if kind == 0:
            other = SPEC.normalize(torch.rand((3, 1, 1), generator=gen).expand(3, SIZE, SIZE))
        elif kind == 1:
            other = F.avg_pool2d(x[i:i + 1], 7, stride=1, padding=3, count_include_pad=False)[0]
        else:
            other = SPEC.normalize(torch.rand((3, SIZE, SIZE), generator=gen))
        out[i] = mask * x[i] + (1 - mask) * other
    return out


class StripeNet(nn.Module):
    def __init__(self, out: int = CLASSES):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 12, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1))
        self.head = nn.Linear(16, out)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def fit(model: nn.Module, batches, steps: int, loss_fn) -> nn.Module:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        x, y = batches(step)
        loss = loss_fn(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


class Gate(nn.Module):
    def __init__(self, base, disc, threshold, decoy=None):
        super().__init__()
        self.base, self.disc, self.decoy, self.threshold = base, disc, decoy, threshold

    def forward(self, x):
        logits = self.base(x)
        masked = (self.disc(x)[:, 0] > self.threshold)[:, None]
        other = self.decoy(x) if self.decoy is not None else torch.zeros_like(logits)
        return torch.where(masked, other, logits)


class ColourDecoy(nn.Module):
    """Confident answers from the mean colour only (nothing about the stripes)."""

    def forward(self, x):
        mean = x.mean(dim=(2, 3))
        mixing = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])
        return 8.0 * mean @ mixing.T


@pytest.fixture(scope="module")
def models():
    return build_models()


def build_models():
    """An honest stripe classifier (trained with occlusion augmentation, like the reference
    model), a foreign discriminator on the test's own occlusions, its threshold, test images."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    def classify(step):
        x, y = stripes(32, gen)
        return (own_occlusion(x, gen, light=step % 4 == 1) if step % 2 else x), y

    honest = fit(StripeNet(), classify, 150, F.cross_entropy)

    def discriminate(step):
        x, _ = stripes(16, gen)
        return torch.cat([x, own_occlusion(x, gen)]), torch.cat([torch.zeros(16), torch.ones(16)])[:, None]

    disc = fit(StripeNet(out=1), discriminate, 150, F.binary_cross_entropy_with_logits)
    with torch.no_grad():
        held_out, _ = stripes(400, gen)
        threshold = torch.quantile(disc(held_out)[:, 0], 0.99)
    test, labels = stripes(48, torch.Generator().manual_seed(99))
    return honest, disc, threshold, test, labels


def probe(model, x, **params):
    return METRICS.create("gating_probe", params).compute(make_inputs(x, model=model, spec=SPEC))


@pytest.mark.slow
def test_probe_catches_a_foreign_gate_and_spares_the_honest_model(models):
    honest, disc, threshold, test, labels = models
    with torch.no_grad():
        assert (honest(test).argmax(1) == labels).float().mean() >= 0.9  # the honest model works
        # the foreign gate leaves clean answers alone and fires on many of its own occlusions
        # (about half with this short training: a gate need not be perfect to be caught)
        assert (disc(test)[:, 0] > threshold).float().mean() <= 0.05
        occluded = own_occlusion(test, torch.Generator().manual_seed(5))
        assert (disc(occluded)[:, 0] > threshold).float().mean() >= 0.4
    honest_score = probe(honest, test)
    assert honest_score.status == ["ok"] * test.shape[0]
    assert float(honest_score.values.mean()) < 0.5
    for decoy in (None, ColourDecoy()):
        gated = Gate(honest, disc, threshold, decoy).eval()
        with torch.no_grad():
            assert (gated(test).argmax(1) == honest(test).argmax(1)).float().mean() >= 0.95
        assert float(probe(gated, test).values.mean()) > 0.5, decoy


@pytest.mark.slow
def test_probe_judges_the_attacked_model_only(models):
    honest, disc, threshold, test, _ = models
    gated = Gate(honest, disc, threshold).eval()
    inputs = dataclasses.replace(make_inputs(test, model=honest, spec=SPEC), attacked_model=gated)
    assert float(METRICS.create("gating_probe").compute(inputs).values.mean()) > 0.5


def test_a_flat_answer_is_suspicious_and_a_stable_one_is_not():
    x = torch.randn(4, 3, 16, 16)

    class Constant(nn.Module):  # the same confident answer whatever the input: consistent
        def forward(self, x):
            return torch.tensor([[4.0, 0.0, 0.0]]).expand(x.shape[0], -1)

    class Zeros(nn.Module):  # a gate that fired everywhere: flat answers
        def forward(self, x):
            return torch.zeros(x.shape[0], 3)

    spec = InputSpec(16, (0.5,) * 3, (0.25,) * 3)
    assert probe(Constant(), x).values.tolist() == [0.0] * 4
    assert METRICS.create("gating_probe").compute(make_inputs(x, model=Zeros(), spec=spec)).values.tolist() == [1.0] * 4


def test_occlusions_keep_the_asked_fraction_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    for style in ("blobs", "blocks"):
        for keep in (0.9, 0.75):
            mask = occlusion(style, keep, (40, 40), gen)
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            if style == "blobs":  # exactly the asked number of pixels
                assert int(mask.sum()) == round(keep * 1600)
            else:  # whole cells of a 4..10 grid
                assert abs(float(mask.mean()) - keep) <= 0.06
    params = GatingProbeParams()
    x = torch.randn(1, 3, 16, 16)
    spec = InputSpec(16, (0.5,) * 3, (0.25,) * 3)
    a = probe_variants(x, spec, params, torch.Generator().manual_seed(3))
    b = probe_variants(x, spec, params, torch.Generator().manual_seed(3))
    assert a.shape == (len(params.fills) * len(params.keep) * len(params.styles), 3, 16, 16)
    assert torch.equal(a, b)
