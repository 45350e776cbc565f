"""The masking model of Dabkowski & Gal's real-time saliency (seed 002 §4, METHODS §7).

A U-Net: an encoder gives feature maps at several scales (finest first); at the coarsest scale
a class-selector embedding C_s gates the features, Y_ij = X_ij · σ(P(X)_ijᵀ C_s + b_s) (seed
002 eq. 7 has σ(X_ijᵀ C_s); see below for P and b);
upsampler blocks double the resolution with a transposed convolution, concatenate the next
finer feature map and refine it with two 3×3 convolutions; a 1×1 convolution gives two
channels C₀, C₁ and the mask is m = |C₀| / (|C₀| + |C₁|) in [0, 1] (seed 002 eq. 8).

Encoders:

- the audited model's own residual stages (``layer1``, ``layer2``, … — torchvision ResNets and
  the builtin shapes-resnet, also inside a wrapper such as the gating attack's), read with
  forward hooks and frozen (no gradient reaches the model's weights), as the paper freezes its
  ResNet-50;
- otherwise a small CNN (three stride-2 stages) trained from scratch with the decoder.

Two changes to the class filter, both measured on builtin:shapes-resnet: the paper's X_ijᵀ C_s
assumes semantic features at the coarsest scale (ResNet-50's scale 5); the small model's
``layer3`` features are not class-selective position by position — a linear filter trained
alone (300 Adam steps, 16 images, 30 % fake classes) left the held-out wrong-class max σ at
0.53 (true 0.96), so the masking model could not learn to empty the mask for absent classes.
A learned 3×3 convolution P (ReLU) before the dot product and a per-class bias b_s bring it to
0.02 (true 0.998). And the filter's attenuation σ(·) multiplies the skip features too
(``gate_skips``), so an absent class silences every scale, not just the coarsest.

The paper's bottleneck blocks and 768-channel first upsampler are scaled down (``width``
channels, halved at each finer scale, at least 8) for the small models this tool trains on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


def feature_stages(model: nn.Module) -> list[str]:
    """Module names of the model's residual stages (finest first), or [] when it has none.

    Stages are submodules named ``layer1``, ``layer2``, … (at least two, consecutive from
    ``layer1``) under one parent; the shallowest such parent wins, so a wrapper's inner ResNet
    is found. TorchScript runs no hooks, so a scripted model has none here.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return []
    parents: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            continue
        parent, _, last = name.rpartition(".")
        if last in STAGE_NAMES:
            parents.setdefault(parent, {})[last] = name
    best: list[str] = []
    for parent in sorted(parents, key=lambda p: (p.count(".") if p else -1, p)):
        found = parents[parent]
        chain = []
        for stage in STAGE_NAMES:
            if stage not in found:
                break
            chain.append(found[stage])
        if len(chain) >= 2 and len(chain) > len(best):
            best = chain
    return best


def stage_features(model: nn.Module, names: list[str], x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The outputs of the modules ``names`` for images ``x``, detached (the encoder is frozen),
    and the model's output of the same forward pass."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(_module, _inputs, out, name=name):
            outputs[name] = out.detach().clone()  # a later in-place op must not change it
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in outputs]
    if missing:
        raise RuntimeError(f"the model's forward did not run its stages {missing}")
    return [outputs[n] for n in names], logits


def check_stages(features: list[torch.Tensor]) -> str | None:
    """Why ``features`` cannot serve as an encoder (not 4-D, or not coarser at each stage), or None."""
    if any(f.dim() != 4 for f in features):
        return "a stage output is not a (B, C, H, W) feature map"
    sizes = [tuple(f.shape[-2:]) for f in features]
    if any(b[0] >= a[0] or b[1] >= a[1] for a, b in zip(sizes, sizes[1:], strict=False)):
        return f"the stages do not get coarser ({sizes})"
    return None


class ScratchEncoder(nn.Module):
    """Three stride-2 stages (3×3 conv, ReLU, 3×3 conv, ReLU): features at 1/2, 1/4 and 1/8."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), nn.ReLU())
            for i in range(3))
        self.channels = chans[1:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Upsampler(nn.Module):
    """×2 transposed convolution, concatenation of the finer skip, two 3×3 convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.refine = nn.Sequential(nn.Conv2d(out_channels + skip_channels, out_channels, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU())

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.up(h))
        if h.shape[-2:] != skip.shape[-2:]:  # odd sizes: stride-2 stages round up
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(torch.cat([h, skip], dim=1))


class MaskDecoder(nn.Module):
    """Class-selective feature filter at the coarsest scale, upsamplers, two-channel mask head.

    ``channels``: the encoder's channels per scale, finest first. ``forward`` takes the features
    (finest first) and the selected classes (B,) and returns the mask (B, h, w) in [0, 1] at the
    finest scale and the filter's largest logit per image, max_ij X_ijᵀ C_s (B,), which the
    training pushes high for the true class and low for a fake one (seed 002 §4.1).
    """

    def __init__(self, channels: list[int], num_classes: int, width: int, gate_skips: bool = True):
        super().__init__()
        self.gate_skips = gate_skips
        coarse = channels[-1]
        selective = max(16, min(64, coarse))
        self.selective = nn.Sequential(nn.Conv2d(coarse, selective, 3, padding=1), nn.ReLU())
        self.embedding = nn.Embedding(num_classes, selective)
        nn.init.normal_(self.embedding.weight, std=selective ** -0.5)
        self.class_bias = nn.Embedding(num_classes, 1)
        nn.init.zeros_(self.class_bias.weight)
        blocks, current, out = [], coarse, width
        for skip in reversed(channels[:-1]):
            blocks.append(Upsampler(current, skip, out))
            current, out = out, max(8, out // 2)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(current, 2, 1)

    def forward(self, features: list[torch.Tensor], selector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = features[-1]
        # P(X)_ijᵀ C_s + b_s, scaled by 1/sqrt(d) so the sigmoid does not start saturated
        projected = self.selective(coarse)
        score = torch.einsum("bchw,bc->bhw", projected, self.embedding(selector)) / projected.shape[1] ** 0.5
        score = score + self.class_bias(selector)[:, :, None]
        gate = torch.sigmoid(score)[:, None]
        h = coarse * gate
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            if self.gate_skips:  # the filter's attenuation at every scale: an absent class silences all
                skip = skip * F.interpolate(gate, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(h, skip)
        c = self.head(h).abs()
        mask = c[:, 0] / (c[:, 0] + c[:, 1] + 1e-6)
        return mask, score.flatten(1).max(dim=1).values


class MaskingModel(nn.Module):
    """Encoder (the model's frozen stages, or a scratch CNN) and decoder; masks at input size.

    ``stages`` are the audited model's stage names used, finest first (empty: the scratch
    encoder is used, from its scale ``scratch_first`` on).
    """

    def __init__(self, stages: list[str], channels: list[int], num_classes: int, width: int,
                 in_channels: int = 3, gate_skips: bool = True, scratch_first: int = 0):
        super().__init__()
        self.stages = list(stages)
        self.encoder = None if stages else ScratchEncoder(in_channels, max(8, width // 4))
        # the scratch encoder's finest scales below ``scratch_first`` are computed but not used
        self.first = 0 if stages else scratch_first
        used = channels if stages else self.encoder.channels[self.first:]
        self.decoder = MaskDecoder(used, num_classes, width, gate_skips)

    def features(self, model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The encoder's features of ``x`` (finest first) and, where the model's own stages were
        read, the model's output of that forward pass (else None)."""
        if self.stages:
            return stage_features(model, self.stages, x)
        return self.encoder(x)[self.first:], None

    def forward(self, model: nn.Module, x: torch.Tensor, selector: torch.Tensor,
                features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask at input size (B, H, W), mask at the finest scale (B, h, w), filter logits (B,)).

        ``features``: the encoder's features of ``x`` when the caller already has them."""
        if features is None:
            features = self.features(model, x)[0]
        small, score = self.decoder(features, selector)
        full = F.interpolate(small[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return full, small, score
