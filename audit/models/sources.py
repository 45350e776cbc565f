"""Where the audited model comes from: ``builtin:``, ``torchvision:``, ``import:``, ``torchscript:``.

Weights are state_dicts loaded with ``torch.load(..., weights_only=True)``; a file that would need
to unpickle code is refused. TorchScript goes through ``torch.jit.load``. ``import:`` runs the
user's own Python code (the suite's folder is importable): only audit code you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audit.errors import UserError
from audit.spec import InputSpec

IMAGENET = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
SCHEMES = ("builtin", "torchvision", "import", "torchscript")


@dataclass
class LoadedModel:
    model: nn.Module
    spec: InputSpec
    source: str
    digest: str  # sha256 over the parameters and buffers


def _builtin_models() -> dict[str, Callable[[], tuple[nn.Module, InputSpec]]]:
    def shapes_resnet():
        from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference

        return load_reference(), INPUT_SPEC

    return {"shapes-resnet": shapes_resnet}


def split_source(source: str) -> tuple[str, str]:
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in SCHEMES or not rest:
        raise ValueError(f"source {source!r} must be one of builtin:NAME, torchvision:ARCH, "
                         "import:pkg.module:callable, torchscript:PATH")
    return scheme, rest


def check_model_config(cfg, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
    """Problems a suite's ``model:`` has without loading anything heavy: (key, message)."""
    problems: list[tuple[str, str]] = []
    try:
        scheme, rest = split_source(cfg.source)
    except ValueError as exc:
        return [("source", str(exc))]
    if scheme == "builtin" and rest not in _builtin_models():
        problems.append(("source", f"unknown builtin model {rest!r}; use one of "
                                   f"{', '.join('builtin:' + n for n in _builtin_models())}"))
    if scheme == "torchvision":
        import torchvision

        if rest not in torchvision.models.list_models(module=torchvision.models):
            import difflib

            close = difflib.get_close_matches(rest, torchvision.models.list_models(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see torchvision.models.list_models()"
            problems.append(("source", f"torchvision has no classification model {rest!r} — {hint}"))
    if scheme == "import" and rest.count(":") != 1:
        problems.append(("source", "write import:pkg.module:callable (module path, colon, callable)"))
    if scheme == "torchscript" and not resolve(rest).is_file():
        problems.append(("source", f"TorchScript file {resolve(rest)} not found; check the path "
                                   "(relative paths start at the suite's folder)"))
    if cfg.weights is not None:
        if scheme == "torchscript":
            problems.append(("weights", "a TorchScript file carries its weights; remove weights:"))
        elif not resolve(cfg.weights).is_file():
            problems.append(("weights", f"weights file {resolve(cfg.weights)} not found; check the "
                                        "path (relative paths start at the suite's folder)"))
    if scheme in ("import", "torchscript") and cfg.input is None:
        problems.append(("source", f"a {scheme}: model needs input: {{size:, mean:, std:}} in the suite"))
    return problems


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``, refusing anything that would unpickle code."""
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
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state_dict (a mapping of names to tensors); save it with "
                        "torch.save(model.state_dict(), PATH)")
    return state


def _apply_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines() if line.strip()][1:2]
        detail = first[0][:200] if first else "keys or shapes differ"
        raise UserError(f"weights {path} do not fit {what}: {detail}; use weights saved from the "
                        "same architecture") from None


def _classifier_classes(state: dict[str, torch.Tensor]) -> int | None:
    """Number of classes of a classification state_dict: rows of its last 2-D weight."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _torchvision(arch: str, cfg, resolve) -> tuple[nn.Module, InputSpec]:
    import torchvision

    state = load_state_dict(resolve(cfg.weights)) if cfg.weights else None
    num_classes = cfg.num_classes or (_classifier_classes(state) if state else None) or 1000
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if state is not None:
        _apply_weights(model, state, resolve(cfg.weights), f"torchvision:{arch} with {num_classes} classes")
    spec = IMAGENET
    try:  # the weights enum knows the preprocessing without downloading anything
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        spec = InputSpec(int(transforms.crop_size[0]), tuple(transforms.mean), tuple(transforms.std))
    except Exception:
        pass
    return model, spec


def _import(target: str, cfg, resolve) -> nn.Module:
    module_name, _, attr = target.partition(":")
    folder = str(resolve("."))
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r} for model source import:{target}: {exc}; the "
                        "suite's folder and the installed packages are importable") from None
    finally:
        if added:
            sys.path.remove(folder)
    factory = getattr(module, attr, None)
    if factory is None:
        raise UserError(f"module {module_name!r} has no {attr!r}; name a callable that returns the model")
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise UserError(f"import:{target} returned {type(model).__name__}, not a torch.nn.Module")
    if cfg.weights:
        _apply_weights(model, load_state_dict(resolve(cfg.weights)), resolve(cfg.weights), f"import:{target}")
    return model


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_model(cfg, resolve: Callable[[str], Path], device: torch.device) -> LoadedModel:
    """Build the suite's model in eval mode on ``device``. Raises :class:`UserError` on bad input."""
    scheme, rest = split_source(cfg.source)
    if scheme == "builtin":
        model, spec = _builtin_models()[rest]()
        if cfg.weights:
            _apply_weights(model, load_state_dict(resolve(cfg.weights)), resolve(cfg.weights), cfg.source)
    elif scheme == "torchvision":
        model, spec = _torchvision(rest, cfg, resolve)
    elif scheme == "import":
        model, spec = _import(rest, cfg, resolve), None
    else:
        path = resolve(rest)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UserError(f"cannot load TorchScript file {path}: {str(exc).splitlines()[0][:200]}; "
                            "save it with torch.jit.save(torch.jit.script(model), PATH)") from None
        spec = None
    if cfg.input is not None:
        spec = InputSpec(cfg.input.size, tuple(cfg.input.mean), tuple(cfg.input.std))
    assert spec is not None  # validation requires input: where the source cannot tell
    model = model.to(device).eval()
    return LoadedModel(model, spec, cfg.source, model_digest(model))
