"""One image file to one tensor, faithfully: bit depth, channels, EXIF orientation and fitting
to the model's square input.

- **Bit depth.** 8-bit modes are scaled by 1/255. 16-bit greyscale (Pillow modes ``I;16``,
  ``I;16L``, ``I;16B``, ``I;16N``, and ``I`` for a PNG) is scaled by 1/65535 — Pillow's
  ``convert("RGB")`` would clip it to white. 16-bit colour PNGs Pillow itself reduces to 8
  bits per channel (correctly scaled). Modes whose value range a file does not say (32-bit
  integer ``I`` outside PNG, float ``F``) are refused with the reason.
- **Channels.** As many as the model's normalisation has values: 1 → greyscale (Pillow's
  ITU-R 601-2 luma for colour files), 3 → RGB (greyscale replicated). Alpha is dropped, as
  torchvision's ImageFolder loader (``convert("RGB")``) does.
- **EXIF orientation.** ``ignore`` (default): the pixels as stored, as torchvision's
  ImageFolder loads them, so the model sees what a torchvision training pipeline fed it;
  ``apply``: rotated/mirrored upright first (``PIL.ImageOps.exif_transpose``). Either way
  :func:`exif_orientation` tells which files carry a rotation, and the data set reports them.
- **Fitting** (``resize``), to ``size`` × ``size``:
  ``crop`` (default): shorter side to ``size``, centre crop — torchvision's
  ``Resize(size) + CenterCrop(size)``; the share of the image cut is 1 − short/long.
  ``pad``: longer side to ``size``, centred on black (pixel value 0); nothing is cut, the
  padded share is 1 − short/long. ``stretch``: both sides to ``size``; nothing cut, the aspect
  ratio changes.

Resizing is bilinear with antialiasing on float pixels (``torchvision.transforms.v2.functional
.resize``), so 8- and 16-bit files take one path; object masks take the same geometry with
nearest-neighbour sampling at pixel centres (``NEAREST_EXACT``, aligned with the bilinear resize).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Resize = Literal["crop", "pad", "stretch"]
Exif = Literal["ignore", "apply"]
RESIZE_MODES = ("crop", "pad", "stretch")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
EXIF_ORIENTATION_TAG = 0x0112
ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90°",
                6: "rotated 90°", 7: "mirrored and rotated 270°", 8: "rotated 270°"}


class ImageProblem(ValueError):
    """A file that decodes but whose pixels cannot be read faithfully (the message says why)."""


def shown(path: Path | str) -> str:
    """A path printable on any terminal: bytes that are not valid UTF-8 as \\x escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def exif_orientation(img) -> int:
    """The EXIF orientation tag (1 = upright, 2-8 = mirrored/rotated; 1 if absent)."""
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block says nothing about orientation
        return 1
    return value if value in ORIENTATIONS else 1


def pixels(img, channels: int) -> torch.Tensor:
    """(channels, H, W) float32 in [0, 1] from a PIL image. Raises :class:`ImageProblem`."""
    mode = img.mode
    if mode in SIXTEEN_BIT or (mode == "I" and img.format == "PNG"):
        grey = torch.from_numpy(np.asarray(img).astype(np.float32) / 65535.0)
        if grey.dim() != 2:
            raise ImageProblem(f"16-bit image of shape {tuple(grey.shape)}; expected greyscale")
        return grey.unsqueeze(0).expand(channels, -1, -1).clone()
    if mode in ("I", "F") or mode.startswith("I;"):
        raise ImageProblem(f"Pillow mode {mode} ({'32-bit integer' if mode.startswith('I') else 'float'} "
                           "pixels) does not say its value range; save it as an 8- or 16-bit PNG")
    if channels == 1:
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    array = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(array.astype(np.float32) / 255.0)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def cut_share(width: int, height: int, mode: Resize) -> float:
    """Share of the image's area lost by ``crop`` (0 for ``pad`` and ``stretch``)."""
    return 0.0 if mode != "crop" else 1.0 - min(width, height) / max(width, height)


def fit(t: torch.Tensor, size: int, mode: Resize, nearest: bool = False) -> torch.Tensor:
    """(C, H, W) → (C, size, size) by ``mode`` (see the module docstring)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    interp = InterpolationMode.NEAREST_EXACT if nearest else InterpolationMode.BILINEAR
    h, w = t.shape[-2:]

    def resize(shape):
        return F.resize(t, list(shape), interpolation=interp, antialias=not nearest)

    if mode == "stretch":
        out = resize((size, size))
    elif mode == "crop":
        short = min(h, w)
        new = (size, max(size, round(w * size / short))) if h == short else (max(size, round(h * size / short)), size)
        out = F.center_crop(resize(new), [size, size])
    elif mode == "pad":
        long = max(h, w)
        new = (max(1, round(h * size / long)), max(1, round(w * size / long)))
        small = resize(new)
        out = torch.zeros((t.shape[0], size, size), dtype=t.dtype)
        top, left = (size - new[0]) // 2, (size - new[1]) // 2
        out[:, top:top + new[0], left:left + new[1]] = small
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {mode!r}")
    return out.clamp(0.0, 1.0) if not nearest else out


@dataclass(frozen=True)
class FileInfo:
    """What decoding a file told: its stored size, EXIF orientation, Pillow mode and format."""

    width: int
    height: int
    orientation: int
    mode: str = "RGB"
    format: str | None = None


def inspect(path: Path) -> FileInfo:
    """Decode ``path`` fully (raises on a corrupt file) and read its size and orientation."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return FileInfo(img.width, img.height, exif_orientation(img), img.mode, img.format)


def load(path: Path, size: int, channels: int, resize: Resize = "crop", exif: Exif = "ignore") -> torch.Tensor:
    """(channels, size, size) float32 pixels in [0, 1]. Raises :class:`ImageProblem`."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        if exif == "apply":
            img = ImageOps.exif_transpose(img)
        return fit(pixels(img, channels), size, resize)


def notes(infos: list[tuple[Path, FileInfo]], resize: Resize, exif: Exif, root: Path | None = None) -> list[str]:
    """One line each on what fitting cut and which files carried an EXIF rotation."""
    out = []
    cut = []
    for _, info in infos:
        w, h = (info.height, info.width) if exif == "apply" and info.orientation >= 5 else (info.width, info.height)
        cut.append(1.0 - min(w, h) / max(w, h))  # crop: cut; pad: padded; stretch: squeezed
    lost = [c for c in cut if c > 0]
    if lost:
        what = {"crop": "cut by the centre crop", "pad": "padded (black)", "stretch": "stretched away"}[resize]
        if resize == "stretch":
            out.append(f"resize stretch: {len(lost)} of {len(cut)} images are not square; their aspect ratio "
                       f"changed (mean {100 * sum(lost) / len(lost):.0f} %, max {100 * max(lost):.0f} % "
                       "difference between sides)")
        else:
            out.append(f"resize {resize}: {len(lost)} of {len(cut)} images not square; share of the input "
                       f"{what}: mean {100 * sum(cut) / len(cut):.1f} %, max {100 * max(cut):.1f} %")
    rotated = [(p, i.orientation) for p, i in infos if i.orientation != 1]
    if rotated:
        def name(p: Path) -> str:
            return shown(p.relative_to(root) if root is not None else p.name)

        listed = ", ".join(f"{name(p)} ({ORIENTATIONS[o]})" for p, o in rotated[:5])
        more = f" and {len(rotated) - 5} more" if len(rotated) > 5 else ""
        done = ("applied (images turned upright)" if exif == "apply" else
                "ignored, as torchvision's ImageFolder does (data.exif: apply turns them upright)")
        out.append(f"EXIF orientation in {len(rotated)} file(s): {listed}{more}; {done}")
    return out
