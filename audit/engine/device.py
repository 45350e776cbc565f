"""Which device a run uses, and the numerics it runs with there.

An audit's numbers must not depend on how images were batched or on a GPU's scheduling. On a
CPU PyTorch is deterministic already. On a GPU, by default, it is not: cuDNN convolutions may use
TF32 (probabilities move by ~1e-4 with batch composition — measured on an H100, AOPC per image
against Quantus: 1.4e-4 with TF32, 1.6e-7 without), cuDNN picks algorithms by timing them, and
some kernels add in whatever order their threads finish (the same suite run twice on an H100
gave means differing in the 8th digit). :func:`reproducible` turns all of that off.
"""

from __future__ import annotations

import os

import torch

from audit.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def reproducible(device: torch.device) -> None:
    """Full fp32 and deterministic kernels for runs on ``device`` (process-wide; CUDA only).

    Ops that have no deterministic CUDA kernel still run, with a PyTorch warning naming them.
    """
    if device.type != "cuda":
        return
    # cuBLAS reads this when it first creates a handle: before any matrix product on the GPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
