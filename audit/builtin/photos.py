"""``builtin:photos``: eight real photos that installed packages ship, for auditing ImageNet models.

Photos: scikit-image's data folder (chelsea, coffee, rocket, astronaut, motorcycle_left),
matplotlib's sample data (grace_hopper.jpg), scikit-learn's sample images (china.jpg,
flower.jpg). Nothing is downloaded; the files are read where the packages installed them.

``photos.json`` beside this module holds, per photo, the ImageNet-1k classes accepted as correct
and the labelled objects' regions (boxes or polygons in the stored file's pixels), drawn by
hand on a 50-px grid over each photo, and its licence. The accepted set follows ImageNet-ReaL
(Beyer et al. 2020, "Are we done with ImageNet?"): any class of a clearly visible object, so
accuracy is "top-1 in the accepted set". The first class is the photo's single label. The
object mask of a photo is the union of its objects' regions.

Needs scikit-image and scikit-learn (the optional extra ``real``; matplotlib is a core dependency).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

EXTRA = "real"
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # importable name of the package that ships the file
    file: str  # path inside that package
    classes: tuple[int, ...]  # accepted ImageNet-1k indices; the first is the label
    objects: tuple[dict, ...]  # {"what": str, "box": [x0, y0, x1, y1]} or {"what", "polygon": [[x, y], ...]}
    licence: str
    class_note: str


@lru_cache(maxsize=1)
def photos() -> tuple[Photo, ...]:
    """Every photo, in the data set's order."""
    raw = json.loads((Path(__file__).with_name("photos.json")).read_text(encoding="utf-8"))
    return tuple(Photo(p["name"], p["package"], p["file"], tuple(p["classes"]), tuple(p["objects"]),
                       p["licence"], p["class_note"]) for p in raw["photos"])


def missing_packages() -> list[str]:
    """PyPI names of the packages holding the photos that are not installed."""
    return [dist for module, dist in PACKAGES.items() if importlib.util.find_spec(module) is None]


def path(photo: Photo) -> Path:
    """Where the installed package keeps the photo (found without importing the package)."""
    spec = importlib.util.find_spec(photo.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {PACKAGES[photo.package]} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / photo.file


def mask(photo: Photo, width: int, height: int):
    """The union of the photo's object regions as a PIL mode-"L" image (255 inside, 0 outside)
    of the stored file's size. Box corners are pixel edges: [x0, x1) × [y0, y1)."""
    from PIL import Image, ImageDraw

    out = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(out)
    for obj in photo.objects:
        if "box" in obj:
            x0, y0, x1, y1 = obj["box"]
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
        else:
            draw.polygon([tuple(p) for p in obj["polygon"]], fill=255)
    return out
