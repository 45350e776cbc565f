"""Shared pieces of the explanation attacks that keep the label (not a plugin module).

``fragility`` (Ghorbani et al.) and ``targeted_map`` (Dombrowski et al.) move an explainer's map
by changing the input inside a pixel-space L∞ ball while the prediction stays the same. Both
differentiate the explainer's ``differentiable_map`` w.r.t. the input through a softplus copy of
the model (ReLU's second derivative is zero; β annealed from ``beta_start`` to ``beta_end``),
and judge every iterate on the real model: its map and its label.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from audit.registry import Params

_TINY = 1e-12


class MapAttackParams(Params):
    explainer: str = Field("saliency", description="registered explainer with a differentiable_map")
    explainer_params: dict[str, Any] = Field(default_factory=dict, description="that explainer's parameters")
    eps: float = Field(8 / 255, gt=0.0, le=1.0, description="L∞ radius in pixel units [0, 1]")
    steps: int = Field(100, ge=1, description="optimisation steps (best label-keeping iterate returned)")
    beta_start: float = Field(10.0, gt=0.0, description="softplus β at the first step")
    beta_end: float = Field(100.0, gt=0.0, description="softplus β at the last step (geometric schedule)")

    @field_validator("explainer")
    @classmethod
    def _differentiable(cls, name: str) -> str:
        from audit.explainers.base import EXPLAINERS

        plugin = EXPLAINERS.get(name)
        if not plugin.differentiable:
            names = [n for n, c in EXPLAINERS if c.differentiable]
            raise ValueError(f"explainer {name!r} has no differentiable map; use one of {', '.join(names)}")
        return name

    @model_validator(mode="after")
    def _same_map(self):
        from audit.explainers.base import check_attackable

        check_attackable(self.explainer, self.explainer_params, "explainer_params")
        return self


def mean_one(maps: torch.Tensor) -> torch.Tensor:
    """|maps| scaled per image to mean 1 (a distribution over pixels, times the pixel count), so
    losses do not depend on the explainer's units. (B, H, W) -> (B, H, W)."""
    mass = maps.abs()
    return mass / mass.flatten(1).mean(dim=1).clamp_min(_TINY).view(-1, 1, 1)


def real_maps(explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The explainer's map on the real (ReLU) model, detached: what the audit will see."""
    with torch.enable_grad():
        return explainer.differentiable_map(model, x.detach(), target, create_graph=False).detach()


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)
