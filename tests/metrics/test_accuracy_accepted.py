"""Accuracy against a set of accepted classes per image (ImageNet-ReaL style, builtin:photos)."""

import torch

from audit.metrics.accuracy import Accuracy
from audit.metrics.base import MetricInputs
from audit.spec import InputSpec


def inputs(predicted, labels, accepted=None):
    x = torch.zeros(len(predicted), 3, 2, 2)
    predicted, labels = torch.tensor(predicted), torch.tensor(labels)
    return MetricInputs(spec=InputSpec(2, (0.5,) * 3, (0.5,) * 3), x=x, x_attacked=x, model=None,
                        attacked_model=None, target=predicted, labels=labels, predicted=predicted,
                        predicted_attacked=predicted,
                        accepted=None if accepted is None else torch.tensor(accepted))


def test_top1_in_the_accepted_set():
    accepted = [[285, 281, 282], [967, 968, -1], [812, -1, -1], [985, -1, -1]]
    # 281 is accepted for the first image though its label is 285; -1 padding never matches
    result = Accuracy().compute(inputs([281, 967, 450, -1], [285, 967, 812, 985], accepted))
    assert result.values.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert Accuracy().compute(inputs([281, 967, 450, -1], [285, 967, 812, 985])).values.tolist() == [0, 1, 0, 0]
