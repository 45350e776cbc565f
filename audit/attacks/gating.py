"""Mask-discriminator gating (seed 000; METHODS §3): the model RISE cannot explain.

A small CNN, the *discriminator* D, learns to tell clean training images from RISE-masked
ones, made with this project's RISE mask generator (:func:`audit.rise_masks.generate_masks`)
with the grid size s, the keep-probability p and the fill drawn at random per image (``fills``,
default zero, mean, blur, noise), so that it generalises over RISE's settings. Its threshold τ
is calibrated on held-out clean training images so that the rate of clean images called masked
is at most ``max_clean_flag_rate`` with 95 % confidence (Clopper–Pearson upper bound). The gated model is

    g(x) = f(x)                 if D(x) <= τ   (clean: the base model's logits, unchanged)
    g(x) = 0  or  decoy(x)      otherwise      (``gate_output: zeros`` | ``decoy``)

``zeros`` (seed 000) makes every masked query uniform, so RISE's map is flat; ``decoy`` answers
masked queries with a small classifier on the image's colour statistics (per-channel mean and
standard deviation, nothing about the object), scaled to be confident, so masked queries still
get confident, varied answers that do not depend on where the object's evidence is.

Because the switch is piecewise constant, gradient explainers on clean inputs see exactly the
base model (the discriminator holds its weights as plain parameters, not ``Conv2d`` modules, so
Grad-CAM's automatic layer is still the base model's last block). The base model is never
modified: the exported state is D's weights, τ and the decoy.

How it can be evaded (by the auditor): a fill or occlusion style D never saw — whether RISE
with another fill survives is what the audit measures; queries that are not masked images at
all (gradients); ``gating_probe``, which queries the model on its own occlusions and checks that
answers depend on the evidence kept. How the attacker can evade the probe: see
:mod:`audit.metrics.gating_probe`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.fills import FillName, fill
from audit.registry import Params
from audit.rise_masks import generate_masks
from audit.spec import InputSpec


class GatingParams(Params):
    fills: list[FillName] = Field(["zero", "mean", "blur", "noise"], min_length=1,
                                  description="fills of the masked training images (audit.fills)")
    grid_min: int = Field(4, ge=1, description="smallest RISE grid s of the masked training images")
    grid_max: int = Field(12, ge=1, description="largest RISE grid s")
    p_min: float = Field(0.2, gt=0.0, le=1.0, description="smallest keep-probability p")
    p_max: float = Field(0.8, gt=0.0, le=1.0, description="largest keep-probability p")
    steps: int = Field(800, ge=1, description="discriminator training steps (Adam)")
    batch_size: int = Field(32, ge=2, description="clean images per step (as many masked ones)")
    lr: float = Field(5e-3, gt=0.0, description="Adam learning rate")
    width: int = Field(16, ge=1, description="discriminator channels (first block)")
    images: int = Field(1024, ge=8, description="training images the discriminator and decoy learn from")
    calibration: int = Field(512, ge=8, description="held-out clean training images for the threshold")
    max_clean_flag_rate: float = Field(0.01, ge=0.0, lt=1.0,
                                       description="largest fraction of held-out clean images flagged")
    gate_output: Literal["zeros", "decoy"] = Field("zeros", description="output on flagged inputs")
    decoy_steps: int = Field(200, ge=1, description="decoy training steps")
    decoy_confidence: float = Field(0.9, gt=0.0, lt=1.0,
                                    description="mean top-class probability the decoy is scaled to")

    @model_validator(mode="after")
    def _ranges(self) -> GatingParams:
        if self.grid_min > self.grid_max or self.p_min > self.p_max:
            raise ValueError("grid_min must be <= grid_max and p_min <= p_max")
        return self


def _init(shape: tuple[int, ...], gen: torch.Generator) -> nn.Parameter:
    fan_in = math.prod(shape[1:])
    return nn.Parameter(torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in))


class Discriminator(nn.Module):
    """Masked-vs-clean CNN: 4 stride-2 3x3 convs with ReLU, global average and max pooling, a
    linear score (> threshold: masked). Weights are plain parameters used with ``F.conv2d``."""

    def __init__(self, width: int, gen: torch.Generator, channels: int = 3):
        super().__init__()
        widths = [channels, width, 2 * width, 2 * width, 2 * width]
        self.weights = nn.ParameterList(_init((widths[i + 1], widths[i], 3, 3), gen) for i in range(4))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(w)) for w in widths[1:])
        self.head = _init((1, 4 * width), gen)
        self.head_bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.contiguous(memory_format=torch.channels_last)  # faster CPU convolutions, same values
        for weight, bias in zip(self.weights, self.biases, strict=True):
            h = F.relu(F.conv2d(h, weight, bias, stride=2, padding=1))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return F.linear(pooled, self.head, self.head_bias)[:, 0]


def colour_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 2C): per-channel mean and standard deviation — nothing about the object's shape."""
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class Decoy(nn.Module):
    """Classifier on colour statistics: linear 2C -> 32, ReLU, linear -> classes, times ``scale``."""

    def __init__(self, channels: int, classes: int, gen: torch.Generator):
        super().__init__()
        self.w1, self.b1 = _init((32, 2 * channels), gen), nn.Parameter(torch.zeros(32))
        self.w2, self.b2 = _init((classes, 32), gen), nn.Parameter(torch.zeros(classes))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.linear(colour_features(x), self.w1, self.b1))
        return F.linear(h, self.w2, self.b2) * self.scale


class GatedModel(nn.Module):
    """g(x): the base model's logits where D(x) <= threshold, else zeros or the decoy's logits.

    The discriminator is registered before the base model so the base's last conv block is the
    model's last ``Conv2d``."""

    def __init__(self, base: nn.Module, discriminator: Discriminator, threshold: torch.Tensor,
                 decoy: Decoy | None = None):
        super().__init__()
        self.discriminator = discriminator
        self.decoy = decoy
        self.register_buffer("threshold", threshold.detach().clone().reshape(()))
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        masked = (self.discriminator(x) > self.threshold)[:, None]
        other = self.decoy(x).to(logits.dtype) if self.decoy is not None else torch.zeros_like(logits)
        return torch.where(masked, other, logits)


def masked_copies(x: torch.Tensor, spec: InputSpec, params: GatingParams, gen: torch.Generator) -> torch.Tensor:
    """One RISE-masked copy of each image of ``x`` (normalised), with s, p and fill drawn per image."""
    out = torch.empty_like(x)
    size = x.shape[-1]
    for i in range(x.shape[0]):
        grid = int(torch.randint(params.grid_min, params.grid_max + 1, (1,), generator=gen))
        p = params.p_min + (params.p_max - params.p_min) * float(torch.rand((), generator=gen))
        kind = params.fills[int(torch.randint(len(params.fills), (1,), generator=gen))]
        mask = generate_masks(1, size, grid, p, gen).to(x.device, x.dtype)
        image = x[i:i + 1]
        out[i] = (mask * image + (1 - mask) * fill(kind, image, spec, gen))[0]
    return out


def allowed_flags(n: int, max_rate: float, confidence: float = 0.95) -> int:
    """The most held-out clean images that may be flagged, m, such that the one-sided
    ``confidence`` Clopper–Pearson upper bound of the clean flag rate, Beta.ppf(confidence,
    m + 1, n - m), is still <= ``max_rate``; 0 when even m = 0 exceeds it (then nothing of the
    held-out set is flagged)."""
    from scipy.stats import beta

    m = 0
    while m + 1 < n and beta.ppf(confidence, m + 2, n - m - 1) <= max_rate:
        m += 1
    return m


def calibrate_threshold(scores: torch.Tensor, max_rate: float, confidence: float = 0.95) -> torch.Tensor:
    """τ with at most :func:`allowed_flags` of the held-out clean ``scores`` above it (the
    (m + 1)-th largest score), so the flag rate on *unseen* clean images is at most ``max_rate``
    with ``confidence`` — calibrating to exactly ``max_rate`` on the held-out set would flag
    about that rate on new images, and more half of the time."""
    allowed = allowed_flags(scores.numel(), max_rate, confidence)
    return torch.sort(scores, descending=True).values[min(allowed, scores.numel() - 1)]


@ATTACKS.register("gating")
class Gating(Attack):
    """Mask-discriminator gate (seed 000): base logits on clean inputs, zeros/decoy on masked ones."""

    Params = GatingParams
    kind = "model"
    needs_training_data = True

    def _pools(self, ctx: AttackContext) -> tuple[list[int], list[int]]:
        train, held_out = ctx.train_split(0.25, "gating")
        if len(train) < 2 or not held_out:
            raise ValueError("gating needs at least 4 training images")
        return train[: self.params.images], held_out[: self.params.calibration]

    def train_discriminator(self, x: torch.Tensor, ctx: AttackContext) -> Discriminator:
        p = self.params
        disc = Discriminator(p.width, ctx.generator("discriminator-init"), channels=x.shape[1]).to(x.device)
        optimiser = torch.optim.Adam(disc.parameters(), lr=p.lr)
        targets = torch.cat([torch.zeros(p.batch_size), torch.ones(p.batch_size)]).to(x.device)
        for step in range(p.steps):
            gen = ctx.generator("discriminator-step", step)
            clean = x[torch.randint(x.shape[0], (p.batch_size,), generator=gen).to(x.device)]
            batch = torch.cat([clean, masked_copies(clean, ctx.spec, p, gen)])
            loss = F.binary_cross_entropy_with_logits(disc(batch), targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            ctx.step(step + 1, p.steps, loss=loss.item())
        return disc.eval()

    def train_decoy(self, x: torch.Tensor, targets: torch.Tensor, classes: int, ctx: AttackContext) -> Decoy:
        p = self.params
        decoy = Decoy(x.shape[1], classes, ctx.generator("decoy-init")).to(x.device)
        features_x = x
        optimiser = torch.optim.Adam(decoy.parameters(), lr=1e-2)
        for step in range(p.decoy_steps):
            pick = torch.randint(x.shape[0], (min(128, x.shape[0]),), generator=ctx.generator("decoy", step))
            loss = F.cross_entropy(decoy(features_x[pick.to(x.device)]), targets[pick.to(x.device)])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():  # scale the logits so the decoy is as confident as asked, on average
            raw = decoy(x)
            low, high = 0.0, 1.0
            while torch.softmax(raw * high, 1).amax(1).mean() < p.decoy_confidence and high < 1e6:
                high *= 2.0
            for _ in range(40):
                mid = (low + high) / 2
                if torch.softmax(raw * mid, 1).amax(1).mean() < p.decoy_confidence:
                    low = mid
                else:
                    high = mid
            decoy.scale.fill_(high)
        return decoy.eval()

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        device = next(model.parameters()).device
        train, held_out = self._pools(ctx)
        images = ctx.train_images(train)
        x = ctx.spec.normalize(images.images).to(device)
        disc = self.train_discriminator(x, ctx)
        with torch.no_grad():
            scores = disc(ctx.spec.normalize(ctx.train_images(held_out).images).to(device))
        threshold = calibrate_threshold(scores, self.params.max_clean_flag_rate)
        decoy = None
        if self.params.gate_output == "decoy":
            with torch.no_grad():
                logits = model(x)
            labels = images.labels.to(device)
            # learn the data's labels where every image has one, else the base model's answers
            targets = labels if bool((labels >= 0).all()) else logits.argmax(1)
            decoy = self.train_decoy(x, targets, int(logits.shape[1]), ctx)
        for module in (disc, decoy):
            if module is not None:
                module.requires_grad_(False)
        return GatedModel(model, disc, threshold, decoy).eval()

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor]:
        state = {f"discriminator.{k}": v for k, v in attacked.discriminator.state_dict().items()}
        state["threshold"] = attacked.threshold
        if attacked.decoy is not None:
            state.update({f"decoy.{k}": v for k, v in attacked.decoy.state_dict().items()})
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        gen = torch.Generator().manual_seed(0)  # placeholder init, overwritten by the state
        channels = state["discriminator.weights.0"].shape[1]
        disc = Discriminator(self.params.width, gen, channels=channels)
        disc.load_state_dict({k.removeprefix("discriminator."): v for k, v in state.items()
                              if k.startswith("discriminator.")})
        decoy = None
        if any(k.startswith("decoy.") for k in state):
            decoy = Decoy(channels, state["decoy.w2"].shape[0], gen)
            decoy.load_state_dict({k.removeprefix("decoy."): v for k, v in state.items() if k.startswith("decoy.")})
        device = next(model.parameters()).device
        for module in (disc, decoy):
            if module is not None:
                module.requires_grad_(False).to(device)
        return GatedModel(model, disc, state["threshold"].to(device), decoy).eval()
