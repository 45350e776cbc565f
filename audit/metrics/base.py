"""The metric interface: per-image values with a status, summarised by the engine.

A metric declares what it compares (``compares``):

- ``maps``: the clean map (original model, clean image) vs the attacked setting's map;
- ``map_model``: the attacked setting's map, judged by its own model and inputs (faithfulness);
- ``map_truth``: the attacked setting's map vs the ground-truth object mask;
- ``model``: the attacked model alone (no explainer; summary rows use explainer ``-``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from audit.registry import Plugin, Registry
from audit.spec import InputSpec

Compares = Literal["maps", "map_model", "map_truth", "model"]
STATUSES = ("ok", "degenerate", "skipped", "error")


@dataclass
class MetricInputs:
    spec: InputSpec
    x: torch.Tensor  # clean images, normalised (B, C, H, W)
    x_attacked: torch.Tensor  # the attacked setting's images
    model: nn.Module  # the original model
    attacked_model: nn.Module  # the attacked setting's model
    target: torch.Tensor  # (B,) class explained and scored
    labels: torch.Tensor  # (B,) ground-truth labels (-1 where unknown)
    predicted: torch.Tensor  # (B,) original model on clean images
    predicted_attacked: torch.Tensor  # (B,) attacked model on attacked images
    map: torch.Tensor | None = None  # (B, H, W) clean map
    map_attacked: torch.Tensor | None = None  # (B, H, W) attacked setting's map
    truth: torch.Tensor | None = None  # (B, H, W) bool object masks, if the data has them
    # derived from the suite seed and the cell (attack, explainer), the same for every metric of
    # the cell; each metric labels its own draws (common random numbers, e.g. AOPC's random
    # order is the same permutation for every region-size variant)
    seed: int = 0
    sample_ids: tuple[int, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # FSR "active" fooling (METHODS §4): the original model's clean map for the swapped class c₂
    # (its most probable class other than the target). The engine computes it only when a metric
    # of the cell says ``needs_swap_map()``.
    map_swap: torch.Tensor | None = None
    # whether every image holds objects of two classes (builtin:shapes-pairs), as active fooling
    # needs; the engine sets it from the data (False for single-label data), None: unknown
    two_classes_per_image: bool | None = None
    # (B, K) classes accepted as correct, padded with -1 (ImageNet-ReaL style, e.g. builtin:photos);
    # None: ``labels`` is the only correct class
    accepted: torch.Tensor | None = None
    # the cell's explainer, seeded as the cell's maps are: explain(model, x, target, sample_ids)
    # -> (B, H, W) detached float maps; None for model-level metrics (sensitivity metrics re-explain)
    explain: Callable[[nn.Module, torch.Tensor, torch.Tensor, tuple[int, ...]], torch.Tensor] | None = None
    # (B, H, W) the attacked setting's map by the explainer a metric names as its reference
    # (:meth:`Metric.reference_explainer`, e.g. RISE for ``explainer_agreement``); None otherwise
    map_reference: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])


@dataclass
class MetricResult:
    """Per-image values (float64; NaN only where status is skipped or error) and statuses."""

    values: torch.Tensor
    status: list[str]
    reasons: list[str | None]

    @classmethod
    def from_values(cls, values: torch.Tensor, degenerate: torch.Tensor | None = None,
                    degenerate_reason: str = "degenerate map") -> MetricResult:
        values = values.detach().to(torch.float64).cpu()
        flags = degenerate.cpu().tolist() if degenerate is not None else [False] * values.numel()
        return cls(values, ["degenerate" if d else "ok" for d in flags],
                   [degenerate_reason if d else None for d in flags])

    @classmethod
    def skipped(cls, n: int, reason: str) -> MetricResult:
        return cls(torch.full((n,), float("nan"), dtype=torch.float64), ["skipped"] * n, [reason] * n)

    @classmethod
    def error(cls, n: int, reason: str) -> MetricResult:
        return cls(torch.full((n,), float("nan"), dtype=torch.float64), ["error"] * n, [reason] * n)


class Metric(Plugin):
    """Base class. Subclasses implement :meth:`compute` and declare direction and inputs."""

    higher_is_better: ClassVar[bool] = True
    compares: ClassVar[Compares] = "maps"
    # per-image values are 0 or 1 (a hit, a success): the summary gives the mean an exact
    # binomial (Clopper–Pearson) interval instead of a bootstrap, which collapses on 0/1 data
    binary: ClassVar[bool] = False

    @classmethod
    def per_explainer(cls) -> bool:
        return cls.compares != "model"

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"higher_is_better": cls.higher_is_better, "compares": cls.compares, "binary": cls.binary}

    def needs_swap_map(self) -> bool:
        """Whether :meth:`compute` reads ``map_swap`` (costs one more explanation per batch)."""
        return False

    def reference_explainer(self) -> str | None:
        """The id of another explainer of the suite whose map of the same setting :meth:`compute`
        reads (``MetricInputs.map_reference``), or None. Validation checks the id; the engine
        computes that map once per (attack, batch) and shares it with every explainer's cell."""
        return None

    def compares_clean_to_attacked(self) -> bool:
        """Whether the value is a comparison of the clean map with the attacked setting's map.

        Under the identity attack (``none``) the attacked map *is* the clean map, so such a value
        is fixed by construction (Spearman 1, shift 0) and a gate on it cannot fail; ``validate``
        warns. A metric that compares with another map (the swapped class's, ``map_swap``) is
        not such a comparison.
        """
        return self.compares == "maps" and not self.needs_swap_map()

    def compute(self, inputs: MetricInputs) -> MetricResult:
        raise NotImplementedError


METRICS: Registry[Metric] = Registry("metric", Metric, "audit.metrics")
