"""Every registered explainer passes audit.testing.check_explainer (issue B's conformance suite)."""

import pytest

from audit.explainers.base import EXPLAINERS
from audit.testing import check_explainer

# Small settings so the whole table runs in seconds on two cores; the checks are about the
# plumbing (shape, seeding, batching, hooks), which does not depend on these sizes.
FAST = {
    "rise": {"n_masks": 64, "batch_size": 24},
    "mc_rise": {"n_masks": 64, "batch_size": 24},
    "smoothgrad": {"n_samples": 4},
    "integrated_gradients": {"n_steps": 8},
    "realtime_saliency": {"steps": 3, "batch_size": 4, "width": 8},
}


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_conformance(name):
    results = check_explainer(EXPLAINERS.create(name, FAST.get(name)))
    assert all(results.values())
    assert {"shape_dtype", "finite", "deterministic", "batch_invariant", "model_untouched",
            "clean_after_raise"} <= set(results)
    explainer = EXPLAINERS.get(name)
    if explainer.not_differentiable(FAST.get(name) or {}) is None:
        assert results["differentiable"]
    if EXPLAINERS.get(name).needs_training_data:
        assert results["train_deterministic"] and results["train_model_untouched"]


def test_lrp_epsilon_conforms_with_its_differentiable_map():
    """lrp's differentiable form exists for composite: epsilon only (the default has none)."""
    assert check_explainer(EXPLAINERS.create("lrp", {"composite": "epsilon"}))["differentiable"]
    assert "differentiable" not in check_explainer(EXPLAINERS.create("lrp"))


@pytest.mark.parametrize("fill", ["noise", "random_color", "blur", "black", "mean", "dabkowski"])
def test_rise_fills_conform(fill):
    check_explainer(EXPLAINERS.create("rise", {"n_masks": 48, "batch_size": 20, "fill": fill}))


def test_rise_control_variate_conforms():
    params = {"n_masks": 48, "batch_size": 20, "estimator": "control_variate", "grid": 4, "cv_grid": 4}
    check_explainer(EXPLAINERS.create("rise", params))
