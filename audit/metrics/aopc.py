"""AOPC, the area over the MoRF / LeRF / random perturbation curve (Samek et al. 2016, METHODS §6).

The map is cut into non-overlapping ``region_size``² regions (edge regions are smaller when the
side is not a multiple), ordered by their summed relevance; x⁽ᵏ⁾ has the first k regions
replaced by the baseline and AOPC = 1/(L+1) Σ_{k=0..L} (f_c(x⁽⁰⁾) − f_c(x⁽ᵏ⁾)).

Each order has its own registered name, because each has its own direction: ``aopc`` (MoRF,
higher is better), ``aopc_lerf`` (LeRF, lower is better) and ``aopc_random`` (the random-order
reference). Each row sends x⁽⁰⁾ and its L perturbed images per image through the model
(``max_batch`` images per call); :func:`region_perturbation` can also compute several orders in
one pass (the benchmark uses it).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
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

ORDERS = ("morf", "lerf", "random")


def region_sums(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, R) summed relevance of each size×size region (row-major grid; edge regions smaller).

    A plain reduction over a (gh, s, gw, s) view of the zero-padded maps, so the sums are the
    same on every device and run (a scatter-add on a GPU adds in thread order).
    """
    b, h, w = maps.shape
    gh, gw = -(-h // size), -(-w // size)
    padded = F.pad(maps.to(torch.float64), (0, gw * size - w, 0, gh * size - h))
    return padded.view(b, gh, size, gw, size).sum(dim=(2, 4)).flatten(1)


def region_perturbation(model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                        spec: InputSpec, *, region_size: int = 8, steps: int | None = None,
                        baseline_kind: str = "zero", seed: int = 0, sample_ids=(),
                        max_batch: int | None = None, orders: tuple[str, ...] = ORDERS) -> dict[str, torch.Tensor]:
    """Target-class probability curves f_c(x⁽ᵏ⁾), k = 0..L, per requested order: {order: (B, L+1)}.

    Regions are ranked by summed relevance, ties by region index (stable). A degenerate map has
    no ranking: its MoRF and LeRF orders are the image's random order (so it scores exactly what
    an uninformed order does). The random order is a seeded permutation per sample id.
    """
    b, _, h, w = x.shape
    gh, gw = -(-h // region_size), -(-w // region_size)
    pad = (0, gw * region_size - w, 0, gh * region_size - h)
    n_regions = gh * gw
    length = n_regions if steps is None else min(steps, n_regions)
    sums = region_sums(maps.to(x.device), region_size)
    sids = sample_ids_of(sample_ids, b)
    shuffled = random_scores(n_regions, seed, sids, "aopc-random", x.device)
    flat = is_degenerate(maps).to(x.device).view(b, 1)
    by_order = {"morf": torch.where(flat, shuffled, sums), "lerf": torch.where(flat, shuffled, -sums),
                "random": shuffled}
    scores = torch.stack([by_order[name] for name in orders], dim=1)  # (B, O, R)
    region_rank = descending_rank(scores.flatten(0, 1)).view(b, len(orders), n_regions)
    fill_image = baseline(baseline_kind, x, spec, seed, sids)

    per_image = 1 + len(orders) * length  # x⁽⁰⁾ once, then L steps per order
    # Regions are selected on a (gh, s, gw, s) view of the image padded to whole regions, so the
    # mask has one entry per region and broadcasts over its pixels (no per-pixel mask at all).
    blocks = (b, x.shape[1], gh, region_size, gw, region_size)
    x_blocks = F.pad(x, pad).view(blocks)
    fill_blocks = F.pad(fill_image, pad).view(blocks)
    steps_k = torch.arange(1, length + 1, device=x.device).view(-1, 1)

    def removed(j: int, lo: int, hi: int) -> torch.Tensor:
        # Row 0 of an image is x⁽⁰⁾; rows 1 + o·L + (k − 1) are step k of order o.
        mask = torch.zeros(hi - lo, n_regions, dtype=torch.bool, device=x.device)
        for o in range(len(orders)):
            first, last = max(lo, 1 + o * length), min(hi, 1 + (o + 1) * length)
            if first < last:
                k = steps_k[first - 1 - o * length:last - 1 - o * length]
                torch.lt(region_rank[j, o], k, out=mask[first - lo:last - lo])
        return mask.view(-1, 1, gh, 1, gw, 1)

    def build(start: int, end: int) -> torch.Tensor:
        out = compose(per_image, removed, fill_blocks, x_blocks, start, end)
        out = out.view(end - start, x.shape[1], gh * region_size, gw * region_size)
        return out if pad == (0, 0, 0, 0) else out[..., :h, :w].contiguous()

    probs = target_probs(model, b * per_image, build, target.to(x.device).repeat_interleave(per_image),
                         max_batch)
    probs = probs.view(b, per_image)
    start = probs[:, :1]
    return {name: torch.cat([start, probs[:, 1 + j * length:1 + (j + 1) * length]], dim=1)
            for j, name in enumerate(orders)}


def aopc_from_curves(curves: torch.Tensor) -> torch.Tensor:
    """(B,) AOPC of (B, L+1) probability curves: mean over k = 0..L of f(x⁽⁰⁾) − f(x⁽ᵏ⁾)."""
    return (curves[:, :1] - curves).mean(dim=1)


class _AOPCParams(Params):
    region_size: int = Field(8, ge=1, description="side of the square regions, pixels")
    steps: int | None = Field(None, ge=1, description="regions removed (L); default all")
    baseline: Literal["zero", "black", "mean", "blur", "noise"] = "zero"
    max_batch: int | None = Field(None, ge=1, description="images per forward call; "
                                   "default: 32 on a CPU, 512 on a GPU")


class _AOPC(Metric):
    compares = "map_model"
    order: ClassVar[str] = "morf"
    Params = _AOPCParams

    def curve(self, inputs: MetricInputs) -> torch.Tensor:
        """(B, L+1) probability curve of this metric's order."""
        p = self.params
        return region_perturbation(
            inputs.attacked_model, inputs.x_attacked, inputs.map_attacked, inputs.target, inputs.spec,
            region_size=p.region_size, steps=p.steps, baseline_kind=p.baseline, seed=inputs.seed,
            sample_ids=inputs.sample_ids, max_batch=p.max_batch, orders=(self.order,))[self.order]

    def compute(self, inputs: MetricInputs) -> MetricResult:
        return MetricResult.from_values(aopc_from_curves(self.curve(inputs)),
                                        is_degenerate(inputs.map_attacked))


_DOC = """

    Regions of ``region_size``² (default 8), ``steps`` = L regions removed (default all),
    ``baseline`` in normalised input space: ``zero`` (data-set mean colour, default), ``black``,
    ``mean`` (the image's mean colour), ``blur`` (σ 5, kernel 11), ``noise`` (uniform pixel
    noise, seeded per sample). A degenerate map (status ``degenerate``) is perturbed in the
    seeded random order, so it scores what an uninformed order does.
    """


@METRICS.register("aopc")
class AOPC(_AOPC):
    """AOPC, most relevant regions first (MoRF): mean drop of f_c; higher = more faithful map."""

    __doc__ = __doc__ + _DOC
    higher_is_better = True
    order = "morf"


@METRICS.register("aopc_lerf")
class AOPCLerf(_AOPC):
    """AOPC, least relevant regions first (LeRF): a faithful map keeps f_c, so lower is better."""

    __doc__ = __doc__ + _DOC
    higher_is_better = False
    order = "lerf"


@METRICS.register("aopc_random")
class AOPCRandom(_AOPC):
    """AOPC in a seeded random region order: the reference MoRF must beat (direction: as MoRF)."""

    __doc__ = __doc__ + _DOC
    higher_is_better = True
    order = "random"
