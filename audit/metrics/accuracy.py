"""Model-level metrics: top-1 accuracy and agreement with the original model."""

from __future__ import annotations

import torch

from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult


@METRICS.register("accuracy")
class Accuracy(Metric):
    """Top-1 accuracy of the attacked model on the attacked images against the labels; where the
    data lists several accepted classes per image (``MetricInputs.accepted``), a prediction is
    right when it is any of them (ImageNet-ReaL accuracy, Beyer et al. 2020)."""

    higher_is_better = True
    compares = "model"
    binary = True

    def compute(self, inputs: MetricInputs) -> MetricResult:
        known = inputs.labels >= 0
        if inputs.accepted is not None:
            hit = (inputs.accepted == inputs.predicted_attacked.view(-1, 1)) & (inputs.accepted >= 0)
            values = hit.any(dim=1).to(torch.float64)
        else:
            values = (inputs.predicted_attacked == inputs.labels).to(torch.float64)
        if bool(known.all()):
            return MetricResult.from_values(values)
        result = MetricResult.from_values(values)
        for i, has_label in enumerate(known.tolist()):
            if not has_label:
                result.values[i] = float("nan")
                result.status[i], result.reasons[i] = "skipped", "image has no label"
        return result


@METRICS.register("agreement")
class Agreement(Metric):
    """Fraction of images where the attacked setting predicts the original model's class."""

    higher_is_better = True
    compares = "model"
    binary = True

    def compute(self, inputs: MetricInputs) -> MetricResult:
        return MetricResult.from_values((inputs.predicted_attacked == inputs.predicted).to(torch.float64))
