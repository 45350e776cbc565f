"""Seeds derived from the suite seed and an identity, never from execution order.

Every random draw in the tool goes through :func:`derive_seed`, so a cell gets the same random
numbers whether it runs first or last, in this process or in a worker on another machine.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *identity: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and the parts of ``identity`` (by ``repr``)."""
    text = "\x1f".join([repr(int(seed)), *(repr(part) for part in identity)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def generator(seed: int, *identity: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`.

    Always on the CPU: a CUDA generator with the same seed draws other numbers, so RISE's masks,
    SmoothGrad's noise and every other draw would change with the device. Draw on the CPU, then
    move the tensor (the draws are small next to the forward passes they feed).
    """
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *identity))
    return gen
