"""Fast forward passes for the work that never needs gradients (RISE, AOPC, deletion, crop …).

Two things decide how fast a forward-only pass is, and neither is the caller's concern:

- **Chunk size.** On a CPU the time per image grows with the batch: activations of a large
  batch no longer fit the caches (shapes-resnet at 64×64, 2 cores: ~0.25 ms per image in chunks
  of 32, ~0.5 ms in chunks of 256; integrated gradients 1.6 s vs 2.5 s for 16 images at 32 vs
  256 interpolated images per backward). On a GPU large batches are what keeps it busy.
  :func:`forward_chunk` gives the default images per call for a device.
- **The model's form.** :func:`inference_model` gives a copy of the model for ``no_grad`` use:
  every BatchNorm that follows a convolution folded into it (``torch.fx``), and weights and inputs
  in channels-last memory layout. Both are exact up to float rounding. A model that cannot be
  traced (data-dependent control flow, TorchScript) is used as it is, and the copy is checked
  against the model on its first batch: any disagreement beyond rounding and the model itself is
  used from then on. The user's model is never changed.

The copy keeps what the forward computes, not what else it does: a forward with side effects
(recording its inputs, counting calls) loses them in the traced copy. Such a model opts out with
an attribute ``explain_audit_inference_copy = False`` and is then always called as it is.

Copies are cached per model object and rebuilt when any of its parameters or buffers changed
(an in-place update bumps a tensor's version), so a fine-tuned model is never served stale.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn

CPU_CHUNK = 32  # images per forward (or backward) call on a CPU: cache-bound, see above
GPU_CHUNK = 512  # forward-only, on a GPU: few large calls; a 224-px ResNet-50 needs a few GB
GPU_GRAD_CHUNK = 128  # with gradients, on a GPU: backward keeps every activation alive


def forward_chunk(device: torch.device | str, requested: int | None = None, gradients: bool = False) -> int:
    """Images per forward call (``gradients``: per forward + backward): ``requested`` if given,
    else the device's default."""
    if requested is not None:
        return requested
    if torch.device(device).type != "cuda":
        return CPU_CHUNK
    return GPU_GRAD_CHUNK if gradients else GPU_CHUNK


def _state_signature(model: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device.type) for t in (*model.parameters(), *model.buffers()))


class _Checked(nn.Module):
    """The optimised copy, compared against the original on its first call."""

    def __init__(self, original: nn.Module, fast: nn.Module, channels_last: bool):
        super().__init__()
        self.fast = fast
        self.channels_last = channels_last
        self._original = weakref.ref(original)
        self.trusted: bool | None = None

    def _run_fast(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:  # a 4-D input: convert once, not in every conv
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fast(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        original = self._original()
        if self.trusted is False and original is not None:
            return original(x)
        out = self._run_fast(x)
        if self.trusted is None and original is not None:
            reference = original(x)
            scale = reference.abs().max().clamp_min(1.0)
            self.trusted = bool(out.shape == reference.shape
                                and ((out - reference).abs().max() <= 1e-4 * scale).item())
            if not self.trusted:
                return reference
        return out.contiguous()


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    """A traced copy with Conv→BatchNorm pairs folded; the copy itself if tracing fails."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=True)  # ``model`` is already our own copy
    except Exception:  # untraceable forward (control flow on values, unsupported ops): unfolded
        return model


def _build(model: nn.Module) -> nn.Module:
    if isinstance(model, torch.jit.ScriptModule) or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model  # compiled already (fx cannot trace it), or nothing to fold or re-lay
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    fast = _fold_batchnorm(clone).to(memory_format=torch.channels_last)
    return _Checked(model, fast, channels_last=True).eval()


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def inference_model(model: nn.Module) -> nn.Module:
    """A forward-only equivalent of ``model`` (in eval mode), faster where it can be; see above.

    Only for calls under ``torch.no_grad``/``inference_mode`` with ``model`` in eval mode: the
    copy has no gradients and its BatchNorm statistics are folded into constants.
    """
    if model.training or getattr(model, "explain_audit_inference_copy", True) is False:
        return model  # train-mode BatchNorm uses batch statistics: nothing can be folded
    signature = _state_signature(model)
    with _LOCK:
        entry = _CACHE.get(model)
        if entry is not None and entry[0] == signature:
            return entry[1]
    fast = _build(model)
    with _LOCK:
        _CACHE[model] = (signature, fast)
    return fast
