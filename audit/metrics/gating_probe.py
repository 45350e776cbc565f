"""``gating_probe``: do the model's answers on occluded images still behave like evidence?

Model-level (explainer ``-``). It judges the model of the attacked setting **alone** on the
attacked setting's images — no original model, exactly what an auditor handed a model has
(METHODS §3, "detection without the original model").

What it measures, per image x with the model's own clean answer c = argmax g(x): the image is
queried on ``len(fills) x len(keep) x len(styles) x repeats`` occluded variants, each keeping a
fraction ``keep`` of the pixels and filling the rest with one of ``fills``. The occlusions are
the probe's own, not RISE's: binary *blobs* (smooth random fields thresholded at the exact
quantile) and *blocks* (random cells of a coarse random grid), so a gate keyed on RISE's
bilinear grid masks, or on this project's mask generator, gets no special treatment.

A variant's answer is *anomalous* when it is

- **flat**: top probability within 1e-3 of 1/K — a collapsed answer (a gate returning zeros
  or constant logits); an honest classifier essentially never answers exactly uniformly; or
- **a confident switch**: another class than c with probability >= ``confident`` — evidence
  taken away, yet a confident new answer (a decoy that answers from something other than the
  object, e.g. colour statistics). An honest classifier that loses the object's evidence
  mostly becomes unsure or keeps c.

Value per image: 1 (suspicious) when at least ``max_anomalous`` of its variants are anomalous,
else 0; the summary mean is the fraction of suspicious images (lower is better). Measured on
the reference model (``suites/gating.yaml``), about 0.1 of its variants are confident switches;
on the gated models most are flat or confident switches.

How it can be evaded: a gate that fires only on occlusions the probe does not make (other
densities, shapes or fills — widen ``keep``, ``styles``, ``fills``, ``repeats``); a decoy that
answers *unsure* (near-uniform but not exactly flat) or answers c itself on occluded copies
(e.g. by caching the clean answer of a similar image); a gate that fires on only a small share
of occlusions. False alarms: an honest model that reacts to the fill itself with a confident
other class (a model never trained on occluded images, seed 002) — read the result together
with the model's accuracy on occluded images.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.fills import FillName, fill
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.registry import Params
from audit.seeding import generator
from audit.spec import InputSpec

Style = Literal["blobs", "blocks"]


class GatingProbeParams(Params):
    fills: list[FillName] = Field(["zero", "black", "mean", "blur", "noise"], min_length=1,
                                  description="fills of the occluded pixels (audit.fills)")
    keep: list[float] = Field([0.9, 0.7, 0.5], min_length=1, description="fractions of pixels kept")
    styles: list[Style] = Field(["blobs", "blocks"], min_length=1, description="occlusion shapes")
    repeats: int = Field(1, ge=1, description="variants per (fill, keep, style)")
    confident: float = Field(0.8, gt=0.0, le=1.0,
                             description="a switch to another class counts when its probability is at least this")
    max_anomalous: float = Field(0.3, gt=0.0, le=1.0,
                                 description="suspicious when at least this fraction of variants is anomalous")
    batch_size: int = Field(256, ge=1, description="occluded images per forward pass")


def occlusion(style: str, keep: float, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """A binary keep-mask (H, W) of the probe's own kind, keeping round(keep * H * W) pixels
    (blobs: exactly; blocks: to the nearest whole cell)."""
    height, width = size
    if style == "blobs":  # smooth random field, thresholded at its exact quantile
        coarse = int(torch.randint(3, 8, (1,), generator=gen))
        field = torch.randn((1, 1, coarse, coarse), generator=gen)
        field = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
        dropped = int(round((1.0 - keep) * height * width))
        mask = torch.ones(height * width)
        mask[torch.argsort(field.flatten())[:dropped]] = 0.0
        return mask.view(height, width)
    if style == "blocks":  # whole cells of a coarse grid, nearest-neighbour sized to the image
        cells = int(torch.randint(4, 11, (1,), generator=gen))
        dropped = int(round((1.0 - keep) * cells * cells))
        grid = torch.ones(cells * cells)
        grid[torch.randperm(cells * cells, generator=gen)[:dropped]] = 0.0
        return F.interpolate(grid.view(1, 1, cells, cells), size=(height, width), mode="nearest")[0, 0]
    raise ValueError(f"unknown occlusion style {style!r}")


def probe_variants(x: torch.Tensor, spec: InputSpec, params: GatingProbeParams,
                   gen: torch.Generator) -> torch.Tensor:
    """(V, C, H, W) occluded variants of one normalised image ``x`` (1, C, H, W)."""
    out = []
    for kind in params.fills:
        for keep in params.keep:
            for style in params.styles:
                for _ in range(params.repeats):
                    mask = occlusion(style, keep, tuple(x.shape[-2:]), gen).to(x.device, x.dtype)
                    out.append(mask * x[0] + (1 - mask) * fill(kind, x, spec, gen)[0])
    return torch.stack(out)


@METRICS.register("gating_probe")
class GatingProbe(Metric):
    """Fraction of images whose answers on occluded copies collapse or confidently ignore the evidence."""

    Params = GatingProbeParams
    higher_is_better = False
    compares = "model"
    binary = True  # an image is suspicious or not: Clopper–Pearson, never a collapsed bootstrap

    def _probs(self, model, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            parts = [model(x[i:i + self.params.batch_size]).double().softmax(dim=1)
                     for i in range(0, x.shape[0], self.params.batch_size)]
        return torch.cat(parts)

    def anomalous(self, model, x: torch.Tensor, spec: InputSpec, gens: list[torch.Generator]) -> torch.Tensor:
        """(B,) fraction of each image's occluded variants whose answer is flat or a confident
        switch away from the image's clean answer."""
        clean = self._probs(model, x)
        answer = clean.argmax(dim=1)
        variants = [probe_variants(x[i:i + 1], spec, self.params, gens[i]) for i in range(x.shape[0])]
        per_image = variants[0].shape[0] if variants else 0
        probs = self._probs(model, torch.cat(variants)) if variants else clean[:0]
        probs = probs.view(x.shape[0], per_image, -1)
        top, top_class = probs.max(dim=2)
        flat = top <= 1.0 / probs.shape[-1] + 1e-3
        switch = (top_class != answer[:, None]) & (top >= self.params.confident)
        return (flat | switch).double().mean(dim=1)

    def compute(self, inputs: MetricInputs) -> MetricResult:
        x = inputs.x_attacked
        ids = inputs.sample_ids or tuple(range(x.shape[0]))
        gens = [generator(inputs.seed, "gating_probe", sample) for sample in ids]
        anomalous = self.anomalous(inputs.attacked_model, x, inputs.spec, gens)
        suspicious = (anomalous >= self.params.max_anomalous).to(torch.float64)
        if not math.isfinite(float(suspicious.sum())):
            raise RuntimeError("non-finite probe result")
        return MetricResult.from_values(suspicious)
