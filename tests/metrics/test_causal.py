import pytest
import torch

from audit.fills import gaussian_blur
from audit.metrics.base import METRICS
from audit.metrics.causal import causal_curve, curve_auc, step_counts
from audit.spec import InputSpec
from audit.testing import FLOAT32_RTOL, PROB_ATOL
from tests.metrics.helpers import SPEC, LinearPixelModel, LinearProbabilityModel, make_inputs

PROB = {"rtol": FLOAT32_RTOL, "atol": PROB_ATOL}

H = W = 16


def setup(b=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.rand(1, H, W, generator=gen) ** 3 * 0.01  # clean logit ≈ 1: not saturated
    x = torch.rand(b, 3, H, W, generator=gen) + 0.5
    return LinearPixelModel(weight), x, weight.expand(b, H, W).clone(), torch.zeros(b, dtype=torch.long)


def test_auc_formula_known_curves():
    curves = torch.tensor([[0.7] * 5, [1.0, 0.75, 0.5, 0.25, 0.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(curve_auc(curves), torch.tensor([0.7, 0.5, 0.75]))


def test_deletion_curve_runs_from_the_image_to_the_baseline():
    model, x, maps, target = setup()
    curve = causal_curve(model, x, maps, target, SPEC, mode="deletion", steps=8, baseline_kind="zero")
    assert curve.shape == (4, 9)
    # the model's forward and this sum reduce in other orders: equal to float32 rounding
    torch.testing.assert_close(curve[:, 0], torch.sigmoid((x * model.weight).flatten(1).sum(1)).double(), **PROB)
    torch.testing.assert_close(curve[:, -1], torch.full((4,), 0.5, dtype=torch.float64))
    # Deleting the true evidence first makes f fall monotonically for this model (x > 0, w ≥ 0).
    assert torch.all(curve[:, 1:] <= curve[:, :-1] + 1e-12)


def test_insertion_curve_runs_from_the_blurred_image_to_the_image():
    model, x, maps, target = setup()
    curve = causal_curve(model, x, maps, target, SPEC, mode="insertion", steps=8, baseline_kind="blur")
    blurred = gaussian_blur(x, sigma=5.0, kernel_size=11)
    start = torch.sigmoid((blurred * model.weight).flatten(1).sum(1)).double()
    torch.testing.assert_close(curve[:, 0], start, **PROB)
    torch.testing.assert_close(curve[:, -1], torch.sigmoid((x * model.weight).flatten(1).sum(1)).double(), **PROB)


def test_true_evidence_beats_its_reverse():
    model, x, maps, target = setup()
    good = make_inputs(x, model, map_clean=maps, target=target)
    bad = make_inputs(x, model, map_clean=-maps, target=target)
    for name, better in (("deletion", torch.lt), ("insertion", torch.gt)):
        metric = METRICS.create(name, {"steps": 16, "baseline": "zero"})  # blur(x) ≈ x here
        assert torch.all(better(metric.compute(good).values, metric.compute(bad).values))
    assert METRICS.get("deletion").higher_is_better is False
    assert METRICS.get("insertion").higher_is_better is True


def test_degenerate_map_uses_a_seeded_random_order():
    model, x, maps, target = setup(b=2)
    maps[1] = 1.0
    inputs = make_inputs(x, model, map_clean=maps, target=target, seed=3)
    a = METRICS.create("deletion").compute(inputs)
    b = METRICS.create("deletion").compute(inputs)
    assert a.status == ["ok", "degenerate"]
    assert torch.equal(a.values, b.values) and torch.isfinite(a.values).all()
    # A random order lies between the best (true evidence) and the worst (reversed) order of the
    # same image (image 1 given image 0's informative map shape)
    full = maps.clone()
    full[1] = full[0]
    worst = METRICS.create("deletion").compute(make_inputs(x, model, map_clean=-full, target=target))
    best = METRICS.create("deletion").compute(make_inputs(x, model, map_clean=full, target=target))
    assert best.status == worst.status == ["ok", "ok"]
    assert best.values[1] < a.values[1] < worst.values[1]
    other_seed = METRICS.create("deletion").compute(make_inputs(x, model, map_clean=maps, target=target, seed=4))
    assert other_seed.values[1] != a.values[1] and other_seed.values[0] == a.values[0]


def test_few_forward_calls():
    model, x, maps, target = setup(b=4)
    inputs = make_inputs(x, model, map_clean=maps, target=target)
    model.calls = 0
    METRICS.create("insertion", {"steps": 10, "max_batch": 256}).compute(inputs)
    assert model.calls == 1
    model.calls = 0
    METRICS.create("insertion", {"steps": 10, "max_batch": 11}).compute(inputs)
    assert model.calls == 4


def test_matches_a_plain_loop():
    from tests.metrics.helpers import tiny_cnn

    model = tiny_cnn(seed=2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, H, W, generator=gen)
    maps = torch.rand(2, H, W, generator=gen)
    target = torch.tensor([0, 2])
    steps = 5  # 256 pixels: point k at round(k·256/5) = 0, 51, 102, 154, 205, 256
    for mode, kind in (("deletion", "zero"), ("insertion", "blur")):
        curve = causal_curve(model, x, maps, target, SPEC, mode=mode, steps=steps, baseline_kind=kind)
        other = torch.zeros_like(x) if kind == "zero" else gaussian_blur(x, sigma=5.0, kernel_size=11)
        for i in range(2):
            order = torch.argsort(maps[i].flatten(), descending=True, stable=True)
            image = (x[i] if mode == "deletion" else other[i]).clone().view(3, -1)
            source = (other[i] if mode == "deletion" else x[i]).reshape(3, -1)
            expected = []
            with torch.no_grad():
                for step in range(steps + 1):
                    chosen = order[:(2 * step * H * W + steps) // (2 * steps)]
                    image[:, chosen] = source[:, chosen]
                    logits = model(image.view(1, 3, H, W)).double()
                    expected.append(torch.softmax(logits, 1)[0, target[i]].item())
            torch.testing.assert_close(curve[i], torch.tensor(expected, dtype=torch.float64),
                                       atol=PROB_ATOL, rtol=FLOAT32_RTOL)


def linear_probability_setup(h=32, w=32, seed=0):
    """p = 0.05 + Σ weight·x₀ with Σ weight·x₀ = 0.9 on the image: exactly linear in the pixels
    kept. The map is the weight plus noise, so its order is informative but not perfect."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.rand(h, w, generator=gen) ** 4
    x = torch.rand(1, 3, h, w, generator=gen) + 0.5
    weight = weight * 0.9 / (weight * x[0, 0]).sum()
    maps = (weight + 0.6 * weight.mean() * torch.rand(h, w, generator=gen)).unsqueeze(0)
    return LinearProbabilityModel(weight, 0.05).eval(), x, maps


def exact_auc(model, x, maps, mode):
    """Trapezoid area at one pixel per step (exact for a linear model), computed directly."""
    order = torch.argsort(maps.flatten(), descending=True)
    evidence = (model.weight * x[0, 0]).flatten().double()[order]
    path = torch.cat([torch.zeros(1, dtype=torch.float64), evidence.cumsum(0)])
    curve = (0.95 - path) if mode == "deletion" else (0.05 + path)
    return ((curve[1:] + curve[:-1]) / 2).mean().item()


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize(("size", "steps"), [((32, 32), 100), ((32, 32), 300), ((32, 32), 1000),
                                             ((32, 32), 1024), ((32, 32), 7), ((24, 40), 333),
                                             ((24, 40), 2000), ((17, 17), 50)])
def test_any_step_count_gives_the_exact_auc(mode, size, steps):
    model, x, maps = linear_probability_setup(*size)
    exact = exact_auc(model, x, maps, mode)
    assert 0.1 < exact < 0.9  # not a trivial curve
    inputs = make_inputs(x, model, map_clean=maps, target=torch.tensor([0]),
                         spec=InputSpec(size=size[0], mean=(0.5,) * 3, std=(0.25,) * 3))
    value = METRICS.create(mode, {"steps": steps, "baseline": "zero"}).compute(inputs).values.item()
    # the trapezoid over n points of a curve whose slope changes pixel by pixel: within
    # (largest step)·(curve range)/2 of the exact area; at one pixel per step, equal
    tolerance = 1e-5 if steps >= size[0] * size[1] else min(0.02, 1 / steps)
    assert abs(value - exact) <= tolerance, (value, exact)


def test_step_counts_spread_evenly_and_drop_duplicates():
    assert step_counts(10, 4) == [0, 3, 5, 8, 10]  # round(k·10/4), halves up
    assert step_counts(4, 10) == [0, 1, 2, 3, 4]  # more steps than pixels: every pixel once
    counts = step_counts(1024, 300)
    gaps = {b - a for a, b in zip(counts, counts[1:], strict=False)}
    assert gaps == {3, 4} and counts[-1] == 1024


class StdNormalised(torch.nn.Module):
    """Divides the image by its own standard deviation: NaN on a flat image."""

    def forward(self, x):
        z = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
        return torch.stack([z[:, 0].mean(dim=(1, 2)) * 0 + z.abs().mean(dim=(1, 2, 3)), torch.zeros(len(x))], 1)


@pytest.mark.parametrize(("name", "params", "where"), [
    ("deletion", {"steps": 8, "baseline": "zero"}, "deletion step 8 of 8 (256 of 256 pixels replaced by the 'zero'"),
    ("insertion", {"steps": 8, "baseline": "zero"}, "insertion step 0 of 8 (0 of 256 pixels restored into the 'zero'"),
    ("aopc", {"region_size": 8}, "AOPC (morf) step 4 of 4 (256 of 256 pixels replaced by the 'zero'"),
    ("aopc_lerf", {"region_size": 8, "baseline": "black"}, "AOPC (lerf) step 4 of 4 (256 of 256 pixels")])
def test_a_model_that_returns_nan_on_a_perturbed_image_is_an_error_naming_the_step(name, params, where):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, H, W, generator=gen)
    maps = torch.rand(2, H, W, generator=gen)
    result = METRICS.create(name, params).compute(make_inputs(x, StdNormalised(), map_clean=maps,
                                                              target=torch.tensor([0, 0])))
    assert result.status == ["error", "error"] and torch.isnan(result.values).all()
    reason = result.reasons[0]
    assert reason.startswith("the model returned NaN/inf on ") and where in reason, reason
    assert "fewer steps, another baseline, or guard the model" in reason
