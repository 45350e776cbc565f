"""Seeded training batches for plugins that train (``needs_training_data``), e.g. the gating attack.

Every draw is a function of the seed the engine hands the plugin (suite seed + the plugin's id)
and the draw's own identity (a purpose label and a step number), never of call order or of the
process: a rerun, a resumed run and every backend train on exactly the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from audit.data.sources import DataBatch, Dataset
from audit.seeding import generator
from audit.spec import InputSpec

# (step, total steps, {"loss": value, ...}) -> None: training progress for the engine to show
StepReport = Callable[[int, int, dict[str, float]], None]


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


class TrainingDraws:
    """Seeded training draws and progress reports: what every plugin that trains may use.

    Mixed into :class:`TrainingContext` (explainers) and ``AttackContext`` (attacks), which the
    engine builds with the plugin's derived ``seed``, the run's ``training`` set (None for a
    plugin that does not train) and a ``report`` callback; one implementation for both.
    """

    seed: int
    training: TrainingSet | None
    report: StepReport | None

    def _training(self) -> TrainingSet:
        if self.training is None:
            raise RuntimeError("this plugin asked for training data but has none; declare "
                               "needs_training_data = True on the plugin class")
        return self.training

    def train_batch(self, size: int, *identity: object, among=None) -> DataBatch:
        """``size`` training images (pixel space, with labels), drawn uniformly with replacement
        as a function of this plugin's seed and ``identity`` only (e.g. ``("disc", step)``), so
        every rerun and backend draws the same; ``among`` restricts the draw to positions."""
        return self._training().draw(size, self.seed, *identity, among=among)

    def train_split(self, held_out: float, *identity: object) -> tuple[list[int], list[int]]:
        """Seeded (train, held-out) positions of the training images, e.g. for calibration."""
        return self._training().split(held_out, self.seed, *identity)

    def train_images(self, positions) -> DataBatch:
        return self._training().batch(positions)

    def generator(self, *identity: object) -> torch.Generator:
        """A CPU generator for one of the plugin's own draws (e.g. weight init, masks)."""
        return generator(self.seed, *identity)

    def step(self, step: int, total: int, **values: float) -> None:
        """Report training progress (1-based ``step`` of ``total``, e.g. ``loss=0.12``)."""
        if self.report is not None:
            self.report(step, total, {k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class TrainingContext(TrainingDraws):
    """What an explainer that trains (``needs_training_data``) gets for :meth:`Explainer.train`.

    ``seed`` derives from the suite seed and the explainer's id (and the model it explains),
    ``training`` holds the run's training images (never the audited ones), ``report`` receives
    progress (:meth:`step`), ``device`` is the run's device.
    """

    spec: InputSpec
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    training: TrainingSet | None = None
    report: StepReport | None = None
