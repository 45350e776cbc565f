"""Shared machinery of the perturbation metrics (AOPC, deletion, insertion, crop).

- the perturbed images go through :func:`audit.models.inference.target_probs` (the model's
  inference copy, chunks of ``max_batch`` images built lazily; ``None``: the device's default).
- :func:`compose` builds a chunk of perturbed images from one mask per image row.
- :func:`baseline` is the replacement image A of a perturbation (zero, mean, blur, noise, ...).
- :func:`descending_rank` turns a map (or per-region scores) into a removal order.

Ties (METHODS-style note). Real maps are full of exact ties: saturated units and ReLU dead zones
give gradients that are exactly 0 over much of the image, Grad-CAM is 0 wherever its ReLU cut.
Ranking tied pixels by their index (raster order) lets the position of the object decide the
score: a model reading a band at the top of the image scored deletion 0.09, its mirror image
0.91, for the same uninformative map. So every ranking here breaks ties by a *seeded random*
key (:func:`random_scores`, drawn per sample id from the cell's seed and the metric's label, so
an image ranks the same in any batch): tied items come in a uniformly random order, which is
what an uninformed order achieves. A degenerate map (METHODS §0) is one big tie, and its order
is exactly that random key. Ties are exact equality of the (float64) scores.

The perturbation metrics (deletion, insertion, AOPC MoRF/LeRF) average each image that has ties
over two tie orders: the random one and its reverse (antithetic pair, ``reverse_ties``; images
without ties are computed once). Along a perturbation path one random order of a few tied
regions is a noisy draw (AOPC of 16 regions: ±0.1 between seeds); with its reverse, an item
early in one order is late in the other, so for evidence that adds up over items the average is
the expectation over all tie orders, and a map and its mirror image score alike.

Non-finite model outputs: a perturbed image the model answers with NaN/inf (e.g. a model that
divides by the image's own standard deviation, on the flat last deletion step) makes the image's
value ``error`` with a reason naming the step, the baseline and the fixes
(:func:`nonfinite_curve_reasons`), never a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from audit.fills import fill
from audit.metrics.base import MetricResult
from audit.seeding import generator
from audit.spec import InputSpec


def compose(per_image: int, removed: Callable[[int, int, int], torch.Tensor],
            replacement: torch.Tensor, original: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Rows start..end-1 of a stack in which image j owns rows j·per_image … (j+1)·per_image − 1.

    ``removed(j, lo, hi)`` gives a bool mask for rows lo..hi-1 of image j (row numbers within
    the image), broadcastable to (hi − lo, *original.shape[1:]); True takes ``replacement``.
    Each image and its replacement are broadcast, not gathered per row, so every output value
    is written once; a coarse mask (one entry per region) keeps the select cheap.
    """
    out = torch.empty((end - start, *original.shape[1:]), dtype=original.dtype, device=original.device)
    for j in range(start // per_image, (end - 1) // per_image + 1):
        lo, hi = max(start, j * per_image), min(end, (j + 1) * per_image)
        mask = removed(j, lo - j * per_image, hi - j * per_image)
        torch.where(mask, replacement[j], original[j], out=out[lo - start:hi - start])
    return out


def baseline(kind: str, x: torch.Tensor, spec: InputSpec, seed: int, sample_ids: Sequence[int]) -> torch.Tensor:
    """Replacement image A for each image of ``x`` (normalised, same shape).

    ``zero`` is normalised 0 (the data set's mean colour), ``black`` pixel 0, ``mean`` each
    image's own mean colour, ``blur`` a Gaussian blur of the image (RISE insertion: σ 5,
    kernel 11), ``noise`` uniform noise in pixel space drawn per image from a seed derived from
    the sample id, so an image's noise does not depend on its batch.
    """
    if kind == "noise":
        return torch.cat([fill("noise", x[i:i + 1], spec, generator(seed, "baseline-noise", sid))
                          for i, sid in enumerate(sample_ids)])
    return fill(kind, x, spec)


def sample_ids_of(ids: Sequence[int], n: int) -> list[int]:
    """The batch's sample ids, or positions when the caller gave none."""
    return list(ids) if len(ids) == n else list(range(n))


def random_scores(n_items: int, seed: int, sample_ids: Sequence[int], label: str,
                  device: torch.device) -> torch.Tensor:
    """(B, n_items) float scores whose descending order is a seeded random permutation per image."""
    rows = [torch.randperm(n_items, generator=generator(seed, label, sid)) for sid in sample_ids]
    return torch.stack(rows).to(device=device, dtype=torch.float64)


def has_ties(scores: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether any two of a row's (B, N) scores are equal."""
    ordered = scores.sort(dim=1).values
    return (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)


def descending_rank(scores: torch.Tensor, tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) rank of each item, 0 = highest score.

    Equal scores are ordered by ``tie_key`` (B, N), highest first — pass a seeded random key
    (:func:`random_scores`) so ties come in a random order, not raster order. Without a key,
    ties keep index order (only for callers whose scores cannot tie).
    """
    if tie_key is None:
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
    else:
        # lexicographic (score, key): lay the items out in key order, then a stable sort by
        # score keeps that order within every run of equal scores
        by_key = torch.argsort(tie_key.to(scores.device), dim=1, descending=True, stable=True)
        within = torch.argsort(scores.gather(1, by_key), dim=1, descending=True, stable=True)
        order = by_key.gather(1, within)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def nonfinite_curve_reasons(probs: torch.Tensor, describe: Callable[[int, int], str]) -> list[str | None]:
    """Per image: None if its (B, n) curve of probabilities is finite, else why not: the first
    point whose perturbed image the model answered with NaN/inf (``describe(i, k)`` says what
    point k of image i perturbed, e.g. "deletion step 32 of 32: 4096 of 4096 pixels replaced by the 'zero'
    baseline") and the fixes."""
    reasons: list[str | None] = []
    for i, row in enumerate((~torch.isfinite(probs)).cpu()):
        if not row.any():
            reasons.append(None)
            continue
        reasons.append(f"the model returned NaN/inf on {describe(i, int(row.nonzero()[0, 0]))}; use "
                       "fewer steps, another baseline, or guard the model against such inputs "
                       "(e.g. a zero standard deviation)")
    return reasons


def mark_errors(result: MetricResult, reasons: Sequence[str | None]) -> MetricResult:
    """``result`` with every image that has a reason turned into an ``error`` (value NaN)."""
    for i, reason in enumerate(reasons):
        if reason is not None:
            result.values[i] = float("nan")
            result.status[i], result.reasons[i] = "error", reason
    return result
