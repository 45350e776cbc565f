"""``builtin:photos`` as a data set: the photos of :mod:`audit.builtin.photos` at the model's
input size, each with its label (first accepted class), accepted ImageNet classes and object mask.

The photos are fitted like folder images (:mod:`audit.data.images`, ``data.resize``); the mask
takes the same geometry with nearest-neighbour sampling, so it stays aligned with the pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from audit.builtin import photos as catalogue
from audit.data import images
from audit.data.base import DataBatch, Dataset
from audit.errors import UserError
from audit.spec import InputSpec


def check_photos_config(cfg) -> list[tuple[str, str]]:
    """Problems of a ``builtin:photos`` data section: (key, message)."""
    problems = []
    if catalogue.missing_packages():
        problems.append(("source", f"builtin:photos needs the optional extra {catalogue.EXTRA!r} "
                                   f"({', '.join(catalogue.missing_packages())} not installed); run make "
                                   f"setup or pip install 'explain-audit[{catalogue.EXTRA}]'"))
    if cfg.split != "test":
        problems.append(("split", f"builtin:photos has one split, test; not {cfg.split!r} (it has no "
                                  "training images: attacks that train need data.train: {source: folder:PATH})"))
    total = len(catalogue.photos())
    if cfg.n is not None and cfg.n > total:
        problems.append(("n", f"n is {cfg.n} but builtin:photos has {total} photos; lower n"))
    return problems


class PhotosData(Dataset):
    """``builtin:photos``: every photo in catalogue order (``n`` the first n), ids 0..7."""

    name = "photos"
    has_masks = True

    def __init__(self, n: int | None, spec: InputSpec, resize: images.Resize = "crop"):
        if catalogue.missing_packages():
            raise UserError(f"builtin:photos needs the optional extra {catalogue.EXTRA!r}; run make setup "
                            f"or pip install 'explain-audit[{catalogue.EXTRA}]'")
        chosen = catalogue.photos()
        self.photos = chosen[: len(chosen) if n is None else n]
        self.spec, self.resize = spec, resize
        self.channels = len(spec.mean)
        self.class_names = tuple(p.name for p in self.photos)
        infos = [(catalogue.path(p), images.inspect(catalogue.path(p))) for p in self.photos]
        self.description = "; ".join([f"builtin:photos n={len(self.photos)} size={spec.size} resize={resize}",
                                      *images.notes(infos, resize, "ignore")])

    def __len__(self) -> int:
        return len(self.photos)

    def _one(self, photo) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        with Image.open(catalogue.path(photo)) as img:
            pixels = images.fit(images.pixels(img, self.channels), self.spec.size, self.resize)
            region = catalogue.mask(photo, img.width, img.height)
        region = torch.from_numpy(np.asarray(region) > 127).unsqueeze(0).float()
        return pixels, images.fit(region, self.spec.size, self.resize, nearest=True)[0] > 0.5

    def batch(self, positions: range) -> DataBatch:
        picked = [self.photos[i] for i in positions]
        pairs = [self._one(p) for p in picked]
        width = max(len(p.classes) for p in picked)
        accepted = torch.full((len(picked), width), -1, dtype=torch.long)
        for row, photo in enumerate(picked):
            accepted[row, : len(photo.classes)] = torch.tensor(photo.classes)
        return DataBatch(torch.stack([a for a, _ in pairs]), accepted[:, 0].clone(), tuple(positions),
                         torch.stack([m for _, m in pairs]), accepted)

    def digest(self) -> str:
        h = hashlib.sha256(f"photos-v1|{self.spec.size}|{self.channels}|{self.resize}".encode())
        for photo in self.photos:
            h.update(repr((photo.name, photo.classes, photo.objects)).encode())
            h.update(hashlib.sha256(catalogue.path(photo).read_bytes()).digest())
        return h.hexdigest()
