"""RISE causal metrics (Petsiuk et al. 2018, METHODS §1): deletion and insertion.

Pixels are ordered by saliency (most salient first, ties by pixel index). The curve has
n = ``steps`` + 1 points: a₀ before any change, then ⌈HW/steps⌉ more pixels per step until every
pixel is deleted (inserted). AUC = (Σa − a₀/2 − a_end/2)/(n − 1), the trapezoid rule on [0, 1].
All curve images of the batch go through the model in ``max_batch``-sized forward calls.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from audit.maps import is_degenerate
from audit.metrics._perturb import (
    baseline,
    compose,
    descending_rank,
    random_scores,
    sample_ids_of,
)
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.models.inference import target_probs
from audit.registry import Params
from audit.spec import InputSpec


def causal_curve(model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, spec: InputSpec, *,
                 mode: str, steps: int, baseline_kind: str, seed: int = 0, sample_ids=(),
                 max_batch: int | None = None) -> torch.Tensor:
    """(B, steps+1) target probability along the deletion or insertion path.

    ``deletion`` starts from x and replaces pixels with the baseline; ``insertion`` starts from
    the baseline and restores pixels of x. A degenerate map has no order: its pixels go in a
    seeded random order (per sample id), so it scores what an uninformed order does.
    """
    b, _, h, w = x.shape
    n_pixels = h * w
    sids = sample_ids_of(sample_ids, b)
    scores = maps.to(device=x.device, dtype=torch.float64).flatten(1)
    flat = is_degenerate(maps).to(x.device).view(b, 1)
    scores = torch.where(flat, random_scores(n_pixels, seed, sids, f"{mode}-random", x.device), scores)
    rank = descending_rank(scores)  # (B, HW): 0 = most salient
    per_step = -(-n_pixels // steps)
    other = baseline(baseline_kind, x, spec, seed, sids)
    start, end = (x, other) if mode == "deletion" else (other, x)
    points = steps + 1
    count = (torch.arange(points, device=x.device) * per_step).clamp(max=n_pixels)

    def changed(j: int, lo: int, hi: int) -> torch.Tensor:
        return (rank[j] < count[lo:hi].view(-1, 1)).view(-1, 1, h, w)

    probs = target_probs(model, b * points,
                         lambda lo, hi: compose(points, changed, end, start, lo, hi),
                         target.to(x.device).repeat_interleave(points), max_batch)
    return probs.view(b, points)


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """(B,) trapezoid area of (B, n) curves on [0, 1]: (Σa − a₀/2 − a_end/2)/(n − 1)."""
    n = curve.shape[1]
    return (curve.sum(dim=1) - curve[:, 0] / 2 - curve[:, -1] / 2) / (n - 1)


class _CausalParams(Params):
    steps: int = Field(32, ge=1, description="curve steps; each changes ceil(HW/steps) pixels")
    max_batch: int | None = Field(None, ge=1, description="images per forward call; "
                                   "default: 32 on a CPU, 512 on a GPU")


class _Causal(Metric):
    compares = "map_model"
    mode = ""

    def compute(self, inputs: MetricInputs) -> MetricResult:
        curve = causal_curve(inputs.attacked_model, inputs.x_attacked, inputs.map_attacked, inputs.target,
                             inputs.spec, mode=self.mode, steps=self.params.steps,
                             baseline_kind=self.params.baseline, seed=inputs.seed,
                             sample_ids=inputs.sample_ids, max_batch=self.params.max_batch)
        return MetricResult.from_values(curve_auc(curve), is_degenerate(inputs.map_attacked))


@METRICS.register("deletion")
class Deletion(_Causal):
    """RISE deletion AUC: f_c as the most salient pixels are replaced first (lower is better).

    Baseline ``zero`` (normalised 0, as the RISE reference code) by default. A degenerate map
    deletes in a seeded random order (status ``degenerate``).
    """

    higher_is_better = False
    mode = "deletion"

    class Params(_CausalParams):
        baseline: Literal["zero", "black", "mean", "blur", "noise"] = "zero"


@METRICS.register("insertion")
class Insertion(_Causal):
    """RISE insertion AUC: f_c as the most salient pixels are restored into a blurred image first.

    Starts from ``blur`` (Gaussian σ 5, kernel 11, as the RISE paper) by default; higher is
    better. A degenerate map inserts in a seeded random order (status ``degenerate``).
    """

    higher_is_better = True
    mode = "insertion"

    class Params(_CausalParams):
        baseline: Literal["zero", "black", "mean", "blur", "noise"] = "blur"
