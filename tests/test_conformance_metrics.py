"""Every registered metric, built-in or not, keeps the metric contract (table-driven)."""

import math

import pytest
import torch

from audit.metrics.base import METRICS, STATUSES, MetricInputs, MetricResult
from audit.spec import InputSpec
from audit.testing import FLOAT32_RTOL, FLOAT64_ATOL, FLOAT64_RTOL, LOGIT_ATOL, PROB_ATOL
from tests.metrics.helpers import tiny_cnn

SPEC = InputSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
B, H, W = 5, 16, 16
NAMES = METRICS.names()


def _explain(model, x, target, ids):
    """SimpleGrad as the cell's explainer (sensitivity metrics re-explain perturbed inputs)."""
    from audit.explainers.base import EXPLAINERS, ExplainContext

    return EXPLAINERS.create("saliency")(model, x, target, ExplainContext(SPEC, 0, tuple(ids)))


def build_inputs(seed: int = 7, rows=slice(None)) -> MetricInputs:
    """Fresh tensors each call (no memo can recognise them). Image 0's attacked map and image 1's
    clean map are constant (degenerate)."""
    gen = torch.Generator().manual_seed(0)
    model, attacked_model = tiny_cnn(seed=0), tiny_cnn(seed=1)
    x = torch.randn(B, 3, H, W, generator=gen)
    x_att = x + 0.1 * torch.randn(B, 3, H, W, generator=gen)
    clean = torch.rand(B, H, W, generator=gen)
    attacked = clean + 0.5 * torch.rand(B, H, W, generator=gen)
    attacked[0] = 0.25
    clean[1] = 0.0
    truth = torch.zeros(B, H, W, dtype=torch.bool)
    truth[:, 3:9, 5:12] = True
    with torch.no_grad():
        predicted, predicted_att = model(x).argmax(1), attacked_model(x_att).argmax(1)
    labels = torch.tensor([0, 1, 2, 0, -1])
    ids = tuple(range(100, 100 + B))
    return MetricInputs(spec=SPEC, x=x[rows], x_attacked=x_att[rows], model=model,
                        attacked_model=attacked_model, target=predicted[rows], labels=labels[rows],
                        predicted=predicted[rows], predicted_attacked=predicted_att[rows],
                        map=clean[rows], map_attacked=attacked[rows], truth=truth[rows], seed=seed,
                        sample_ids=ids[rows], map_swap=clean.flip(0)[rows], explain=_explain,
                        map_reference=clean.flip(1)[rows])


def compute(name: str, inputs: MetricInputs) -> MetricResult:
    return METRICS.create(name).compute(inputs)


def test_the_issue_metrics_are_registered():
    expected = {"fsr", "spearman", "topk_intersection", "com_shift", "aopc", "deletion", "insertion",
                "crop", "pointing_game", "relevance_mass", "accuracy", "agreement"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_contract(name):
    cls = METRICS.get(name)
    assert isinstance(cls.higher_is_better, bool)
    assert cls.compares in ("maps", "map_model", "map_truth", "model")
    assert cls.summary()
    with pytest.raises(ValueError):
        METRICS.create(name, {"no_such_parameter": 1})


@pytest.mark.parametrize("name", NAMES)
def test_one_valid_value_per_image(name):
    result = compute(name, build_inputs())
    assert result.values.shape == (B,) and result.values.dtype == torch.float64
    assert len(result.status) == len(result.reasons) == B
    for value, status in zip(result.values.tolist(), result.status, strict=True):
        assert status in STATUSES and status != "error"
        assert math.isfinite(value) == (status in ("ok", "degenerate"))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_the_same_seed(name):
    a, b = compute(name, build_inputs()), compute(name, build_inputs())
    torch.testing.assert_close(a.values, b.values, equal_nan=True, rtol=0, atol=0)
    assert a.status == b.status


def batch_tolerance(name: str) -> dict[str, float]:
    """How far one image's value may move with the batch around it (see ``audit.testing``).

    Metrics that forward perturbed images score float32 probabilities whose last bits depend on
    the batch size (oneDNN picks kernels by processor and shape): probability scale, or logit
    scale for the crop metric's log p. The others compute in float64 from the very same maps.
    """
    if METRICS.get(name).compares != "map_model":
        return {"rtol": FLOAT64_RTOL, "atol": FLOAT64_ATOL}
    return {"rtol": FLOAT32_RTOL, "atol": LOGIT_ATOL if name == "crop" else PROB_ATOL}


@pytest.mark.parametrize("name", NAMES)
def test_an_image_scores_the_same_in_any_batch(name):
    full, part = compute(name, build_inputs()), compute(name, build_inputs(rows=slice(2, 4)))
    assert full.status[2:4] == part.status
    torch.testing.assert_close(full.values[2:4], part.values, equal_nan=True, **batch_tolerance(name))


@pytest.mark.parametrize("name", [n for n in NAMES if METRICS.get(n).per_explainer()])
def test_degenerate_maps_are_counted_never_nan(name):
    result = compute(name, build_inputs())
    assert result.status[0] == "degenerate"  # the attacked map every such metric judges is flat
    assert math.isfinite(result.values[0].item())
    if METRICS.get(name).compares == "maps":
        # image 1's clean map is flat: every map comparison sees it, except fsr's default
        # (location) fooling, which judges the attacked map alone
        assert result.status[1] == ("ok" if name == "fsr" else "degenerate")
        assert math.isfinite(result.values[1].item())
