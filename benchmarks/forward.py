"""Why the default chunk sizes and the inference copy (``audit.models.inference``).

    .venv/bin/python benchmarks/forward.py [--repeats 5] [--device cpu]

On the reference model (``builtin:shapes-resnet``, 64×64), per-image time of

- forward passes in chunks of 8 … 256 images: the model as given, and its inference copy
  (BatchNorm folded, channels-last);
- forward + backward passes (what Integrated Gradients and SmoothGrad do) in the same chunks.

Times are medians over ``--repeats`` of 512 images each, all variants interleaved within a
repeat. The printed ratios are against the old default (256 images per call, the model as
given); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from audit.builtin.shapes_resnet import load_reference
from audit.engine.device import reproducible
from audit.models.inference import forward_chunk, inference_model

CHUNKS = (8, 16, 32, 64, 128, 256)
N = 512


def per_image_ms(fn, x: torch.Tensor, chunk: int) -> float:
    started = time.perf_counter()
    for i in range(0, x.shape[0], chunk):
        fn(x[i:i + chunk])
    if x.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started) / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    reproducible(device)
    model = load_reference().to(device).eval()
    fast = inference_model(model)
    x = torch.randn(N, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)

    def plain(batch):
        with torch.inference_mode():
            return model(batch)

    def copy(batch):
        with torch.inference_mode():
            return fast(batch)

    def gradient(batch):
        batch = batch.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(batch)[:, 0].sum(), batch)
        return grad

    variants = {"forward": plain, "forward_inference_copy": copy, "forward_backward": gradient}
    for fn in variants.values():  # warm-up (and the inference copy's one-off check)
        per_image_ms(fn, x[:64], 32)
    times: dict = {(name, c): [] for name in variants for c in CHUNKS}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            for chunk in CHUNKS:
                times[(name, chunk)].append(per_image_ms(fn, x, chunk))
    median = {key: statistics.median(v) for key, v in times.items()}

    print(f"ms per image, median of {args.repeats}; device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'chunk':>6}" + "".join(f"{name:>24}" for name in variants))
    for chunk in CHUNKS:
        print(f"{chunk:>6}" + "".join(f"{median[(name, chunk)]:24.3f}" for name in variants))
    default = forward_chunk(device)
    default_grad = forward_chunk(device, gradients=True)
    old = median[("forward", 256)]
    result = {
        "default_chunk": default, "default_gradient_chunk": default_grad,
        "forward_old_default_over_new_default": round(old / median[("forward_inference_copy", default)], 3)
        if default in CHUNKS else None,
        "forward_plain_256_over_plain_32": round(old / median[("forward", 32)], 3),
        "inference_copy_speedup_at_32": round(median[("forward", 32)] / median[("forward_inference_copy", 32)], 3),
        "forward_backward_256_over_32": round(median[("forward_backward", 256)]
                                              / median[("forward_backward", 32)], 3),
        "ms_per_image": {f"{name}@{chunk}": round(median[(name, chunk)], 4) for name, chunk in median},
        "device": str(device), "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
