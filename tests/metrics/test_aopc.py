import numpy as np
import pytest
import torch

from audit.metrics._perturb import random_scores
from audit.metrics.aopc import aopc_from_curves, region_areas, region_perturbation, region_ranks, region_sums
from audit.metrics.base import METRICS
from audit.spec import InputSpec
from audit.testing import FLOAT32_RTOL, PROB_ATOL
from tests.metrics.helpers import SPEC, LinearPixelModel, LinearProbabilityModel, make_inputs, tiny_cnn

H = W = 16


def linear_setup(b=6, seed=0):
    """A model whose evidence is a known weight map; x > 0 so every pixel adds evidence."""
    gen = torch.Generator().manual_seed(seed)
    # Peaked weights, scaled so the clean logit is about 1: the sigmoid is not saturated.
    weight = torch.rand(1, H, W, generator=gen) ** 3 * 0.01
    model = LinearPixelModel(weight)
    x = torch.rand(b, 3, H, W, generator=gen) + 0.5
    target = torch.zeros(b, dtype=torch.long)
    return model, x, weight.expand(b, H, W).clone(), target


def aopc_all(model, x, maps, target, seed=0, **params):
    inputs = make_inputs(x, model, map_clean=maps, target=target, seed=seed)
    return {name: METRICS.create(name, params).compute(inputs)
            for name in ("aopc", "aopc_lerf", "aopc_random")}


def test_region_sums_match_a_loop_over_the_row_major_grid():
    maps = torch.randn(2, 5, 7, dtype=torch.float64)
    sums = region_sums(maps, 4)  # 2 × 2 regions; the right and bottom ones are cut short
    assert sums.shape == (2, 4)
    for r, (rows, cols) in enumerate([(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 7)),
                                      (slice(4, 5), slice(0, 4)), (slice(4, 5), slice(4, 7))]):
        torch.testing.assert_close(sums[:, r], maps[:, rows, cols].sum(dim=(1, 2)))


def test_true_evidence_map_orders_morf_above_random_above_lerf():
    model, x, maps, target = linear_setup()
    out = aopc_all(model, x, maps, target, region_size=4)
    morf, lerf, rand = (out[n].values for n in ("aopc", "aopc_lerf", "aopc_random"))
    assert torch.all(morf > rand) and torch.all(rand > lerf)
    assert all(s == "ok" for r in out.values() for s in r.status)


def test_curves_start_at_the_clean_probability_and_end_at_the_baseline():
    model, x, maps, target = linear_setup(b=3)
    curves = region_perturbation(model, x, maps, target, SPEC, region_size=4)
    clean = torch.sigmoid((x * model.weight).flatten(1).sum(1)).double()
    for curve in curves.values():
        assert curve.shape == (3, 17)
        torch.testing.assert_close(curve[:, 0], clean)
        torch.testing.assert_close(curve[:, -1], torch.full((3,), 0.5, dtype=torch.float64))  # all zero
    assert torch.equal(aopc_from_curves(torch.ones(2, 5)), torch.zeros(2))


def test_map_unrelated_to_the_model_scores_like_random_order():
    model, x, _, target = linear_setup(b=48, seed=1)
    noise_maps = torch.rand(48, H, W, generator=torch.Generator().manual_seed(9))
    out = aopc_all(model, x, noise_maps, target, region_size=4)
    morf, rand = out["aopc"].values, out["aopc_random"].values
    spread = (out["aopc"].values - out["aopc_lerf"].values).abs().mean()
    # The means agree to well within the per-image spread of orders.
    assert abs(morf.mean() - rand.mean()) < 0.25 * spread + 1e-3


def test_degenerate_map_scores_the_random_order_and_its_reverse():
    model, x, maps, target = linear_setup(b=2)
    maps[1] = 0.3
    out = aopc_all(model, x, maps, target, region_size=4)
    # a map whose regions rank exactly in the reverse of image 1's random order (no ties)
    shuffled = random_scores(16, 0, [1], "aopc-random", torch.device("cpu"))[0]
    reverse = maps.clone()
    reverse[1] = (-shuffled).view(4, 1, 4, 1).expand(4, 4, 4, 4).reshape(H, W).float()
    reversed_aopc = aopc_all(model, x, reverse, target, region_size=4)["aopc"]
    assert reversed_aopc.status == ["ok", "ok"]
    expected = (out["aopc_random"].values[1] + reversed_aopc.values[1]) / 2
    for name in ("aopc", "aopc_lerf"):
        assert out[name].status == ["ok", "degenerate"]
        torch.testing.assert_close(out[name].values[1], expected, rtol=0, atol=1e-12)


def test_one_forward_call_per_max_batch_and_same_values():
    model, x, maps, target = linear_setup(b=4)
    inputs = make_inputs(x, model, map_clean=maps, target=target)
    model.calls = model.images = 0
    full = {name: METRICS.create(name, {"region_size": 4, "max_batch": 256}).compute(inputs)
            for name in ("aopc", "aopc_lerf", "aopc_random")}
    assert model.calls == 3  # each row: its own order, 4 × (1 + 16) images in one call
    assert model.images == 3 * 4 * (1 + 16)
    inputs = make_inputs(x, model, map_clean=maps, target=target)  # another cell: nothing shared
    model.calls = 0
    small = {name: METRICS.create(name, {"region_size": 4, "max_batch": 50}).compute(inputs)
             for name in ("aopc", "aopc_lerf", "aopc_random")}
    assert model.calls == 3 * -(-(4 * 17) // 50)
    for name in full:
        # other chunk sizes, other float32 kernels: equal to rounding (audit.testing)
        torch.testing.assert_close(full[name].values, small[name].values, rtol=FLOAT32_RTOL, atol=PROB_ATOL)


def test_rows_give_the_same_values_whichever_runs_first_and_forward_only_their_order():
    model, x, maps, target = linear_setup(b=3)
    maps[1] = 0.5  # a degenerate map: its MoRF and LeRF orders are the seeded random order and
    # its reverse (one more pass of image 1 for each of them)
    results = []
    for names in (("aopc_random", "aopc_lerf", "aopc"), ("aopc", "aopc_lerf", "aopc_random")):
        inputs = make_inputs(x, model, map_clean=maps, target=target, seed=7)
        model.images = 0
        results.append({n: METRICS.create(n, {"region_size": 4}).compute(inputs) for n in names})
        assert model.images == (3 * 3 + 2) * (1 + 16)  # three rows, each x⁽⁰⁾ and its own 16 steps
        other = {n: METRICS.create(n, {"region_size": 8}).compute(inputs) for n in names}
        assert not torch.equal(other["aopc"].values, results[-1]["aopc"].values)
    for name in ("aopc", "aopc_lerf", "aopc_random"):
        assert torch.equal(results[0][name].values, results[1][name].values)
    assert results[0]["aopc"].values[1] == results[0]["aopc_lerf"].values[1]  # the same two orders


def test_an_image_scores_the_same_alone_or_in_a_batch():
    model = tiny_cnn()
    x = torch.randn(5, 3, H, W, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(5, H, W, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, 0, 1])
    kwargs = dict(region_size=4, baseline_kind="noise", seed=5)
    batch = region_perturbation(model, x, maps, target, SPEC, sample_ids=range(10, 15), **kwargs)
    alone = region_perturbation(model, x[3:4], maps[3:4], target[3:4], SPEC, sample_ids=[13], **kwargs)
    for name in batch:
        torch.testing.assert_close(batch[name][3:4], alone[name], atol=PROB_ATOL, rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("kind", ["zero", "black", "mean", "blur", "noise"])
def test_every_baseline_gives_finite_values(kind):
    model, x, maps, target = linear_setup(b=2)
    out = aopc_all(model, x, maps, target, region_size=8, baseline=kind, steps=3)
    assert all(torch.isfinite(r.values).all() for r in out.values())


def test_region_perturbation_matches_quantus():
    quantus = pytest.importorskip("quantus", reason="quantus (dev dependency) is not installed")
    model = tiny_cnn(seed=4)
    gen = torch.Generator().manual_seed(4)
    b, size, steps = 8, 32, 10
    x = torch.randn(b, 3, size, size, generator=gen)
    maps = torch.rand(b, size, size, generator=gen)  # continuous: no ties in region sums
    with torch.no_grad():
        target = model(x).argmax(1)
    ours = region_perturbation(model, x, maps, target, SPEC, region_size=4, steps=steps)
    metric = quantus.RegionPerturbation(patch_size=4, regions_evaluation=steps, perturb_baseline=0.0,
                                        abs=False, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(),
                    a_batch=maps.unsqueeze(1).numpy(), device="cpu", batch_size=b)
    theirs = np.asarray(theirs, dtype=float)  # (B, L): f(x) − f(x⁽ᵏ⁾), k = 1..L
    for order, quantus_order in (("morf", "morf"), ("lerf", "lerf")):
        if quantus_order != "morf":
            metric.order = quantus_order
            theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(),
                                       a_batch=maps.unsqueeze(1).numpy(), device="cpu", batch_size=b),
                                dtype=float)
        drops = (ours[order][:, :1] - ours[order][:, 1:]).numpy()
        np.testing.assert_allclose(drops, theirs, atol=PROB_ATOL)
        # AOPC from Quantus' curve: the k = 0 term is 0, so divide the sum by L + 1.
        np.testing.assert_allclose(aopc_from_curves(ours[order]).numpy(), theirs.sum(1) / (steps + 1),
                                   atol=PROB_ATOL)


@pytest.mark.parametrize("region_size", [5, 16, 1])
def test_matches_a_plain_loop_for_any_region_size(region_size):
    """Edge regions smaller than region_size² (16 is not a multiple of 5) and the extremes; regions
    ranked by mean relevance per pixel (the sum would demote the small edge regions)."""
    model = tiny_cnn(seed=6)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, H, W, generator=gen)
    maps = torch.rand(2, H, W, generator=gen)
    target = torch.tensor([1, 2])
    steps = 6
    curves = region_perturbation(model, x, maps, target, SPEC, region_size=region_size, steps=steps,
                                 baseline_kind="mean", orders=("morf", "lerf"))
    fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    grid = [(r, c) for r in range(0, H, region_size) for c in range(0, W, region_size)]
    for i in range(2):
        sums = torch.tensor([maps[i, r:r + region_size, c:c + region_size].double().mean().item()
                             for r, c in grid])
        for order, ranking in (("morf", sorted(range(len(grid)), key=lambda g: -sums[g])),
                               ("lerf", sorted(range(len(grid)), key=lambda g: sums[g]))):
            image, expected = x[i].clone(), []
            with torch.no_grad():
                expected.append(torch.softmax(model(image[None]).double(), 1)[0, target[i]].item())
                for g in ranking[:min(steps, len(grid))]:
                    r, c = grid[g]
                    image[:, r:r + region_size, c:c + region_size] = fill[i, :, r:r + region_size,
                                                                          c:c + region_size]
                    expected.append(torch.softmax(model(image[None]).double(), 1)[0, target[i]].item())
            torch.testing.assert_close(curves[order][i], torch.tensor(expected, dtype=torch.float64),
                                       atol=PROB_ATOL, rtol=FLOAT32_RTOL)


@pytest.mark.parametrize(("size", "region_size"), [(32, 5), (32, 6), (30, 8), (32, 3), (32, 4)])
def test_regions_that_do_not_tile_are_weighted_by_the_area_they_remove(size, region_size):
    """A model that counts the pixels kept (p linear, the same weight everywhere): every order
    removes evidence at the same rate per pixel, so MoRF, LeRF and random must agree, at the
    area-weighted Riemann sum D/2·(1 + Σa²/(HW)²)·R/(R + 1) ≈ D/2 (D = the total drop)."""
    weight = torch.full((size, size), 0.9 / size**2)
    model = LinearProbabilityModel(weight, 0.05).eval()
    x = torch.ones(1, 3, size, size)
    maps = torch.rand(1, size, size, generator=torch.Generator().manual_seed(size + region_size))
    spec = InputSpec(size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    inputs = make_inputs(x, model, map_clean=maps, target=torch.tensor([0]), spec=spec)
    values = {name: METRICS.create(name, {"region_size": region_size}).compute(inputs).values.item()
              for name in ("aopc", "aopc_lerf", "aopc_random")}
    areas = region_areas(size, size, region_size)
    expected = 0.45 * (1 + (areas**2).sum().item() / size**4) * len(areas) / (len(areas) + 1)
    for value in values.values():
        assert abs(value - expected) <= 1e-5, values
    assert abs(expected - 0.45) <= 0.45 / len(areas)


def test_a_small_dense_edge_region_comes_first_in_morf():
    """Ranked by relevance per pixel: an edge region of 4 px holding the densest relevance goes
    first, though its sum is below that of a full region."""
    maps = torch.zeros(1, 10, 10)
    maps[0, 8:10, 8:10] = 1.0  # edge region (2×2), sum 4
    maps[0, 0:4, 0:4] = 0.5  # full region (4×4), sum 8
    rank = region_ranks(maps, 4, seed=0, sample_ids=[0], orders=("morf",))[0, 0]
    assert rank[8].item() == 0 and rank[0].item() == 1  # row-major 3×3 grid: region 8 is the corner
