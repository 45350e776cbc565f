"""Where the audited images come from: ``builtin:shapes``, ``builtin:shapes-pairs`` (two shapes of
two classes per image, for active fooling) or ``folder:PATH`` (ImageFolder layout).

Images reach the engine in pixel space [0, 1] at the model's input size, in batches, each with
its sample id (stable across runs), label (-1 if unknown) and, for builtin data, the
ground-truth object mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from audit.builtin import pairs, shapes
from audit.errors import UserError
from audit.seeding import generator
from audit.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class DataBatch:
    images: torch.Tensor  # (B, 3, S, S) pixel space
    labels: torch.Tensor  # (B,) int64, -1 unknown
    ids: tuple[int, ...]
    masks: torch.Tensor | None = None  # (B, S, S) bool


class Dataset:
    """A fixed, ordered selection of ``n`` samples."""

    class_names: tuple[str, ...] = ()
    single_label: bool = True  # False: images hold several classes and carry no label
    has_masks: bool = False
    description: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, positions: range) -> DataBatch:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[DataBatch]:
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(len(self), start + batch_size)))

    def digest(self) -> str:
        """sha256 over what identifies the selection (cheap: no decoding needed)."""
        raise NotImplementedError


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


BUILTIN = {"shapes": ShapesData, "shapes-pairs": PairsData}


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = []
    for index, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((path, index))
    return classes, files


class FolderData(Dataset):
    """ImageFolder layout: ``root/<class>/<image>``; resized and centre-cropped to the input size.

    Every image file must decode; undecodable files are listed and the run fails when there are
    more than ``max_corrupt`` of them (otherwise they are left out). The ``n`` samples are then a
    seeded random choice among the good files (so every class can appear), kept in file order;
    a sample's id is its index in the sorted listing of the folder.
    """

    def __init__(self, root: Path, n: int | None, spec: InputSpec, seed: int, labels: dict[str, int] | None,
                 max_corrupt: int = 0):
        self.root, self.spec = root, spec
        classes, files = list_image_folder(root)
        if not files:
            raise UserError(f"image folder {root} holds no images in class sub-folders "
                            f"({', '.join(IMAGE_SUFFIXES)}); use the layout ROOT/CLASS/IMAGE")
        if labels is not None:
            missing = [c for c in classes if c not in labels]
            if missing:
                raise UserError(f"data.labels gives no model index for the class folder(s) "
                                f"{', '.join(missing)}; add them")
        self.class_names = tuple(classes)
        self.label_of = [labels[c] for c in classes] if labels is not None else list(range(len(classes)))
        self.corrupt = self._undecodable(files, max_corrupt)
        good = [i for i, (path, _) in enumerate(files) if str(path) not in self.corrupt]
        n = len(good) if n is None else n  # None: every usable image
        if n > len(good):
            raise UserError(f"data.n is {n} but {root} holds only {len(good)} usable images; lower n")
        pick = torch.randperm(len(good), generator=generator(seed, "folder-selection"))[:n]
        self.ids = tuple(sorted(good[i] for i in pick.tolist()))
        self.files = [files[i] for i in self.ids]
        self.description = f"folder:{root} n={n} of {len(files)} ({len(classes)} classes)"

    @staticmethod
    def _undecodable(files: list[tuple[Path, int]], max_corrupt: int) -> set[str]:
        from PIL import Image

        bad = []
        for path, _ in files:
            try:
                with Image.open(path) as img:
                    img.load()
            except Exception:
                bad.append(str(path))
        if len(bad) > max_corrupt:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise UserError(f"{len(bad)} image(s) cannot be decoded: {shown}; fix or remove them "
                            f"(or raise data.max_corrupt, now {max_corrupt})")
        return set(bad)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as TF

        with Image.open(path) as img:
            img = img.convert("RGB")
            img = TF.resize(img, self.spec.size)
            img = TF.center_crop(img, self.spec.size)
            return TF.to_tensor(img)

    def batch(self, positions: range) -> DataBatch:
        picked = [self.files[i] for i in positions]
        images = torch.stack([self._load(p) for p, _ in picked])
        labels = torch.tensor([self.label_of[c] for _, c in picked], dtype=torch.long)
        return DataBatch(images, labels, tuple(self.ids[i] for i in positions))

    def digest(self) -> str:
        h = hashlib.sha256(b"folder-v1")
        for path, cls in self.files:
            stat = path.stat()
            h.update(f"{path.relative_to(self.root)}|{cls}|{stat.st_size}".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def has_single_labels(cfg) -> bool:
    """Whether the images of a (valid) data section each carry one label."""
    scheme, _, rest = cfg.source.partition(":")
    return scheme != "builtin" or BUILTIN[rest].single_label


def check_data_config(cfg, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
    scheme, sep, rest = cfg.source.partition(":")
    if not sep or scheme not in ("builtin", "folder") or not rest:
        return [("source", f"data source {cfg.source!r} must be builtin:shapes, "
                           "builtin:shapes-pairs or folder:PATH")]
    if scheme == "builtin":
        if rest not in BUILTIN:
            return [("source", f"unknown builtin data set {rest!r}; use "
                               f"{' or '.join('builtin:' + name for name in BUILTIN)}")]
        problems = []
        if cfg.split not in shapes.SPLIT_SIZES:
            problems.append(("split", f"{rest} has splits {', '.join(shapes.SPLIT_SIZES)}; "
                                      f"not {cfg.split!r}"))
        elif cfg.n is not None and cfg.n > shapes.SPLIT_SIZES[cfg.split]:
            problems.append(("n", f"n is {cfg.n} but {rest}/{cfg.split} has "
                                  f"{shapes.SPLIT_SIZES[cfg.split]} images; lower n"))
        return problems
    root = resolve(rest)
    if not root.is_dir():
        return [("source", f"image folder {root} not found; check the path (relative paths start "
                           "at the suite's folder)")]
    return []


def load_data(cfg, resolve: Callable[[str], Path], spec: InputSpec, seed: int) -> Dataset:
    scheme, _, rest = cfg.source.partition(":")
    if scheme == "builtin":
        return BUILTIN[rest](cfg.split, cfg.n, spec.size)
    return FolderData(resolve(rest), cfg.n, spec, seed, cfg.labels, cfg.max_corrupt)


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
