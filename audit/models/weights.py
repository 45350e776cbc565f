"""Users' weight files, loaded as they are saved in practice.

A ``weights:`` file is read with ``torch.load(..., weights_only=True)`` (nothing that would run
code is unpickled), then made to fit the model, each step reported in :class:`StateNotes`:

- **TorchScript** archives are recognised and refused with the fix (``source: torchscript:PATH``).
- **Checkpoint dicts** (``{"state_dict": ..., "epoch": ...}`` and the like) are unwrapped: the
  first of :data:`CHECKPOINT_KEYS` that holds a mapping of tensors is used, and its key is said.
- **Prefixes** that wrap every key — ``module.`` (``nn.DataParallel`` / DDP) and ``_orig_mod.``
  (``torch.compile``) — are stripped, in any nesting.
- **``num_batches_tracked``** buffers a file lacks (saved by older PyTorch or converted from
  another framework) take the model's own value; they only matter for BatchNorm momentum=None
  training, never for eval-mode outputs.
- A mismatch lists the missing *and* the unexpected keys, whole, and the shape differences.
- The class count is read from the classifier: the state entry at the model's classifier key
  (Linear ``(classes, features)`` or 1×1-conv ``(classes, C, 1, 1)`` weight), see
  :func:`classifier_classes`.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from audit.errors import UserError

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                   "state_dict_ema", "model_ema", "ema", "module", "weights", "params")
PREFIXES = ("module.", "_orig_mod.")
SHOWN_KEYS = 6


@dataclass
class StateNotes:
    """What was done to make a file fit (one line each, for the run log)."""

    lines: list[str] = field(default_factory=list)


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _tensor_mapping(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def read_state_dict(path: Path, notes: StateNotes | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` (unwrapped, prefixes stripped). Raises :class:`UserError`."""
    notes = notes if notes is not None else StateNotes()
    if path.is_file() and is_torchscript(path):
        raise UserError(f"weights file {path} is a TorchScript model, not a state_dict; use "
                        f"source: torchscript:{path} and remove weights: (the file carries its weights)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"refusing to load {path}: it holds pickled Python objects, not only tensors, "
                        "and loading it could run code; save plain weights with "
                        "torch.save(model.state_dict(), PATH)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read weights file {path}: {str(exc).splitlines()[0][:200]}; "
                        "it must be a file written by torch.save(model.state_dict(), PATH)") from None
    except (KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError):
        # a file that is not a torch.save archive at all (text, an image) reaches the legacy
        # unpickler, which fails on its first byte with whatever error that byte provokes
        raise UserError(f"{path} is not a PyTorch weights file; it must be a file written by "
                        "torch.save(model.state_dict(), PATH)") from None
    if isinstance(state, dict) and not _tensor_mapping(state):
        for key in CHECKPOINT_KEYS:
            if _tensor_mapping(state.get(key)):
                notes.lines.append(f"weights: {path.name} is a checkpoint; used its {key!r} entry")
                state = state[key]
                break
    if not _tensor_mapping(state):
        keys = ", ".join(map(repr, list(state)[:SHOWN_KEYS])) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path} is not a state_dict (a mapping of names to tensors) and holds none under "
                        f"{', '.join(CHECKPOINT_KEYS[:4])}…; found {keys}; save it with "
                        "torch.save(model.state_dict(), PATH)")
    return strip_prefixes(dict(state), notes)


def strip_prefixes(state: dict[str, torch.Tensor], notes: StateNotes | None = None) -> dict[str, torch.Tensor]:
    """``state`` without a ``module.`` / ``_orig_mod.`` prefix that every key carries (repeatedly)."""
    stripped = []
    while True:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped.append(prefix)
    if stripped and notes is not None:
        notes.lines.append(f"weights: stripped the key prefix {''.join(stripped)!r} (DataParallel / "
                           "torch.compile wrapper)")
    return state


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str, what: str,
                     notes: StateNotes | None = None) -> None:
    """Load ``state`` into ``model`` strictly. Raises :class:`UserError` listing missing and
    unexpected keys and shape differences."""
    own = model.state_dict()
    filled = [k for k in own if k.endswith("num_batches_tracked") and k not in state]
    if filled:
        state = {**state, **{k: own[k] for k in filled}}
        if notes is not None:
            notes.lines.append(f"weights: {len(filled)} num_batches_tracked buffer(s) missing from the file "
                               "took the model's value (no effect in eval mode)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_listed(unexpected)}")
        if shapes:
            parts.append(f"shape differs (file vs model) {len(shapes)}: {_listed(shapes)}")
        raise UserError(f"weights {path} do not fit {what}: {'; '.join(parts)}; use weights saved from the "
                        "same architecture (and num_classes)")
    model.load_state_dict(state, strict=True)


def classifier_key(model: nn.Module, num_classes: int) -> str | None:
    """The state key of ``model``'s classifier weight: the last weight whose first dimension is
    ``num_classes`` and that is a Linear (2-D) or 1×1 convolution (4-D) weight."""
    found = None
    for key, tensor in model.state_dict().items():
        if not key.endswith("weight") or tensor.shape[:1] != (num_classes,):
            continue
        if tensor.dim() == 2 or (tensor.dim() == 4 and tuple(tensor.shape[2:]) == (1, 1)):
            found = key
    return found


def classifier_classes(state: dict[str, torch.Tensor], key: str | None) -> int | None:
    """Classes of a state_dict: rows of the entry at ``key`` (the model's classifier weight);
    without such a key, of its last Linear or 1×1-conv weight."""
    if key is not None and key in state:
        return int(state[key].shape[0])
    candidates = [v for k, v in state.items() if k.endswith("weight")
                  and (v.dim() == 2 or (v.dim() == 4 and tuple(v.shape[2:]) == (1, 1)))]
    return int(candidates[-1].shape[0]) if candidates else None
