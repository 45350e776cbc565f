"""RISE causal metrics (Petsiuk et al. 2018, METHODS §1): deletion and insertion.

Pixels are ordered by saliency, most salient first. The curve a_k is f_c after point k of the
path; the AUC is the trapezoid rule over the *fraction of pixels actually changed*, on [0, 1]:
AUC = Σ_k (t_{k+1} − t_k)(a_k + a_{k+1})/2 with t_k = n_k/HW. When ``steps`` divides HW this is
the RISE formula (Σa − a₀/2 − a_end/2)/(n − 1). All curve images of the batch go through the
model in ``max_batch``-sized forward calls.

METHODS-style notes:

- Partial steps. Point k changes n_k = round(k·HW/steps) pixels, so the points spread evenly over
  the whole path whatever ``steps`` is (a step changes ⌊HW/steps⌋ or ⌈HW/steps⌉ pixels), and
  duplicate points (``steps`` > HW) are dropped: n = min(steps, HW) + 1 points. A fixed
  ⌈HW/steps⌉ pixels per step (this tool before) finishes the path early when ``steps`` does not
  divide HW and then integrates a flat tail: on a model whose probability is linear in the pixels kept (exact
  deletion AUC 0.448) it gave 0.383 at 300 steps and 0.234 at 1000. Now every ``steps`` gives
  the exact value to discretisation error.
- Ties. Tied pixels (exact zeros of saturated or ReLU-cut gradients, Grad-CAM's zero area) come
  in a seeded random order per image (label ``deletion-random`` / ``insertion-random``, the cell
  seed and the sample id), not in raster order, which would let the object's position decide
  the score; an image with ties scores the mean AUC of that order and its reverse
  (:mod:`audit.metrics._perturb`). A degenerate map is one big tie: it is perturbed in that
  random order (and its reverse) and scores what an uninformed order does (status
  ``degenerate``).
- Non-finite values. A perturbed image the model answers with NaN/inf makes that image's value
  ``error``, the reason naming the step, the baseline and the fixes. (Non-finite *maps* never
  reach a metric in a run: the engine marks them ``error`` first.)
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
    has_ties,
    mark_errors,
    nonfinite_curve_reasons,
    random_scores,
    sample_ids_of,
)
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.models.inference import target_probs
from audit.registry import Params
from audit.spec import InputSpec


def step_counts(n_pixels: int, steps: int) -> list[int]:
    """Pixels changed at each point of the path: round(k·HW/steps) for k = 0..steps, duplicates
    dropped, so 0 first and HW last (n = min(steps, HW) + 1 points)."""
    counts = [(2 * k * n_pixels + steps) // (2 * steps) for k in range(steps + 1)]  # round half up
    return sorted(set(counts))


def causal_curve(model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, spec: InputSpec, *,
                 mode: str, steps: int, baseline_kind: str, seed: int = 0, sample_ids=(),
                 max_batch: int | None = None, reverse_ties: bool = False) -> torch.Tensor:
    """(B, n) target probability at the n points of the deletion or insertion path, point k
    having changed ``step_counts(HW, steps)[k]`` pixels.

    ``deletion`` starts from x and replaces pixels with the baseline; ``insertion`` starts from
    the baseline and restores pixels of x. Tied saliencies go in a seeded random order per sample
    id (``reverse_ties``: in the reverse of that order); a degenerate map has no order at all:
    all its pixels go in that random order.
    """
    b, _, h, w = x.shape
    n_pixels = h * w
    sids = sample_ids_of(sample_ids, b)
    scores = maps.to(device=x.device, dtype=torch.float64).flatten(1)
    key = random_scores(n_pixels, seed, sids, f"{mode}-random", x.device)
    key = -key if reverse_ties else key
    flat = is_degenerate(maps).to(x.device).view(b, 1)
    scores = torch.where(flat, key, scores)
    rank = descending_rank(scores, tie_key=key)  # (B, HW): 0 = most salient
    other = baseline(baseline_kind, x, spec, seed, sids)
    start, end = (x, other) if mode == "deletion" else (other, x)
    count = torch.tensor(step_counts(n_pixels, steps), device=x.device)
    points = int(count.numel())

    def changed(j: int, lo: int, hi: int) -> torch.Tensor:
        return (rank[j] < count[lo:hi].view(-1, 1)).view(-1, 1, h, w)

    probs = target_probs(model, b * points,
                         lambda lo, hi: compose(points, changed, end, start, lo, hi),
                         target.to(x.device).repeat_interleave(points), max_batch)
    return probs.view(b, points)


def curve_auc(curve: torch.Tensor, fractions: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) trapezoid area of (B, n) curves on [0, 1].

    ``fractions`` (n,) are the points' positions t_k in [0, 1] (the share of pixels changed):
    Σ (t_{k+1} − t_k)(a_k + a_{k+1})/2. Without them the points are evenly spaced:
    (Σa − a₀/2 − a_end/2)/(n − 1) (the RISE formula).
    """
    if fractions is None:
        n = curve.shape[1]
        return (curve.sum(dim=1) - curve[:, 0] / 2 - curve[:, -1] / 2) / (n - 1)
    t = fractions.to(device=curve.device, dtype=curve.dtype)
    return ((t[1:] - t[:-1]) * (curve[:, 1:] + curve[:, :-1]) / 2).sum(dim=1)


class _CausalParams(Params):
    steps: int = Field(32, ge=1, description="curve steps; step k ends at round(k·HW/steps) pixels "
                       "changed (at most HW steps)")
    max_batch: int | None = Field(None, ge=1, description="images per forward call; "
                                   "default: 32 on a CPU, 512 on a GPU")


class _Causal(Metric):
    compares = "map_model"
    mode = ""

    def curve(self, inputs: MetricInputs) -> torch.Tensor:
        """(B, P) probability curve of the target class over this metric's steps (the random tie
        order; the report draws it, the value is :meth:`compute`'s)."""
        p = self.params
        x, maps = inputs.x_attacked, inputs.map_attacked.to(inputs.x_attacked.device)
        return causal_curve(inputs.attacked_model, x, maps, inputs.target.to(x.device), inputs.spec, mode=self.mode,
                            steps=p.steps, baseline_kind=p.baseline, seed=inputs.seed,
                            sample_ids=sample_ids_of(inputs.sample_ids, x.shape[0]), max_batch=p.max_batch,
                            reverse_ties=False)

    def compute(self, inputs: MetricInputs) -> MetricResult:
        p = self.params
        x, maps = inputs.x_attacked, inputs.map_attacked.to(inputs.x_attacked.device)
        sids = sample_ids_of(inputs.sample_ids, x.shape[0])
        n_pixels = x.shape[-2] * x.shape[-1]
        counts = step_counts(n_pixels, p.steps)
        fractions = torch.tensor(counts, dtype=torch.float64) / n_pixels
        degenerate = is_degenerate(maps)

        def auc(rows, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
            curve = causal_curve(inputs.attacked_model, x[rows], maps[rows], inputs.target.to(x.device)[rows],
                                 inputs.spec, mode=self.mode, steps=p.steps, baseline_kind=p.baseline,
                                 seed=inputs.seed, sample_ids=[sids[i] for i in rows.tolist()],
                                 max_batch=p.max_batch, reverse_ties=reverse)
            return curve_auc(curve, fractions), curve

        everyone = torch.arange(x.shape[0], device=x.device)
        values, curve = auc(everyone, False)
        tied = (has_ties(maps.flatten(1)) | degenerate).nonzero().flatten()
        if tied.numel():  # the antithetic tie order: the reverse of the random one
            reverse, reverse_curve = auc(tied, True)
            values[tied] = (values[tied] + reverse) / 2
            curve = curve.clone()
            curve[tied] = torch.where(torch.isfinite(reverse_curve), curve[tied], reverse_curve)
        result = MetricResult.from_values(values, degenerate)
        verb = "replaced by" if self.mode == "deletion" else "restored into"

        def describe(_: int, k: int) -> str:
            return (f"{self.mode} step {k} of {len(counts) - 1} ({counts[k]} of {n_pixels} pixels "
                    f"{verb} the {p.baseline!r} baseline)")

        return mark_errors(result, nonfinite_curve_reasons(curve, describe))


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
