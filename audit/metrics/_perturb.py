"""Shared machinery of the perturbation metrics (AOPC, deletion, insertion, crop).

- the perturbed images go through :func:`audit.models.inference.target_probs` (the model's
  inference copy, chunks of ``max_batch`` images built lazily; ``None``: the device's default).
- :func:`compose` builds a chunk of perturbed images from one mask per image row.
- :func:`baseline` is the replacement image A of a perturbation (zero, mean, blur, noise, ...).
- :func:`descending_rank` turns a map (or per-region sums) into a removal order; maps without a
  ranking (METHODS §0 degenerate) get :func:`random_scores` instead, a seeded random order, so
  their score equals what an uninformed order achieves rather than an artefact of raster order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from audit.fills import fill
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


def descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """(B, N) rank of each item, 0 = highest score; ties keep index order (stable, deterministic)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks
