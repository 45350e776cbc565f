"""`explain-audit check` on a torchvision ResNet-18 state_dict and a small ImageFolder (issue J).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/check_resnet18.py [--n 32] [--input-size 224]

Builds, in a temporary folder, an ImageFolder of 3 classes (a disc, a square, a triangle of a
random colour on a random background, drawn with Pillow, 96 px) and the state_dict of a
torchvision ``resnet18(num_classes=3)`` (seeded random init: the check's subject is the tool's
run, not this model's quality), then times the check end to end as a user runs it (a
subprocess of the CLI, empty cache). Prints the wall time, the verdicts and the exit code.
``tests/engine/test_check_real.py`` runs the same case at a small n.

Cost: the check's black-box reference (RISE, 500 masks) takes 500 forward passes per image:
16,000 ResNet-18 passes at n = 32. At 224 px that is ~29 TFLOP, minutes on two CPU cores, so
``--input-size 112`` (the images are 96 px) is what the closing note times.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CLASSES = ("disc", "square", "triangle")


def make_case(folder: Path, per_class: int = 11, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    """(ImageFolder root, state_dict file) under ``folder``: ``per_class`` PNGs per class."""
    import torchvision
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    root = folder / "images"
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = tuple(int(v) for v in rng.integers(0, 256, 3))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            image = Image.new("RGB", (size, size), background)
            draw = ImageDraw.Draw(image)
            r = int(rng.integers(size // 6, size // 3))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            if label == "disc":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            elif label == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            image.save(root / label / f"{label}_{i:02d}.png")
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    weights = folder / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    return root, weights


def check_command(root: Path, weights: Path, out: Path, n: int, input_size: int | None) -> list[str]:
    args = [sys.executable, "-m", "audit.cli", "check", "--model", "torchvision:resnet18", "--weights", str(weights),
            "--data", f"folder:{root}", "--n", str(n), "--out", str(out), "--cache", str(out.parent / "cache"), "-q"]
    if input_size is not None:
        args += ["--input-size", str(input_size), "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    return args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=None, help="default: torchvision's 224")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="check-resnet18-") as tmp:
        folder = Path(tmp)
        root, weights = make_case(folder, per_class=-(-args.n // len(CLASSES)))
        started = time.perf_counter()
        proc = subprocess.run(check_command(root, weights, folder / "out", args.n, args.input_size),
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."})
        wall = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(proc.stdout, end="")
        print(proc.stderr, end="", file=sys.stderr)
        print(f"wall {wall:.1f} s, CPU {usage.ru_utime + usage.ru_stime:.1f} s, exit {proc.returncode}, n {args.n}, "
              f"input {args.input_size or 224} px, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


if __name__ == "__main__":
    main()
