"""The model contract every audit relies on, checked on one real batch before any work.

The metrics, RISE and the explainers treat the model's outputs as **logits**: they take a
softmax for probabilities. A model that already ends in a softmax would be softmaxed twice
(scores squashed towards uniform, silently), one ending in log-softmax is fine for
probabilities (softmax of log-probabilities gives them back) but explains log p rather than a
logit. So:

- :func:`output_kind` recognises probabilities (every value ≥ 0, every row summing to 1) and
  log-probabilities (every value ≤ 0, every row's logsumexp 0), each within :data:`SUM_ATOL`
  (float32 rounding over 1000 classes stays below 1e-4);
- ``model.output: probabilities`` makes the engine use ``log(p)`` as logits
  (:class:`ProbabilitiesToLogits`, exact: softmax(log p) = p); ``log_probabilities`` uses the
  outputs as they are; ``logits`` says "trust me" and skips the recognition;
- :func:`check_deterministic`: the same batch twice in eval mode must give bit-identical outputs
  (the very same computation repeated), else the model has randomness in its forward (dropout
  called with ``training=True``, noise) and every number of the audit would change run to run.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from audit.errors import UserError

Output = Literal["logits", "probabilities", "log_probabilities"]
SUM_ATOL = 1e-3


def output_kind(out: torch.Tensor) -> Output:
    """What a (B, C) output looks like: probabilities, log-probabilities or logits."""
    if out.dim() != 2 or out.shape[1] < 2:
        return "logits"
    o = out.detach().double()
    if bool((o >= 0).all()) and float((o.sum(dim=1) - 1).abs().max()) <= SUM_ATOL:
        return "probabilities"
    if bool((o <= 0).all()) and float(torch.logsumexp(o, dim=1).abs().max()) <= SUM_ATOL:
        return "log_probabilities"
    return "logits"


class ProbabilitiesToLogits(nn.Module):
    """Wraps a model that returns probabilities: forward returns log(p), clamped at the smallest
    normal float so a probability of 0 stays finite. (B, C) in [0, 1] → (B, C) ≤ 0."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x)
        return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def check_output(out: torch.Tensor, declared: Output | None) -> None:
    """Raise :class:`UserError` where the outputs contradict the declared (or default: logits)
    kind. ``out`` is what the engine's model returns (after :class:`ProbabilitiesToLogits`)."""
    if declared == "logits":
        return
    kind = output_kind(out)
    if declared is None and kind != "logits":
        what = ("probabilities (every row ≥ 0 and sums to 1)" if kind == "probabilities"
                else "log-probabilities (every row's logsumexp is 0)")
        raise UserError(f"the model returns {what}; the audit takes softmax of the outputs, so scores "
                        f"would be wrong: return logits (drop the final "
                        f"{'softmax' if kind == 'probabilities' else 'log-softmax'}) or set model.output: {kind}")
    if declared in ("probabilities", "log_probabilities") and kind != "log_probabilities":
        raise UserError(f"model.output is {declared} but the model's outputs are not "
                        f"{declared.replace('_', '-')} (rows do not sum to 1); remove model.output or fix it")


def check_deterministic(first: torch.Tensor, second: torch.Tensor) -> None:
    """Raise :class:`UserError` unless two eval-mode forwards of one batch agree bit for bit."""
    if first.shape == second.shape and torch.equal(first, second):
        return
    diff = float((first.double() - second.double()).abs().max()) if first.shape == second.shape else float("nan")
    raise UserError(f"the model is not deterministic in eval mode: the same batch twice gives outputs that "
                    f"differ by up to {diff:.3g}; remove randomness from forward (dropout called with "
                    "training=True, F.dropout without training=self.training, added noise)")
