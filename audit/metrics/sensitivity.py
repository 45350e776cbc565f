"""Explanation sensitivity (Yeh, Hsieh, Suggala, Inouye, Ravikumar, NeurIPS 2019), as in Quantus.

For the attacked setting's map Φ(x) (the cell's explainer on the attacked model and inputs) and
``n_samples`` perturbations δ₁..δₙ drawn uniformly from the L∞ ball of ``radius`` (pixel units,
each element U[−r, r], converted to the model's normalised units through std, not clipped —
Quantus' ``uniform_noise``):

    max_sensitivity(x) = max_j ‖Φ(x + δ_j) − Φ(x)‖_F / ‖Φ(x)‖_F
    avg_sensitivity(x) = mean_j ‖Φ(x + δ_j) − Φ(x)‖_F / ‖Φ(x)‖_F

Lower is better (a stable explainer). This is Quantus 0.6's ``MaxSensitivity`` /
``AvgSensitivity`` with ``similarity_func=difference``, Frobenius norms, ``normalise=False``,
``abs=False`` and ``return_nan_when_prediction_changes=False`` (tests compare the two on the same
draws within 1e-4). The draws are per image from a CPU generator seeded by the cell and the
image's id, and the two metrics of a cell use the same draws. The re-explanations run as
``n_samples`` batches of the whole image batch (one draw per image each).

An all-zero Φ(x) makes the ratio undefined: the image is ``skipped`` with that reason. Another
constant Φ(x) is counted ``degenerate`` (METHODS §0) with its (defined) value.
Values are ≥ 0 (dimensionless; 1 means the change is as large as the map).
"""

from __future__ import annotations

import torch
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.registry import Params
from audit.seeding import generator


class SensitivityParams(Params):
    radius: float = Field(0.05, gt=0.0, description="L∞ radius of the uniform noise, pixel units [0, 1]")
    n_samples: int = Field(10, ge=1, description="perturbations per image")


def noise_draws(inputs: MetricInputs, radius: float, n_samples: int) -> torch.Tensor:
    """(n, B, C, H, W) perturbations in *normalised* units: U[−r, r] per pixel element, divided
    by the channel's std; image b's draws come from its own CPU generator."""
    x = inputs.x_attacked
    b = x.shape[0]
    ids = inputs.sample_ids or tuple(range(b))
    draws = [(2 * torch.rand((n_samples, *x.shape[1:]), generator=generator(inputs.seed, "sensitivity", int(s)),
                             dtype=torch.float64) - 1) * radius for s in ids[:b]]
    stacked = torch.stack(draws, dim=1) if draws else torch.zeros((n_samples, 0, *x.shape[1:]), dtype=torch.float64)
    std = torch.tensor(inputs.spec.std, dtype=torch.float64).view(1, 1, -1, 1, 1)
    return (stacked / std).to(device=x.device, dtype=x.dtype)


def sensitivities(inputs: MetricInputs, radius: float, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) float64 ratios ‖Φ(x + δ_j) − Φ(x)‖ / ‖Φ(x)‖ and (B,) bool zero-map flags.

    Raises RuntimeError when the metric has no explainer to call (a model-level cell)."""
    if inputs.explain is None:
        raise RuntimeError("sensitivity metrics need the cell's explainer")
    base = inputs.map_attacked.to(torch.float64).flatten(1)
    norm = base.norm(dim=1)
    ratios = []
    for delta in noise_draws(inputs, radius, n_samples):
        maps = inputs.explain(inputs.attacked_model, inputs.x_attacked + delta, inputs.target,
                              inputs.sample_ids)
        diff = (maps.to(torch.float64).flatten(1).to(base.device) - base).norm(dim=1)
        ratios.append(diff / norm.clamp_min(torch.finfo(torch.float64).tiny))
    zero = norm == 0
    return torch.stack(ratios, dim=1), zero


class _Sensitivity(Metric):
    Params = SensitivityParams
    higher_is_better = False
    compares = "map_model"

    def _reduce(self, ratios: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, inputs: MetricInputs) -> MetricResult:
        ratios, zero = sensitivities(inputs, self.params.radius, self.params.n_samples)
        values = self._reduce(ratios).cpu()
        # a constant map has no ranking (METHODS §0): counted degenerate, its ratio still defined
        result = MetricResult.from_values(torch.where(zero.cpu(), torch.zeros_like(values), values),
                                          is_degenerate(inputs.map_attacked).cpu())
        for i, is_zero in enumerate(zero.tolist()):
            if is_zero:
                result.values[i] = float("nan")
                result.status[i] = "skipped"
                result.reasons[i] = "the map is all zero: relative sensitivity is undefined"
        return result


@METRICS.register("max_sensitivity")
class MaxSensitivity(_Sensitivity):
    """Max-sensitivity (Yeh et al. 2019): max over uniform δ in the radius of ‖ΔΦ‖/‖Φ‖ (lower is better)."""

    def _reduce(self, ratios: torch.Tensor) -> torch.Tensor:
        return ratios.max(dim=1).values


@METRICS.register("avg_sensitivity")
class AvgSensitivity(_Sensitivity):
    """Avg-sensitivity (Yeh et al. 2019): mean over uniform δ in the radius of ‖ΔΦ‖/‖Φ‖ (lower is better)."""

    def _reduce(self, ratios: torch.Tensor) -> torch.Tensor:
        return ratios.mean(dim=1)
