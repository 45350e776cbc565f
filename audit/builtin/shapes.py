"""The embedded "shapes" data set: procedural images with ground-truth object masks.

Each sample is one of six shapes (circle, square, triangle, star, cross, ring) at a random
position, scale, rotation and colour, drawn over a textured background with soft distractor
blobs. Sample ``i`` of a split depends only on (seed, split, i), so any subset can be rendered
without rendering the rest, and the same index always yields the same image.

Images are float tensors in pixel space [0, 1], shape (3, S, S); masks are bool (S, S).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from audit.seeding import generator

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
SPLIT_SIZES: dict[str, int] = {"train": 12000, "val": 2000, "test": 2000}
IMAGE_SIZE = 64
# The reference model's normalisation; the shapes images are roughly centred on grey.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ShapesBatch:
    images: torch.Tensor  # (B, 3, S, S) in [0, 1]
    labels: torch.Tensor  # (B,) int64
    masks: torch.Tensor  # (B, S, S) bool
    indices: torch.Tensor  # (B,) int64, the sample indices within the split


def uniform(gen: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape or (1,), generator=gen)


def _polygon_radius(phi: torch.Tensor, angles: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Distance from the centre to a star-shaped polygon's edge along direction ``phi``.

    The polygon has vertices at polar coordinates (radii[k], angles[k]), angles increasing over
    one turn. The edge between two vertices (r1, a1), (r2, a2) is the line with polar equation
    rho(phi) = r1 r2 sin(a2 - a1) / (r1 sin(phi - a1) + r2 sin(a2 - phi)).
    """
    n = angles.numel()
    phi = torch.remainder(phi - angles[0], 2 * math.pi) + angles[0]
    step = 2 * math.pi / n
    k = torch.clamp(((phi - angles[0]) / step).floor().long(), 0, n - 1)
    a1, a2 = angles[k], angles[k] + step
    r1, r2 = radii[k], radii[(k + 1) % n]
    return r1 * r2 * math.sin(step) / (r1 * torch.sin(phi - a1) + r2 * torch.sin(a2 - phi))


def _signed_distance(shape: str, u: torch.Tensor, v: torch.Tensor, radius: float) -> torch.Tensor:
    """Approximate signed distance (pixels, negative inside) in the shape's rotated frame."""
    rho = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    if shape == "circle":
        return rho - radius
    if shape == "ring":
        return torch.maximum(rho - radius, 0.55 * radius - rho)
    if shape == "cross":
        arm = 0.34 * radius
        box_h = torch.maximum(u.abs() - radius, v.abs() - arm)
        box_v = torch.maximum(u.abs() - arm, v.abs() - radius)
        return torch.minimum(box_h, box_v)
    if shape == "square":
        n, radii = 4, [radius * 1.05] * 4
    elif shape == "triangle":
        n, radii = 3, [radius * 1.15] * 3
    elif shape == "star":
        n, radii = 10, [radius * 1.15, radius * 0.5] * 5
    else:  # pragma: no cover - CLASSES is closed
        raise ValueError(shape)
    angles = torch.arange(n, dtype=u.dtype) * (2 * math.pi / n)
    edge = _polygon_radius(phi, angles, torch.tensor(radii, dtype=u.dtype))
    return rho - edge


def _background(gen: torch.Generator, size: int) -> torch.Tensor:
    # a muted base (grey level plus a tint) so the object's shape, not the scene's colour,
    # is what tells the classes apart
    base = (uniform(gen, 0.3, 0.7, 1) + 0.08 * torch.randn(3, generator=gen)).view(3, 1, 1)
    grid = int(torch.randint(3, 8, (1,), generator=gen))
    low = torch.randn(1, 3, grid, grid, generator=gen) * 0.07
    low = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    img = base + low + torch.randn(3, size, size, generator=gen) * 0.02
    if float(torch.rand(1, generator=gen)) < 0.4:  # stripes, a texture with orientation
        theta = float(uniform(gen, 0, math.pi))
        freq = float(uniform(gen, 0.05, 0.2))
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        wave = torch.sin(2 * math.pi * freq * (xs * math.cos(theta) + ys * math.sin(theta)))
        img = img + 0.04 * wave * uniform(gen, -1, 1, 3).view(3, 1, 1)
    return img


def _distractors(gen: torch.Generator, img: torch.Tensor) -> torch.Tensor:
    size = img.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
        cy, cx = (float(v) for v in uniform(gen, 0, size, 2))
        sigma = float(uniform(gen, 1.5, 3.5))
        colour = torch.rand(3, 1, 1, generator=gen)
        alpha = 0.85 * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        img = img * (1 - alpha) + colour * alpha
    return img


def scene(gen: torch.Generator, size: int) -> torch.Tensor:
    """The (3, S, S) background every shapes image is drawn on: texture plus distractor blobs."""
    return _distractors(gen, _background(gen, size))


def _object_colour(gen: torch.Generator, around: torch.Tensor) -> torch.Tensor:
    """A colour that differs from the local background mean by at least 0.45 (L2 in RGB)."""
    for _ in range(32):
        colour = torch.rand(3, generator=gen)
        if float(torch.linalg.vector_norm(colour - around)) >= 0.45:
            return colour
    return (1.0 - around).clamp(0, 1)


def render_sample(index: int, split: str = "test", seed: int = 0, size: int = IMAGE_SIZE):
    """Render one sample: (image (3,S,S) in [0,1], label, mask (S,S) bool)."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_SIZES)}")
    gen = generator(seed, "shapes", split, int(index))
    label = int(index) % len(CLASSES)  # balanced by construction
    img = scene(gen, size)

    scale = size / 64.0
    radius = float(uniform(gen, 9.0, 17.0)) * scale
    margin = radius * 1.2 + 1
    cy, cx = (float(v) for v in uniform(gen, margin, size - margin, 2))
    img, inside = draw_shape(gen, img, label, radius, cy, cx)
    return img.clamp(0, 1), label, inside


def draw_shape(gen: torch.Generator, img: torch.Tensor, label: int, radius: float, cy: float,
               cx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``img`` with a shape of class ``label`` drawn at (cy, cx) (random rotation, a colour that
    stands out from the local background, a little shading) and the shape's mask (S, S) bool."""
    size = img.shape[-1]
    rotation = float(uniform(gen, 0, 2 * math.pi))
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dy, dx = ys - cy, xs - cx
    u = dx * math.cos(rotation) + dy * math.sin(rotation)
    v = -dx * math.sin(rotation) + dy * math.cos(rotation)
    sdf = _signed_distance(CLASSES[label], u, v, radius)
    coverage = (0.5 - sdf).clamp(0, 1)  # one-pixel anti-aliased edge

    inside = coverage > 0.5
    around = img[:, ~inside].mean(dim=1) if (~inside).any() else img.mean(dim=(1, 2))
    colour = _object_colour(gen, around).view(3, 1, 1)
    shade = 1 + 0.05 * torch.randn(1, size, size, generator=gen)
    img = img * (1 - coverage) + (colour * shade) * coverage
    return img, inside


def render(indices: Sequence[int] | torch.Tensor, split: str = "test", seed: int = 0,
           size: int = IMAGE_SIZE) -> ShapesBatch:
    """Render the samples ``indices`` of ``split`` as one batch."""
    idx = [int(i) for i in indices]
    for i in idx:
        if not 0 <= i < SPLIT_SIZES[split]:
            raise IndexError(f"shapes/{split} has {SPLIT_SIZES[split]} samples; index {i} is outside")
    samples = [render_sample(i, split, seed, size) for i in idx]
    if not samples:
        empty = torch.empty(0, 3, size, size)
        return ShapesBatch(empty, torch.empty(0, dtype=torch.long),
                           torch.empty(0, size, size, dtype=torch.bool), torch.empty(0, dtype=torch.long))
    return ShapesBatch(
        images=torch.stack([s[0] for s in samples]),
        labels=torch.tensor([s[1] for s in samples], dtype=torch.long),
        masks=torch.stack([s[2] for s in samples]),
        indices=torch.tensor(idx, dtype=torch.long),
    )
