"""Where the audited images come from: ``builtin:shapes``, ``builtin:shapes-pairs`` (two shapes of
two classes per image, for active fooling), ``builtin:photos`` (real photos, :mod:`audit.data.photos`)
or ``folder:PATH`` (ImageFolder layout; files decoded by :mod:`audit.data.images`).

Images reach the engine in pixel space [0, 1] at the model's input size, in batches, each with
its sample id (stable across runs), label (-1 if unknown) and, for builtin data, the
ground-truth object mask.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from audit.builtin import pairs, shapes
from audit.data import images
from audit.data.base import DataBatch, Dataset
from audit.data.photos import PhotosData, check_photos_config
from audit.errors import UserError
from audit.seeding import generator
from audit.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")


class ShapesData(Dataset):
    """``builtin:shapes``: one shape per image, with its label and object mask."""

    name = "shapes"
    has_masks = True
    class_names = shapes.CLASSES

    def __init__(self, split: str, n: int | None, size: int, seed: int = 0):
        n = shapes.SPLIT_SIZES[split] if n is None else n  # None: the whole split
        self.split, self.n, self.size, self.seed = split, n, size, seed
        self.description = f"builtin:{self.name} split={split} n={n} size={size}"

    def __len__(self) -> int:
        return self.n

    def batch(self, positions: range) -> DataBatch:
        b = shapes.render(list(positions), self.split, seed=self.seed, size=self.size)
        return DataBatch(b.images, b.labels, tuple(int(i) for i in b.indices), b.masks)

    def digest(self) -> str:
        key = f"{self.name}-v1|{self.split}|{self.n}|{self.size}|{self.seed}"
        return hashlib.sha256(key.encode()).hexdigest()


class PairsData(ShapesData):
    """``builtin:shapes-pairs``: two shapes of two classes per image (:mod:`audit.builtin.pairs`);
    no labels, no masks."""

    name = "shapes-pairs"
    has_masks = False
    single_label = False

    def batch(self, positions: range) -> DataBatch:
        images, _, _ = pairs.render_pairs(list(positions), self.split, self.seed, self.size)
        unknown = torch.full((len(positions),), -1, dtype=torch.long)
        return DataBatch(images, unknown, tuple(int(i) for i in positions))


BUILTIN = {"shapes": ShapesData, "shapes-pairs": PairsData, "photos": PhotosData}


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[str]]:
    """Class names (sorted visible sub-folders), image files (path, class index) in sorted order,
    and the class folders holding no image. Hidden files and folders (``.name``) are skipped at
    any depth, e.g. a nested ``.ipynb_checkpoints/``."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, empty = [], []
    for index, name in enumerate(classes):
        found = [path for path in sorted((root / name).rglob("*"))
                 if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                 and not _hidden(path.relative_to(root))]
        files.extend((path, index) for path in found)
        if not found:
            empty.append(name)
    return classes, files, empty


class FolderData(Dataset):
    """ImageFolder layout: ``root/<class>/<image>``, decoded and fitted by :mod:`audit.data.images`
    (``channels`` = the model's, ``resize``: crop | pad | stretch, ``exif``: ignore | apply).

    Every image file must decode; undecodable files are listed and the run fails when there are
    more than ``max_corrupt`` of them (otherwise they are left out). Files that decode but whose
    pixel values have no known range (float or 32-bit integer) are refused. The ``n`` samples are
    then a seeded random choice among the good files (so every class can appear), kept in file
    order; a sample's id is its index in the sorted listing of the folder. The description
    reports the share cut (or padded) by fitting and which files carried an EXIF rotation.
    """

    def __init__(self, root: Path, n: int | None, spec: InputSpec, seed: int, labels: dict[str, int] | None,
                 max_corrupt: int = 0, resize: images.Resize = "crop", exif: images.Exif = "ignore"):
        self.root, self.spec, self.resize, self.exif = root, spec, resize, exif
        self.channels = len(spec.mean)
        classes, files, empty = list_image_folder(root)
        if not files:
            raise UserError(f"image folder {images.shown(root)} holds no images in class sub-folders "
                            f"({', '.join(IMAGE_SUFFIXES)}); use the layout ROOT/CLASS/IMAGE")
        if empty:
            raise UserError(f"class folder(s) {', '.join(images.shown(e) for e in empty)} in {images.shown(root)} "
                            "hold no images; add images or remove the folder (class indices follow the "
                            "sorted folder names, as in torchvision's ImageFolder)")
        if labels is not None:
            missing = [c for c in classes if c not in labels]
            if missing:
                raise UserError(f"data.labels gives no model index for the class folder(s) "
                                f"{', '.join(images.shown(c) for c in missing)}; add them")
        self.class_names = tuple(classes)
        self.label_of = [labels[c] for c in classes] if labels is not None else list(range(len(classes)))
        infos = self._inspect(files, max_corrupt)
        good = [i for i in range(len(files)) if i in infos]
        n = len(good) if n is None else n  # None: every usable image
        if n > len(good):
            raise UserError(f"data.n is {n} but {images.shown(root)} holds only {len(good)} usable images; "
                            "lower n")
        pick = torch.randperm(len(good), generator=generator(seed, "folder-selection"))[:n]
        self.ids = tuple(sorted(good[i] for i in pick.tolist()))
        self.files = [files[i] for i in self.ids]
        notes = images.notes([(files[i][0], infos[i]) for i in self.ids], resize, exif, root)
        self.description = "; ".join([f"folder:{images.shown(root)} n={n} of {len(files)} ({len(classes)} "
                                      f"classes) resize={resize}", *notes])

    @staticmethod
    def _inspect(files: list[tuple[Path, int]], max_corrupt: int) -> dict[int, images.FileInfo]:
        """Decode every file: {index: info} of the good ones."""
        infos, bad, unreadable = {}, [], []
        for index, (path, _) in enumerate(files):
            try:
                info = images.inspect(path)
            except Exception:
                bad.append(images.shown(path))
                continue
            if info.mode in ("I", "F") and not (info.mode == "I" and info.format == "PNG"):
                unreadable.append(f"{images.shown(path)} (mode {info.mode})")
            infos[index] = info
        if unreadable:
            raise UserError(f"{len(unreadable)} image(s) hold float or 32-bit integer pixels with no known "
                            f"value range: {', '.join(unreadable[:5])}; save them as 8- or 16-bit PNG")
        if len(bad) > max_corrupt:
            listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise UserError(f"{len(bad)} image(s) cannot be decoded: {listed}; fix or remove them "
                            f"(or raise data.max_corrupt, now {max_corrupt})")
        return infos

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> torch.Tensor:
        return images.load(path, self.spec.size, self.channels, self.resize, self.exif)

    def batch(self, positions: range) -> DataBatch:
        picked = [self.files[i] for i in positions]
        pixels = torch.stack([self._load(p) for p, _ in picked])
        labels = torch.tensor([self.label_of[c] for _, c in picked], dtype=torch.long)
        return DataBatch(pixels, labels, tuple(self.ids[i] for i in positions))

    def digest(self) -> str:
        h = hashlib.sha256(f"folder-v2|{self.channels}|{self.resize}|{self.exif}".encode())
        for path, cls in self.files:
            stat = path.stat()
            h.update(os.fsencode(path.relative_to(self.root)) + f"|{cls}|{stat.st_size}".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def has_single_labels(cfg) -> bool:
    """Whether the images of a (valid) data section each carry one label."""
    scheme, _, rest = cfg.source.partition(":")
    return scheme != "builtin" or BUILTIN[rest].single_label


def check_data_config(cfg, resolve: Callable[[str], Path], channels: int = 3) -> list[tuple[str, str]]:
    """Problems of a data section (or ``data.train``) for a model taking ``channels`` channels."""
    scheme, sep, rest = cfg.source.partition(":")
    if not sep or scheme not in ("builtin", "folder") or not rest:
        return [("source", f"data source {cfg.source!r} must be builtin:shapes, builtin:shapes-pairs, "
                           "builtin:photos or folder:PATH")]
    if scheme == "builtin":
        if rest not in BUILTIN:
            return [("source", f"unknown builtin data set {rest!r}; use "
                               f"{' or '.join('builtin:' + name for name in BUILTIN)}")]
        if rest == "photos":
            return check_photos_config(cfg)
        problems = []
        if channels != 3:
            problems.append(("source", f"builtin:{rest} images are drawn in colour (3 channels) and the model "
                                       f"takes {channels}; use folder: images or a 3-channel model"))
        if cfg.split not in shapes.SPLIT_SIZES:
            problems.append(("split", f"{rest} has splits {', '.join(shapes.SPLIT_SIZES)}; "
                                      f"not {cfg.split!r}"))
        elif cfg.n is not None and cfg.n > shapes.SPLIT_SIZES[cfg.split]:
            problems.append(("n", f"n is {cfg.n} but {rest}/{cfg.split} has "
                                  f"{shapes.SPLIT_SIZES[cfg.split]} images; lower n"))
        return problems
    root = resolve(rest)
    if not root.is_dir():
        return [("source", f"image folder {images.shown(root)} not found; check the path (relative paths "
                           "start at the suite's folder)")]
    return []


def load_data(cfg, resolve: Callable[[str], Path], spec: InputSpec, seed: int) -> Dataset:
    scheme, _, rest = cfg.source.partition(":")
    resize = getattr(cfg, "resize", "crop")
    if scheme == "builtin" and rest == "photos":
        return PhotosData(cfg.n, spec, resize)
    if scheme == "builtin":
        return BUILTIN[rest](cfg.split, cfg.n, spec.size)
    return FolderData(resolve(rest), cfg.n, spec, seed, cfg.labels, cfg.max_corrupt, resize,
                      getattr(cfg, "exif", "ignore"))


def same_images(data_cfg, train_cfg, resolve: Callable[[str], Path]) -> bool:
    """Whether a (valid) training source holds the audited images: the same builtin split, or the
    audited folder itself (or a folder inside or around it)."""
    scheme, _, rest = data_cfg.source.partition(":")
    train_scheme, _, train_rest = train_cfg.source.partition(":")
    if scheme != train_scheme:
        return False
    if scheme == "builtin":
        return rest == train_rest and data_cfg.split == train_cfg.split
    audited, train = resolve(rest).resolve(), resolve(train_rest).resolve()
    return audited == train or audited in train.parents or train in audited.parents


def load_training(data_cfg, resolve: Callable[[str], Path], spec: InputSpec, seed: int) -> Dataset | None:
    """The training images of a suite (``data.train`` or its default), or None where there are none."""
    train = data_cfg.training()
    if train is None:
        return None
    return load_data(train, resolve, spec, seed)
