"""AOPC, the area over the MoRF / LeRF / random perturbation curve (Samek et al. 2016, METHODS §6).

The map is cut into non-overlapping ``region_size``² regions (edge regions are smaller when the
side is not a multiple), ordered by their relevance; x⁽ᵏ⁾ has the first k regions replaced by
the baseline and AOPC = 1/(L+1) Σ_{k=0..L} (f_c(x⁽⁰⁾) − f_c(x⁽ᵏ⁾)).

METHODS-style notes:

- Ties. Regions of equal relevance (typically the all-zero regions of a saturated or ReLU-cut
  map) are ordered by the image's seeded random region order — the ``aopc_random`` order
  (label ``aopc-random``, the cell seed and the sample id) — not by region index, which would let
  the object's position decide MoRF and LeRF. An image with tied regions scores the mean AOPC of
  that order and its reverse (antithetic pair, :mod:`audit.metrics._perturb`): one random order
  of a few tied regions is a noisy draw. A degenerate map is one big tie: its MoRF and LeRF
  orders are that random order and its reverse (so it need not equal ``aopc_random`` exactly,
  which uses one random order by definition).
- Regions that do not tile the image. Samek et al. cut the image into equal regions, where the
  summed relevance and the relevance per pixel order alike and every step removes the same
  area. When the side is not a multiple of ``region_size``, the edge regions are smaller; then
  regions are ordered by *mean* relevance per pixel (the most relevance removed per pixel first;
  the summed relevance would demote an edge region for being small) and the drop after step k
  is weighted by the area a_k that step removed: AOPC = 1/(L+1) Σ_k (a_k/ā)·drop_k, ā the mean
  area of the L regions removed and a₀ := ā. For equal regions this is exactly Samek's formula;
  otherwise it is the same Riemann sum over the fraction of the image actually perturbed (a model
  that counts the pixels kept scores the same AOPC in every order and for every region size).
- Non-finite values. An image the model answers with NaN/inf on some x⁽ᵏ⁾ makes that image's
  value ``error``, the reason naming the step, the baseline and the fixes.

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


def region_areas(h: int, w: int, size: int, device=None) -> torch.Tensor:
    """(R,) float64 pixel count of each region of the row-major grid (edge regions smaller)."""
    rows = torch.tensor([min(size, h - r) for r in range(0, h, size)], dtype=torch.float64, device=device)
    cols = torch.tensor([min(size, w - c) for c in range(0, w, size)], dtype=torch.float64, device=device)
    return (rows.view(-1, 1) * cols.view(1, -1)).flatten()


def region_density(maps: torch.Tensor, region_size: int) -> torch.Tensor:
    """(B, R) mean relevance per pixel of each region (the summed relevance / the region's area)."""
    sums = region_sums(maps, region_size)
    return sums / region_areas(*maps.shape[-2:], region_size, sums.device)


def region_ranks(maps: torch.Tensor, region_size: int, seed: int, sample_ids,
                 orders: tuple[str, ...] = ORDERS, reverse_ties: bool = False) -> torch.Tensor:
    """(B, O, R) rank of each region per order (0 = removed first): MoRF by mean relevance per
    pixel, LeRF by its negative, ties and degenerate maps by the seeded random order (its
    reverse with ``reverse_ties``; the ``random`` order itself is never reversed)."""
    b = maps.shape[0]
    density = region_density(maps, region_size)
    shuffled = random_scores(density.shape[1], seed, sample_ids_of(sample_ids, b), "aopc-random",
                             density.device)
    key = -shuffled if reverse_ties else shuffled
    flat = is_degenerate(maps).to(density.device).view(b, 1)
    by_order = {"morf": torch.where(flat, key, density), "lerf": torch.where(flat, key, -density),
                "random": shuffled}
    scores = torch.stack([by_order[name] for name in orders], dim=1)  # (B, O, R)
    keys = torch.stack([shuffled if name == "random" else key for name in orders], dim=1)
    return descending_rank(scores.flatten(0, 1), keys.flatten(0, 1)).view(b, len(orders), -1)


def removed_areas(maps: torch.Tensor, region_size: int, seed: int, sample_ids, order: str,
                  steps: int | None = None, reverse_ties: bool = False) -> torch.Tensor:
    """(B, L) pixel count of the region removed at steps k = 1..L of ``order``."""
    b, h, w = maps.shape
    rank = region_ranks(maps, region_size, seed, sample_ids, (order,), reverse_ties)[:, 0]
    areas = region_areas(h, w, region_size, rank.device)
    length = rank.shape[1] if steps is None else min(steps, rank.shape[1])
    return areas[torch.argsort(rank, dim=1)[:, :length]]


def region_perturbation(model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                        spec: InputSpec, *, region_size: int = 8, steps: int | None = None,
                        baseline_kind: str = "zero", seed: int = 0, sample_ids=(),
                        max_batch: int | None = None, orders: tuple[str, ...] = ORDERS,
                        reverse_ties: bool = False) -> dict[str, torch.Tensor]:
    """Target-class probability curves f_c(x⁽ᵏ⁾), k = 0..L, per requested order: {order: (B, L+1)}.

    Regions are ranked by :func:`region_ranks`: mean relevance per pixel (summed relevance when
    the regions tile the image), ties in the image's seeded random order. A degenerate map has
    no ranking: its MoRF and LeRF orders are the image's random order (so it scores exactly what
    an uninformed order does). The random order is a seeded permutation per sample id;
    ``reverse_ties`` breaks the ties of MoRF and LeRF in its reverse instead.
    """
    b, _, h, w = x.shape
    gh, gw = -(-h // region_size), -(-w // region_size)
    pad = (0, gw * region_size - w, 0, gh * region_size - h)
    n_regions = gh * gw
    length = n_regions if steps is None else min(steps, n_regions)
    sids = sample_ids_of(sample_ids, b)
    region_rank = region_ranks(maps.to(x.device), region_size, seed, sids, orders, reverse_ties)
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


def aopc_from_curves(curves: torch.Tensor, areas: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) AOPC of (B, L+1) probability curves: mean over k = 0..L of f(x⁽⁰⁾) − f(x⁽ᵏ⁾).

    ``areas`` (B, L): the pixels each step removed (:func:`removed_areas`); when they differ
    (regions that do not tile the image) step k's drop is weighted by a_k/ā, the k = 0 term by 1
    (see the module docstring). Equal areas give exactly the unweighted mean.
    """
    drops = curves[:, :1] - curves
    if areas is None:
        return drops.mean(dim=1)
    areas = areas.to(device=drops.device, dtype=drops.dtype)
    weights = torch.cat([torch.ones_like(areas[:, :1]), areas / areas.mean(dim=1, keepdim=True)], dim=1)
    return (drops * weights).mean(dim=1)


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

    def curve(self, inputs: MetricInputs, rows: torch.Tensor | None = None,
              reverse_ties: bool = False) -> torch.Tensor:
        """(B, L+1) probability curve of this metric's order (of images ``rows``, default all)."""
        p = self.params
        x = inputs.x_attacked
        rows = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        sids = sample_ids_of(inputs.sample_ids, x.shape[0])
        return region_perturbation(
            inputs.attacked_model, x[rows], inputs.map_attacked.to(x.device)[rows],
            inputs.target.to(x.device)[rows], inputs.spec, region_size=p.region_size, steps=p.steps,
            baseline_kind=p.baseline, seed=inputs.seed, sample_ids=[sids[i] for i in rows.tolist()],
            max_batch=p.max_batch, orders=(self.order,), reverse_ties=reverse_ties)[self.order]

    def _aopc(self, inputs: MetricInputs, rows: torch.Tensor | None, reverse_ties: bool):
        """(AOPC, curve, pixels removed by each point) of images ``rows``."""
        p = self.params
        maps = inputs.map_attacked.to(inputs.x_attacked.device)
        sids = sample_ids_of(inputs.sample_ids, maps.shape[0])
        if rows is not None:
            maps, sids = maps[rows], [sids[i] for i in rows.tolist()]
        curve = self.curve(inputs, rows, reverse_ties)
        areas = removed_areas(maps, p.region_size, inputs.seed, sids, self.order, p.steps, reverse_ties)
        done = torch.cat([torch.zeros_like(areas[:, :1]), areas.cumsum(dim=1)], dim=1)
        return aopc_from_curves(curve, areas), curve, done

    def compute(self, inputs: MetricInputs) -> MetricResult:
        p = self.params
        maps = inputs.map_attacked.to(inputs.x_attacked.device)
        degenerate = is_degenerate(maps)
        values, curve, done = self._aopc(inputs, None, False)
        if self.order != "random":
            tied = (has_ties(region_density(maps, p.region_size)) | degenerate).nonzero().flatten()
            if tied.numel():  # the antithetic tie order: the reverse of the random one
                reverse, reverse_curve, reverse_done = self._aopc(inputs, tied, True)
                values[tied] = (values[tied] + reverse) / 2
                bad = ~torch.isfinite(reverse_curve).all(dim=1, keepdim=True)  # report its step if it failed
                curve, done = curve.clone(), done.clone()
                curve[tied] = torch.where(bad, reverse_curve, curve[tied])
                done[tied] = torch.where(bad, reverse_done, done[tied])
        result = MetricResult.from_values(values, degenerate)
        n_pixels = maps.shape[-2] * maps.shape[-1]

        def describe(i: int, k: int) -> str:
            return (f"AOPC ({self.order}) step {k} of {curve.shape[1] - 1} ({int(done[i, k])} of "
                    f"{n_pixels} pixels replaced by the {p.baseline!r} baseline)")

        return mark_errors(result, nonfinite_curve_reasons(curve, describe))


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


class AOPCGapParams(Params):
    grid: int = Field(8, ge=1, description="regions: a grid × grid tiling of the image, whatever its size "
                                           "(region side ⌈H / grid⌉ pixels)")
    steps: int | None = Field(16, ge=1, description="regions removed (L); default a quarter of an 8 × 8 grid")
    baseline: Literal["zero", "black", "mean", "blur", "noise"] = "zero"
    max_batch: int | None = Field(None, ge=1, description="images per forward call; "
                                   "default: 32 on a CPU, 512 on a GPU")


@METRICS.register("aopc_gap")
class AOPCGap(Metric):
    """Faithfulness gap AOPC(map order) − AOPC(random order) per image; below 0: worse than random."""

    __doc__ = __doc__ + """

    Both terms are this module's AOPC on the attacked setting's map (MoRF, ties in the image's
    seeded random order and its reverse) and the ``aopc_random`` reference on the same regions,
    image and seed, so the gap is a paired difference per image (its mean gets the summary's
    bootstrap interval). Regions are a ``grid`` × ``grid`` tiling whatever the input size (an 8 × 8
    grid of 8-pixel regions on the reference model's 64 × 64 images, of 28-pixel ones at 224), so
    ``steps`` removes the same share of every image. Values in [-1, 1] (probability units);
    higher is better. Heo et al. (2019, Fig. 4a): a map fooled by adversarial model manipulation
    orders regions *worse than random* — its gap is negative, while an honest map's is positive.
    A degenerate map is perturbed in the random order (status ``degenerate``, gap near 0).
    """
    Params = AOPCGapParams
    higher_is_better = True
    compares = "map_model"

    def _orders(self, height: int) -> tuple[AOPC, AOPCRandom]:
        p = self.params
        region = -(-height // p.grid)
        params = dict(region_size=region, steps=p.steps, baseline=p.baseline, max_batch=p.max_batch)
        return AOPC(**params), AOPCRandom(**params)

    def compute(self, inputs: MetricInputs) -> MetricResult:
        morf, random = (metric.compute(inputs) for metric in self._orders(int(inputs.x_attacked.shape[-2])))
        result = MetricResult(morf.values - random.values, list(morf.status), list(morf.reasons))
        for i, (status, reason) in enumerate(zip(random.status, random.reasons, strict=True)):
            if status == "error" and result.status[i] != "error":
                result.values[i] = float("nan")
                result.status[i], result.reasons[i] = "error", f"random order: {reason}"
        return result
