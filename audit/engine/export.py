"""``explain-audit export-attacked SUITE ATTACK_ID``: an attacked setting's model as a file.

The model is the one the engine audits for that attack — prepared by
:mod:`audit.engine.prepare` under the suite's seed, or read from the cache when a run already
prepared it — written so that ``check`` (and ``run``) can load it like any user's model:

- ``pt2`` (default): a ``torch.export`` program (``torch.export.save``) with a dynamic batch
  dimension, and the model's input spec (size, mean, std) embedded as ``explain_audit.json``, so
  ``source: export:DIR/model.pt2`` needs no ``input:``. Every attacked model can be written this
  way (the gated model's discriminator and switch are part of the graph). Loaded with
  ``torch.export.load`` and ``torch.export.unflatten`` (:mod:`audit.models.sources`), which keep
  the module hierarchy, so Grad-CAM still finds its layer.
- ``state_dict``: ``weights.pt`` for the suite's own model source (``--model SOURCE --weights
  DIR/weights.pt``): only for attacks that keep the architecture (a manipulation's fine-tuning,
  weight noise, randomisation), refused otherwise.

Before it is written, the exported program is run on real images at two batch sizes and must
give the attacked model's logits (float32 tolerance); anything ``torch.export`` cannot handle
is refused with one line naming the problem.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from audit.engine.cache import Cache
from audit.engine.output import check_out_folder
from audit.engine.suite import LoadedSuite
from audit.errors import UserError
from audit.models.sources import EXPORT_METADATA
from audit.testing import LOGIT_ATOL


@dataclass(frozen=True)
class Exported:
    path: Path  # the file written
    check_args: str  # what to pass to `explain-audit check` to check it


def _same_logits(got: torch.Tensor, want: torch.Tensor) -> bool:
    scale = float(want.abs().max().clamp_min(1.0))
    return tuple(got.shape) == tuple(want.shape) and torch.allclose(got, want, rtol=0.0, atol=LOGIT_ATOL * scale)


def export_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` (eval mode) exported with a dynamic batch dimension; :class:`UserError` where
    ``torch.export`` cannot handle it or the program's logits differ from the model's."""
    if example.shape[0] < 2:  # torch.export specialises a dimension of size 1
        example = example.repeat(2, 1, 1, 1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"torch.export cannot export this model ({type(exc).__name__}: {first}); use "
                        "--format state_dict where the attack keeps the architecture") from None
    module = program.module()
    with torch.no_grad():
        for x in (example, example[:1], example.repeat(3, 1, 1, 1)):
            if not _same_logits(module(x), model(x)):
                raise UserError(f"the exported program gives other logits than the model on a batch of "
                                f"{x.shape[0]} images; it cannot stand in for the model (use --format "
                                "state_dict where the attack keeps the architecture)")
    return program


def export_attacked_model(loaded: LoadedSuite, attack_id: str, out: Path, fmt: str = "pt2", *,
                          cache_dir: Path | None = None, log: Callable[[str], None] | None = None) -> Exported:
    """Prepare (or read from the cache) attack ``attack_id`` of ``loaded`` and write its model to
    ``out`` (``model.pt2`` or ``weights.pt``). Raises :class:`UserError` before writing anything."""
    from audit.attacks.base import ATTACKS
    from audit.engine.runner import Runner

    items = {a.id: a for a in loaded.suite.attacks}
    if attack_id not in items:
        raise UserError(f"suite {loaded.path} has no attack {attack_id!r}; its attacks: {', '.join(items)}")
    if not ATTACKS.get(items[attack_id].plugin).changes_model():
        raise UserError(f"attack {attack_id!r} ({items[attack_id].plugin}) changes the inputs, not the model: "
                        "there is no attacked model to export")
    if fmt not in ("pt2", "state_dict"):
        raise UserError(f"--format {fmt!r}: use pt2 or state_dict")
    check_out_folder(out)
    log = log or (lambda _m: None)
    runner = Runner(loaded, Cache(cache_dir), log=log)
    attacked = runner.preparation.model(attack_id)  # this attack only (and what it builds on)
    if isinstance(attacked, Exception):
        raise UserError(f"attack {attack_id!r} could not be prepared: {attacked}")
    attacked = attacked.cpu().eval()
    spec = runner.model.spec
    if fmt == "state_dict":
        base = {k: tuple(v.shape) for k, v in runner.model.model.state_dict().items()}
        state = {k: v.detach().cpu() for k, v in attacked.state_dict().items()}
        if {k: tuple(v.shape) for k, v in state.items()} != base:
            raise UserError(f"attack {attack_id!r} changes the model's architecture (its state_dict has other "
                            "keys than the original's): use --format pt2")
        buffer = io.BytesIO()
        torch.save(state, buffer)
        target, payload = out / "weights.pt", buffer.getvalue()
        model_cfg = loaded.suite.model
        args = f"--model {model_cfg.source} --weights {target}"
        if model_cfg.input is not None:
            args += (f" --input-size {model_cfg.input.size} --mean {','.join(map(str, model_cfg.input.mean))} "
                     f"--std {','.join(map(str, model_cfg.input.std))}")
    else:
        batch = runner.data.batch(range(min(len(runner.data), 4)))
        example = spec.normalize(batch.images.to(torch.device("cpu")))
        log(f"exporting attack {attack_id!r} with torch.export")
        program = export_program(attacked, example)
        with torch.no_grad():
            classes = int(attacked(example[:1]).shape[1])
        meta = {"input": spec.to_dict(), "num_classes": classes, "suite": loaded.suite.name,
                "attack": attack_id, "attack_plugin": items[attack_id].plugin,
                "original_model": loaded.suite.model.source}
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={EXPORT_METADATA: json.dumps(meta, sort_keys=True)})
        target, payload = out / "model.pt2", buffer.getvalue()
        args = f"--model export:{target}"
    data = loaded.suite.data
    args += f" --data {data.source}" if data.source.startswith("builtin:") else " --data folder:PATH"
    from audit.report.writer import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(target, payload)
    return Exported(target, args)
