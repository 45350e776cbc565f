"""Two-class images of the shapes data, for active fooling (Heo et al. 2019, METHODS §4).

Active fooling swaps the explanations of two classes c₁, c₂ on images that hold both; its test
loss compares the manipulated model's map for c₁ with the original model's map for c₂. Heo et
al. use 2×2 mosaics of ImageNet images; half-size shapes are smaller than anything the reference
model saw in training (it then names both classes in its top two for only ~36 % of 2×2
mosaics), so here each image holds two shapes side by side at full scale instead: class a in one
half, class b ≠ a in the other (which half is drawn), radius 9–12 px at 64×64 so each fits its
half, over one shapes background. The reference model's top two classes are exactly {a, b} on
299 of the first 300 test images (tests/data/test_pairs.py holds it to ≥ 95 %).

a = i mod 6 (balanced); b, the layout and everything else come from (seed, split, i), so sample i
never depends on which other samples are rendered. Images carry no label and no object mask:
with two classes per image, one label or one mask per image would mislead accuracy and the
localisation metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from audit.builtin import shapes
from audit.seeding import generator

RADIUS = (9.0, 12.0)  # pixels at 64×64, scaled with the image size


class PairSample(NamedTuple):
    image: torch.Tensor  # (3, S, S) in [0, 1]
    a: int
    b: int
    mask_a: torch.Tensor  # (S, S) bool: the shape of class a
    mask_b: torch.Tensor


def render_pair(index: int, split: str = "test", seed: int = 0, size: int = shapes.IMAGE_SIZE) -> PairSample:
    """Two-class sample ``index``: the image, its classes and each shape's mask."""
    if split not in shapes.SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(shapes.SPLIT_SIZES)}")
    if not 0 <= int(index) < shapes.SPLIT_SIZES[split]:
        raise IndexError(f"shapes-pairs/{split} has {shapes.SPLIT_SIZES[split]} samples; "
                         f"index {index} is outside")
    n = len(shapes.CLASSES)
    gen = generator(seed, "shapes-pairs", split, int(index))
    a = int(index) % n
    b = (a + int(torch.randint(1, n, (1,), generator=gen))) % n
    img = shapes.scene(gen, size)
    a_left = bool(torch.rand(1, generator=gen) < 0.5)
    half, scale = size / 2, size / 64.0
    masks = []
    for cls, left in ((a, a_left), (b, not a_left)):
        radius = float(shapes.uniform(gen, *RADIUS)) * scale
        margin = 1.2 * radius + 1
        cy = float(shapes.uniform(gen, margin, size - margin))
        low = 0.0 if left else half
        cx = float(shapes.uniform(gen, low + margin, max(low + margin, low + half - margin)))
        img, mask = shapes.draw_shape(gen, img, cls, radius, cy, cx)
        masks.append(mask)
    return PairSample(img.clamp(0, 1), a, b, masks[0], masks[1])


def render_pairs(indices: Sequence[int], split: str = "test", seed: int = 0,
                 size: int = shapes.IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S), classes a (B,) and classes b (B,) of the samples ``indices``."""
    samples = [render_pair(i, split, seed, size) for i in indices]
    if not samples:
        return torch.empty(0, 3, size, size), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return (torch.stack([s.image for s in samples]), torch.tensor([s.a for s in samples]),
            torch.tensor([s.b for s in samples]))
