"""Seeded training batches for plugins that train (``needs_training_data``), e.g. the gating attack.

Every draw is a function of the seed the engine hands the plugin (suite seed + the plugin's id)
and the draw's own identity (a purpose label and a step number), never of call order or of the
process: a rerun, a resumed run and every backend train on exactly the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from audit.data.sources import DataBatch, Dataset
from audit.seeding import generator


class TrainingSet:
    """The training images (pixel space [0, 1], the model's input size) of one run.

    ``digest`` identifies the images (it keys the cache of whatever is trained on them).
    """

    def __init__(self, dataset: Dataset, digest: str | None = None):
        self.dataset = dataset
        self.digest = digest or dataset.digest()
        self.description = dataset.description

    def __len__(self) -> int:
        return len(self.dataset)

    def split(self, held_out: float, seed: int, *identity: object) -> tuple[list[int], list[int]]:
        """A seeded partition of the positions into (train, held-out) with round(held_out * n)
        held out, e.g. to calibrate on images the plugin never trained on. Both lists sorted."""
        n = len(self)
        count = min(n - 1, max(1, round(held_out * n)))
        order = torch.randperm(n, generator=generator(seed, "train-split", *identity)).tolist()
        return sorted(order[count:]), sorted(order[:count])

    def draw(self, size: int, seed: int, *identity: object,
             among: Sequence[int] | None = None) -> DataBatch:
        """``size`` images drawn uniformly with replacement (from ``among`` positions, else all),
        a function of (seed, identity) only: pass e.g. ``("discriminator", step)``."""
        pool = list(among) if among is not None else None
        n = len(pool) if pool is not None else len(self)
        if n == 0:
            raise ValueError("no training images to draw from")
        picks = torch.randint(0, n, (size,), generator=generator(seed, "train-draw", *identity)).tolist()
        return self.batch([pool[i] for i in picks] if pool is not None else picks)

    def batch(self, positions: Sequence[int]) -> DataBatch:
        """The images at ``positions`` (any order, repeats allowed)."""
        positions = list(positions)
        unique = sorted(set(positions))
        if not unique:
            raise ValueError("no positions given")
        # datasets load contiguous ranges: load each run of positions once
        loaded: dict[int, tuple[int, int]] = {}
        parts: list[DataBatch] = []
        start = 0
        while start < len(unique):
            end = start
            while end + 1 < len(unique) and unique[end + 1] == unique[end] + 1:
                end += 1
            part = self.dataset.batch(range(unique[start], unique[end] + 1))
            for offset in range(end - start + 1):
                loaded[unique[start] + offset] = (len(parts), offset)
            parts.append(part)
            start = end + 1
        where = [loaded[p] for p in positions]
        images = torch.stack([parts[i].images[j] for i, j in where])
        labels = torch.stack([parts[i].labels[j] for i, j in where])
        ids = tuple(parts[i].ids[j] for i, j in where)
        masks = None
        if all(part.masks is not None for part in parts):
            masks = torch.stack([parts[i].masks[j] for i, j in where])
        return DataBatch(images, labels, ids, masks)
