"""RISE and MC-RISE: mask statistics, known answers, common random numbers, degenerate maps."""

import pytest
import torch
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.explainers.mc_rise import McRiseParams, mc_rise_maps
from audit.explainers.rise import RiseParams, mask_stream, rise_maps, rise_mask_stream
from audit.maps import is_degenerate
from audit.rise_masks import generate_masks, generate_palette_masks
from audit.testing import TINY_SPEC, tiny_inputs, tiny_model
from tests.explainers.rise_helpers import Constant

SIZE = TINY_SPEC.size


class LooksAtRegion(nn.Module):
    """Class 0's logit is 4 x the mean (normalised) value inside ``region``; class 1's is 0."""

    def __init__(self, region: tuple[slice, slice]):
        super().__init__()
        self.region = region

    def forward(self, x):
        inside = x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))
        return torch.stack([4 * inside, torch.zeros_like(inside)], dim=1)


class Recorder(nn.Module):
    explain_audit_inference_copy = False  # its forward has a side effect the copy would lose

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def test_mask_mean_is_p_and_values_in_unit_interval():
    gen = torch.Generator().manual_seed(0)
    for p in (0.1, 0.5, 0.8):
        masks = generate_masks(2000, 32, 4, p, gen)
        assert masks.min() >= 0 and masks.max() <= 1
        assert abs(float(masks.mean()) - p) < 0.02


def test_palette_masks_partition_unity_with_expected_shares():
    gen = torch.Generator().manual_seed(1)
    masks = generate_palette_masks(2000, 24, 4, 0.4, 3, gen)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2000, 24, 24))
    shares = masks.mean(dim=(0, 2, 3))
    assert abs(float(shares[0]) - 0.4) < 0.02
    assert (shares[1:] - 0.2).abs().max() < 0.02


def test_mask_stream_does_not_depend_on_batch_size():
    def make(m, gen, _block):
        return generate_masks(m, SIZE, 4, 0.5, gen)

    chunks = {b: list(mask_stream(237, make, 5, b, "t")) for b in (7, 50, 300)}
    assert [c.shape[0] for c in chunks[50]] == [50, 50, 50, 50, 37]
    assert max(c.shape[0] for c in chunks[7]) == 7
    reference = torch.cat(chunks[300])
    assert reference.shape[0] == 237
    for b in (7, 50):
        assert torch.equal(torch.cat(chunks[b]), reference)


def _naive_rise(model, x, target, masks, fill):
    """Independent reference: every masked image at once, plain sums (no centring, no chunks)."""
    with torch.no_grad():
        masked = masks[:, None] * x[None] + (1 - masks[:, None]) * fill[None]  # (N, B, C, H, W)
        n, b = masked.shape[:2]
        probs = model(masked.flatten(0, 1)).softmax(1).view(n, b, -1)
        f = probs[:, torch.arange(b), target]  # (N, B)
        weights = masks[:, 0].double()
        num = torch.einsum("nb,nhw->bhw", f.double(), weights)
        return num, weights.sum(0)


@pytest.mark.parametrize("design", ["iid", "orthogonal"])
@pytest.mark.parametrize("normalize", ["mask_sum", "expectation"])
def test_rise_matches_naive_computation(normalize, design):
    model, x = tiny_model(), tiny_inputs(2)
    target = torch.tensor([1, 3])
    # 128: whole orthogonal blocks of 32 (the paper's normalisation needs them)
    params = RiseParams(n_masks=128, grid=4, p=0.5, batch_size=32, normalize=normalize, design=design)
    maps = rise_maps(model, x, target, TINY_SPEC, params, seed=9)
    masks = torch.cat(list(rise_mask_stream(params, (SIZE, SIZE), 9, 1000, reuse=False)))
    if design == "iid":  # the paper's masks: generate_masks' draws, block by block
        def make(m, gen, _block):
            return generate_masks(m, SIZE, 4, 0.5, gen)

        torch.testing.assert_close(masks, torch.cat(list(mask_stream(128, make, 9, 1000, "rise-masks", 4, 0.5))))
    num, total = _naive_rise(model, x, target, masks, torch.zeros_like(x))
    expected = num / total if normalize == "mask_sum" else num / (128 * 0.5)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)


def test_forward_batch_size_does_not_change_the_map():
    model, x, target = tiny_model(), tiny_inputs(2), torch.tensor([0, 2])
    a = rise_maps(model, x, target, TINY_SPEC, RiseParams(n_masks=90, grid=4, batch_size=13), seed=3)
    b = rise_maps(model, x, target, TINY_SPEC, RiseParams(n_masks=90, grid=4, batch_size=90), seed=3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_constant_model_gives_degenerate_map_never_nan():
    x = tiny_inputs(3)
    target = torch.tensor([0, 1, 2])
    for fill in ("zero", "noise", "blur"):
        rise = EXPLAINERS.create("rise", {"n_masks": 100, "grid": 4, "fill": fill})
        maps = rise(Constant(), x, target, ExplainContext(TINY_SPEC, seed=1, sample_ids=(0, 1, 2)))
        assert torch.isfinite(maps).all()
        assert is_degenerate(maps).all()
        torch.testing.assert_close(maps, torch.full_like(maps, 0.25))  # the uniform softmax
    mc = EXPLAINERS.create("mc_rise", {"n_masks": 100, "grid": 4})
    maps = mc(Constant(), x, target, ExplainContext(TINY_SPEC, seed=1))
    assert torch.isfinite(maps).all() and is_degenerate(maps).all()


def test_expectation_normalisation_of_constant_model_is_mask_density():
    """METHODS §1: the paper's normalisation leaves the shared field sum_i M_i in the map."""
    x, target = tiny_inputs(1), torch.tensor([0])
    params = RiseParams(n_masks=60, grid=4, p=0.5, normalize="expectation", batch_size=60, design="iid")
    maps = rise_maps(Constant(), x, target, TINY_SPEC, params, seed=2)
    masks = torch.cat(list(rise_mask_stream(params, (SIZE, SIZE), 2, 60, reuse=False)))
    density = masks[:, 0].double().sum(0) / (60 * 0.5)
    torch.testing.assert_close(maps[0], 0.25 * density)
    assert not is_degenerate(maps).any()


@pytest.mark.parametrize("name", ["rise", "mc_rise"])
def test_region_the_model_looks_at_ranks_highest(name):
    region = (slice(2, 7), slice(9, 14))
    model = LooksAtRegion(region)
    pixels = torch.full((2, 3, SIZE, SIZE), 0.5)
    pixels[:, :, region[0], region[1]] = 0.95  # bright evidence for class 0 inside the region
    x = TINY_SPEC.normalize(pixels)
    explainer = EXPLAINERS.create(name, {"n_masks": 400, "grid": 4})
    maps = explainer(model, x, torch.zeros(2, dtype=torch.long), ExplainContext(TINY_SPEC, seed=4))
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[region] = True
    for m in maps:
        assert inside.flatten()[m.flatten().argmax()]
        assert m[inside].mean() > m[~inside].mean() + 0.05 * (m.max() - m.min())


def test_same_masks_for_every_model_and_image():
    """Common random numbers: masks derive from ctx.seed alone (not the model, not the image)."""
    pixels_one = torch.ones(2, 3, SIZE, SIZE)  # normalised value 2 everywhere: masked = 2 * M
    x = TINY_SPEC.normalize(pixels_one)
    a, b = Recorder(tiny_model(seed=0)), Recorder(tiny_model(seed=5))
    rise = EXPLAINERS.create("rise", {"n_masks": 30, "grid": 4, "batch_size": 30})
    ctx = ExplainContext(TINY_SPEC, seed=11, sample_ids=(3, 4))
    rise(a, x, torch.tensor([0, 1]), ctx)
    rise(b, x, torch.tensor([2, 3]), ctx)
    assert len(a.seen) == 2 and len(b.seen) == 2
    for first, second in zip(a.seen, b.seen, strict=True):
        assert torch.equal(first, second)
    assert torch.equal(a.seen[0], a.seen[1])  # image 0 and image 1 got the same masks
    other = Recorder(tiny_model())
    rise(other, x, torch.tensor([0, 1]), ExplainContext(TINY_SPEC, seed=12, sample_ids=(3, 4)))
    assert not torch.equal(other.seen[0], a.seen[0])  # another seed, other masks


def test_mc_rise_per_colour_contrast_matches_definition():
    """With one colour, the pixel map is S_keep - S_colour, each a self-normalised average."""
    model, x, target = tiny_model(), tiny_inputs(1), torch.tensor([2])
    params = McRiseParams(n_masks=80, grid=4, p=0.5, palette=((0.0, 0.0, 0.0),), batch_size=80)
    maps = mc_rise_maps(model, x, target, TINY_SPEC, params, seed=6)

    def make(m, gen, _block):
        return generate_palette_masks(m, SIZE, 4, 0.5, 1, gen)

    masks = torch.cat(list(mask_stream(80, make, 6, 80, "mc-rise-masks", 4, 0.5, 1)))
    black = TINY_SPEC.normalize(torch.zeros(1, 3, 1, 1))
    with torch.no_grad():
        f = model(masks[:, :1] * x + masks[:, 1:] * black).softmax(1)[:, 2].double()
    keep, colour = masks[:, 0].double(), masks[:, 1].double()
    expected = (torch.einsum("n,nhw->hw", f, keep) / keep.sum(0)
                - torch.einsum("n,nhw->hw", f, colour) / colour.sum(0))
    torch.testing.assert_close(maps[0], expected, rtol=1e-5, atol=1e-7)
