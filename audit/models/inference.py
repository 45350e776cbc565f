"""Fast forward passes for the work that never needs gradients (RISE, AOPC, deletion, crop …).

Two things decide how fast a forward-only pass is, and neither is the caller's concern:

- **Chunk size.** On a CPU the time per image grows with the batch: activations of a large
  batch no longer fit the caches; forward + backward passes suffer the same way
  (``benchmarks/forward.py`` prints both, per chunk size). On a GPU large batches are what
  keeps it busy. :func:`forward_chunk` gives the default images per call for a device.
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
from collections.abc import Callable

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
    """The optimised (channels-last) copy, compared against the original on its first call."""

    explain_audit_inference_copy = False  # already the copy: inference_model() returns it as is

    def __init__(self, original: nn.Module, fast: nn.Module):
        super().__init__()
        self.fast = fast
        self._original = weakref.ref(original)
        self.trusted: bool | None = None

    def _run_fast(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # convert the input once, not in every convolution
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
    return _Checked(model, fast).eval()


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def inference_model(model: nn.Module) -> nn.Module:
    """A forward-only equivalent of ``model`` (in eval mode), faster where it can be; see above.

    Only for calls under ``torch.no_grad``/``inference_mode`` with ``model`` in eval mode: the
    copy has no gradients and its BatchNorm statistics are folded into constants.
    """
    if getattr(model, "explain_audit_inference_copy", True) is False or any(m.training for m in model.modules()):
        return model  # a train-mode module (BatchNorm's batch statistics, dropout): nothing to fold
    signature = _state_signature(model)
    with _LOCK:
        entry = _CACHE.get(model)
        if entry is not None and entry[0] == signature:
            return entry[1]
    fast = _build(model)
    if fast is not model:  # a value referring to its own key would keep the model alive forever
        with _LOCK:
            _CACHE[model] = (signature, fast)
    return fast


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter (or buffer); ``fallback`` if it has neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


@torch.no_grad()
def target_probs(model: nn.Module, n: int, build: Callable[[int, int], torch.Tensor],
                 target: torch.Tensor, chunk: int | None = None, log: bool = False) -> torch.Tensor:
    """Softmax probability (``log``: its log, finite even where it underflows) of ``target[i]``
    for ``n`` images made on demand, as float64 (n,), through the inference copy.

    ``build(start, end)`` returns images start..end-1 (so the full stack never sits in memory);
    ``target`` is (n,). One forward call per ``chunk`` images (default: the device's).
    """
    out = torch.empty(n, dtype=torch.float64, device=target.device)
    size = forward_chunk(target.device, chunk)
    fast = inference_model(model)
    for start in range(0, n, size):
        end = min(n, start + size)
        logp = torch.log_softmax(fast(build(start, end)).to(torch.float64), dim=1)
        picked = logp.gather(1, target[start:end].view(-1, 1).to(logp.device)).squeeze(1)
        out[start:end] = (picked if log else picked.exp()).to(out.device)
    return out
