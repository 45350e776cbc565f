import torch

from audit.fills import gaussian_blur
from audit.metrics.base import METRICS
from audit.metrics.causal import causal_curve, curve_auc
from audit.testing import FLOAT32_RTOL, PROB_ATOL
from tests.metrics.helpers import SPEC, LinearPixelModel, make_inputs

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
    steps = 5  # 256 pixels: 52 per step, the last step only 48
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
                    chosen = order[:min(step * 52, H * W)]
                    image[:, chosen] = source[:, chosen]
                    logits = model(image.view(1, 3, H, W)).double()
                    expected.append(torch.softmax(logits, 1)[0, target[i]].item())
            torch.testing.assert_close(curve[i], torch.tensor(expected, dtype=torch.float64),
                                       atol=PROB_ATOL, rtol=FLOAT32_RTOL)
