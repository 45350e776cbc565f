"""Where the audited model comes from: ``builtin:``, ``torchvision:``, ``timm:``, ``import:``,
``torchscript:``, ``export:``.

Weights are state_dicts read by :mod:`audit.models.weights` (``weights_only``: a file that
would need to unpickle code is refused; checkpoint dicts, ``module.`` prefixes and missing
``num_batches_tracked`` are handled and reported). TorchScript goes through ``torch.jit.load``.
``export:PATH.pt2`` is a ``torch.export`` program (``torch.export.save``), loaded with
``torch.export.load`` and ``torch.export.unflatten``, which restores the module hierarchy so
Grad-CAM's layer is found by name; its input spec may be embedded (``explain_audit.json``, as
``explain-audit export-attacked`` writes it), else the suite gives ``input:``.
``import:`` runs the user's own Python code (the suite's folder is importable): only audit code
you trust.

Every model is built under a torch RNG seeded from the suite seed and the source
(:func:`audit.seeding.derive_seed`), so a model without weights (``torchvision:resnet18`` with
random init, a ``timm:`` architecture, an ``import:`` factory that initialises randomly) is the
same model, with the same digest, run after run.

Builtin models: ``shapes-resnet`` (the reference, shipped) and ``efficientnet-lite0`` (a real
pretrained ImageNet classifier, :mod:`audit.builtin.efficientnet`; the optional extra ``real``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from audit.errors import UserError
from audit.models.contract import Output, ProbabilitiesToLogits
from audit.models.weights import StateNotes, apply_state_dict, classifier_classes, classifier_key, read_state_dict
from audit.seeding import derive_seed
from audit.spec import InputSpec

IMAGENET = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
SCHEMES = ("builtin", "torchvision", "timm", "import", "torchscript", "export")
EXPORT_METADATA = "explain_audit.json"  # the input spec etc. inside a .pt2 (torch.export extra file)
CHANNELS = (1, 3)  # images load as greyscale (1) or RGB (3)


@dataclass
class LoadedModel:
    model: nn.Module
    spec: InputSpec
    source: str
    digest: str  # sha256 over the parameters and buffers
    output: Output | None = None  # model.output as declared (None: logits expected)
    notes: list[str] = field(default_factory=list)  # what loading the weights did, for the log


def _builtin_models() -> dict[str, Callable[[], tuple[nn.Module, InputSpec]]]:
    def shapes_resnet():
        from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference

        return load_reference(), INPUT_SPEC

    def efficientnet_lite0():
        from audit.builtin.efficientnet import load_efficientnet_lite0

        return load_efficientnet_lite0()

    return {"shapes-resnet": shapes_resnet, "efficientnet-lite0": efficientnet_lite0}


def split_source(source: str) -> tuple[str, str]:
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in SCHEMES or not rest:
        raise ValueError(f"source {source!r} must be one of builtin:NAME, torchvision:ARCH, timm:ARCH, "
                         "import:pkg.module:callable, torchscript:PATH, export:PATH.pt2")
    return scheme, rest


def _timm_problem(arch: str) -> str | None:
    if importlib.util.find_spec("timm") is None:
        return "timm: models need timm (the optional extra 'real'); run make setup or pip install 'explain-audit[real]'"
    import timm

    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=1)
        return f"timm has no model {arch!r} — " + (f"did you mean {close[0]!r}?" if close else "see timm.list_models()")
    return None


def model_channels(cfg) -> int:
    """Channels the model takes: as many as ``input.mean`` has values (builtin, torchvision and
    timm models without ``input:`` take 3)."""
    return len(cfg.input.mean) if cfg.input is not None else 3


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
    if scheme == "builtin" and rest == "efficientnet-lite0":
        from audit.builtin.efficientnet import missing_message, missing_packages

        if missing_packages():
            problems.append(("source", missing_message("builtin:efficientnet-lite0")))
    if scheme == "torchvision":
        import torchvision

        if rest not in torchvision.models.list_models(module=torchvision.models):
            import difflib

            close = difflib.get_close_matches(rest, torchvision.models.list_models(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see torchvision.models.list_models()"
            problems.append(("source", f"torchvision has no classification model {rest!r} — {hint}"))
    if scheme == "timm" and (problem := _timm_problem(rest)):
        problems.append(("source", problem))
    if scheme == "import" and rest.count(":") != 1:
        problems.append(("source", "write import:pkg.module:callable (module path, colon, callable)"))
    if scheme == "torchscript" and not resolve(rest).is_file():
        problems.append(("source", f"TorchScript file {resolve(rest)} not found; check the path "
                                   "(relative paths start at the suite's folder)"))
    if scheme == "export" and not resolve(rest).is_file():
        problems.append(("source", f"torch.export file {resolve(rest)} not found; check the path "
                                   "(relative paths start at the suite's folder)"))
    if cfg.weights is not None:
        if scheme in ("torchscript", "export"):
            what = "a TorchScript" if scheme == "torchscript" else "a torch.export"
            problems.append(("weights", f"{what} file carries its weights; remove weights:"))
        elif not resolve(cfg.weights).is_file():
            problems.append(("weights", f"weights file {resolve(cfg.weights)} not found; check the "
                                        "path (relative paths start at the suite's folder)"))
    if scheme in ("import", "torchscript") and cfg.input is None:
        problems.append(("source", f"a {scheme}: model needs input: {{size:, mean:, std:}} in the suite"))
    if (scheme == "export" and cfg.input is None and resolve(rest).is_file()
            and "input" not in export_metadata(resolve(rest))):
        problems.append(("source", f"{resolve(rest)} carries no input spec ({EXPORT_METADATA}); give input: "
                                   "{size:, mean:, std:} in the suite (or --input-size, --mean, --std)"))
    if cfg.input is not None and len(cfg.input.mean) not in CHANNELS:
        problems.append(("input", f"input.mean has {len(cfg.input.mean)} values: images load as greyscale "
                                  "(1 value) or RGB (3 values); give 1 or 3"))
    elif cfg.input is not None and scheme in ("builtin", "torchvision", "timm") and len(cfg.input.mean) != 3:
        problems.append(("input", f"{scheme}: models take RGB images; give 3 values in input.mean and input.std"))
    return problems


def export_metadata(path: Path) -> dict:
    """What a .pt2 says about itself in its ``explain_audit.json`` (read from the zip without
    loading the program); {} when it has none or is not a readable archive."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == EXPORT_METADATA]
            data = json.loads(archive.read(names[0])) if names else {}
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return {}
    return data if isinstance(data, dict) else {}


def _export(path: Path) -> tuple[nn.Module, InputSpec | None]:
    """A ``torch.export`` program as a module with the original hierarchy (``unflatten``), and the
    input spec it carries (None: none)."""
    import json
    import warnings

    extra = {EXPORT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        raise UserError(f"cannot load torch.export file {path}: {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]}; save it with "
                        "torch.export.save(torch.export.export(model, (x,)), PATH)") from None
    try:
        model = torch.export.unflatten(program)
    except Exception as exc:
        raise UserError(f"cannot restore the module hierarchy of {path} (torch.export.unflatten: "
                        f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})") from None
    # The graphs' node metadata hold the fake tensors export traced with (symbolic batch size):
    # nothing a forward reads, and they make the module impossible to copy (Grad-CAM and the
    # randomisation check work on copies); dropped.
    for module in model.modules():
        graph = getattr(module, "graph", None)
        if isinstance(graph, torch.fx.Graph):
            for node in graph.nodes:
                node.meta = {}
    spec = None
    try:
        meta = json.loads(extra.get(EXPORT_METADATA) or "{}")
        if isinstance(meta, dict) and isinstance(meta.get("input"), dict):
            spec = InputSpec(int(meta["input"]["size"]), tuple(map(float, meta["input"]["mean"])),
                             tuple(map(float, meta["input"]["std"])))
    except (ValueError, KeyError, TypeError):
        spec = None
    return model, spec


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` (see :func:`audit.models.weights.read_state_dict`)."""
    return read_state_dict(path)


def _with_classes(build: Callable[[int], nn.Module], cfg, resolve, what: str,
                  notes: StateNotes) -> nn.Module:
    """``build(num_classes)`` with ``num_classes`` from the suite, else from the weights'
    classifier (Linear or 1×1 conv), else 1000; weights applied."""
    state = read_state_dict(resolve(cfg.weights), notes) if cfg.weights else None
    num_classes, model = cfg.num_classes, None
    if num_classes is None and state is not None:
        probe = build(1000)
        num_classes = classifier_classes(state, classifier_key(probe, 1000))
        if num_classes is None:
            raise UserError(f"cannot tell the number of classes of {resolve(cfg.weights)} (no Linear or "
                            "1x1-conv classifier weight found); set model.num_classes")
        if num_classes == 1000:
            model = probe
        else:
            notes.lines.append(f"model: {num_classes} classes, read from the weights' classifier")
    if model is None:
        model = build(num_classes or 1000)
    if state is not None:
        apply_state_dict(model, state, resolve(cfg.weights), f"{what} with {num_classes} classes", notes)
    return model


def _torchvision(arch: str, cfg, resolve, notes: StateNotes) -> tuple[nn.Module, InputSpec]:
    import torchvision

    model = _with_classes(lambda n: torchvision.models.get_model(arch, weights=None, num_classes=n),
                          cfg, resolve, f"torchvision:{arch}", notes)
    spec = IMAGENET
    try:  # the weights enum knows the preprocessing without downloading anything
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        spec = InputSpec(int(transforms.crop_size[0]), tuple(transforms.mean), tuple(transforms.std))
    except Exception:
        pass
    return model, spec


def _timm(arch: str, cfg, resolve, notes: StateNotes) -> tuple[nn.Module, InputSpec]:
    if (problem := _timm_problem(arch)) is not None:
        raise UserError(problem)
    import timm

    model = _with_classes(lambda n: timm.create_model(arch, pretrained=False, num_classes=n),
                          cfg, resolve, f"timm:{arch}", notes)
    pretrained = getattr(model, "pretrained_cfg", None) or {}  # timm's preprocessing, no download
    size = pretrained.get("input_size", (3, 224, 224))[-1]
    spec = InputSpec(int(size), tuple(pretrained.get("mean", IMAGENET.mean)),
                     tuple(pretrained.get("std", IMAGENET.std)))
    return model, spec


def _import(target: str, cfg, resolve, notes: StateNotes) -> nn.Module:
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
        apply_state_dict(model, read_state_dict(resolve(cfg.weights), notes), resolve(cfg.weights),
                         f"import:{target}", notes)
    return model


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _build(cfg, resolve, notes: StateNotes) -> tuple[nn.Module, InputSpec | None]:
    scheme, rest = split_source(cfg.source)
    if scheme == "builtin":
        model, spec = _builtin_models()[rest]()
        if cfg.weights:
            apply_state_dict(model, read_state_dict(resolve(cfg.weights), notes), resolve(cfg.weights),
                             cfg.source, notes)
        return model, spec
    if scheme == "torchvision":
        return _torchvision(rest, cfg, resolve, notes)
    if scheme == "timm":
        return _timm(rest, cfg, resolve, notes)
    if scheme == "import":
        return _import(rest, cfg, resolve, notes), None
    path = resolve(rest)
    if scheme == "export":
        return _export(path)
    try:
        return torch.jit.load(str(path), map_location="cpu"), None
    except Exception as exc:
        raise UserError(f"cannot load TorchScript file {path}: {str(exc).splitlines()[0][:200]}; "
                        "save it with torch.jit.save(torch.jit.script(model), PATH)") from None


def load_model(cfg, resolve: Callable[[str], Path], device: torch.device, seed: int = 0) -> LoadedModel:
    """Build the suite's model in eval mode on ``device``, its random init (where weights do not
    replace it) drawn from ``seed``. Raises :class:`UserError` on bad input."""
    notes = StateNotes()
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
        torch.manual_seed(derive_seed(seed, "model-init", cfg.source))
        model, spec = _build(cfg, resolve, notes)
    if cfg.input is not None:
        spec = InputSpec(cfg.input.size, tuple(cfg.input.mean), tuple(cfg.input.std))
    assert spec is not None  # validation requires input: where the source cannot tell
    output = getattr(cfg, "output", None)
    if output == "probabilities":
        model = ProbabilitiesToLogits(model)
        notes.lines.append("model.output: probabilities — the audit uses log(p) as logits")
    model = model.to(device).eval()
    return LoadedModel(model, spec, cfg.source, model_digest(model), output, notes.lines)
