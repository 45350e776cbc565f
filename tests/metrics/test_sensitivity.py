"""max_sensitivity / avg_sensitivity: agreement with Quantus 0.6 on the same noise draws, and
known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.base import METRICS, MetricInputs
from audit.metrics.sensitivity import noise_draws
from audit.testing import TINY_SPEC, tiny_model

B, N = 3, 4


def _explain(model, x, target, ids):
    return EXPLAINERS.create("saliency")(model, x, target, ExplainContext(TINY_SPEC, 5, tuple(ids)))


def _inputs(model=None, radius_seed: int = 11) -> MetricInputs:
    model = model if model is not None else tiny_model()
    gen = torch.Generator().manual_seed(3)
    x = TINY_SPEC.normalize(torch.rand(B, 3, 16, 16, generator=gen))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    ids = tuple(range(40, 40 + B))
    maps = _explain(model, x, predicted, ids)
    return MetricInputs(spec=TINY_SPEC, x=x, x_attacked=x, model=model, attacked_model=model, target=predicted,
                        labels=predicted, predicted=predicted, predicted_attacked=predicted, map=maps,
                        map_attacked=maps, seed=radius_seed, sample_ids=ids, explain=_explain)


@pytest.mark.parametrize("name, quantus_name", [("max_sensitivity", "MaxSensitivity"),
                                                 ("avg_sensitivity", "AvgSensitivity")])
def test_matches_quantus_on_the_same_draws(name, quantus_name):
    quantus = pytest.importorskip("quantus")
    inputs = _inputs()
    params = {"radius": 0.05, "n_samples": N}
    ours = METRICS.create(name, params).compute(inputs)
    draws = noise_draws(inputs, 0.05, N).numpy().reshape(N, B, -1)
    calls = iter(range(N))

    def same_draws(arr, indices, **kwargs):  # Quantus calls it once per step
        return arr + draws[next(calls)]

    def explain_func(model, inputs, targets, **kwargs):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        maps = _explain(model, x, torch.as_tensor(targets), inputs_ids)
        return maps.unsqueeze(1).numpy()

    inputs_ids = inputs.sample_ids
    metric = getattr(quantus, quantus_name)(nr_samples=N, perturb_func=same_draws, normalise=False, abs=False,
                                            disable_warnings=True, display_progressbar=False)
    theirs = metric(model=inputs.model, x_batch=inputs.x.numpy(), y_batch=inputs.target.numpy(),
                    a_batch=inputs.map_attacked.unsqueeze(1).numpy(), explain_func=explain_func,
                    device="cpu", batch_size=B)
    assert next(calls, None) is None  # Quantus used exactly our N draws
    np.testing.assert_allclose(ours.values.numpy(), np.asarray(theirs, dtype=np.float64), rtol=0, atol=1e-4)
    assert ours.status == ["ok"] * B


def test_known_answer_on_a_linear_model():
    """For a linear model SimpleGrad does not depend on x: sensitivity is exactly 0."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    inputs = _inputs(model)
    for name in ("max_sensitivity", "avg_sensitivity"):
        result = METRICS.create(name, {"n_samples": 3}).compute(inputs)
        assert result.values.abs().max().item() <= 1e-6


def test_max_is_at_least_avg_and_grows_with_radius():
    inputs = _inputs()
    small = METRICS.create("avg_sensitivity", {"radius": 0.01, "n_samples": N}).compute(inputs).values
    large = METRICS.create("avg_sensitivity", {"radius": 0.2, "n_samples": N}).compute(inputs).values
    top = METRICS.create("max_sensitivity", {"radius": 0.2, "n_samples": N}).compute(inputs).values
    assert (top >= large - 1e-12).all() and (large > small).all() and (small > 0).all()


def test_noise_is_uniform_in_the_pixel_ball_and_per_image():
    inputs = _inputs()
    draws = noise_draws(inputs, 0.05, 50)
    pixels = draws * 0.25  # back to pixel units (std 0.25)
    assert pixels.abs().max().item() <= 0.05 + 1e-7 and pixels.abs().max().item() > 0.049
    assert abs(pixels.mean().item()) < 2e-3
    alone = noise_draws(MetricInputs(**{**inputs.__dict__, "x_attacked": inputs.x_attacked[1:2],
                                        "sample_ids": inputs.sample_ids[1:2]}), 0.05, 50)
    assert torch.equal(alone[:, 0], draws[:, 1])


def test_all_zero_map_is_skipped_with_a_reason():
    inputs = _inputs()
    inputs.map_attacked = inputs.map_attacked.clone()
    inputs.map_attacked[1] = 0
    result = METRICS.create("max_sensitivity", {"n_samples": 2}).compute(inputs)
    assert result.status == ["ok", "skipped", "ok"] and "all zero" in result.reasons[1]
    assert np.isnan(result.values[1].item())
