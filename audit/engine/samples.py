"""What the report's pictures need, stored with the run (``samples.npz``; numpy arrays only,
never pickle): for the first few images of the data, the clean and attacked input (pixels), the
clean and the attacked setting's map per explainer, and the perturbation curves of every metric
that can draw one (a ``curve(inputs)`` method: AOPC, deletion, insertion) on the attacked setting.

Computed by the driver after the audit. Maps and attacked inputs the run computed in this
process (the local backend) are the very rows the cells scored (``Runner.pictures``); otherwise
(pool and Ray workers) they are computed again on their own small batch with the audit's seeds
(the same explainer seed, attack seed and image ids as the cells). The curves are always
computed here. A failure leaves that picture out and never touches a record. Layout: ``index``
is a JSON string listing every entry; each entry names its array (``a0``, ``a1``, …); a map is
stored as float16 divided by its ``scale``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from audit.engine.runner import Runner, _map_problems
from audit.metrics.base import MetricInputs

SAMPLE_IMAGES = 4  # images per cell whose curves are stored (the plots' band spans them)
PICTURE_IMAGES = 3  # of which the maps are stored, for the heatmap grids


def collect_samples(runner: Runner, k: int = SAMPLE_IMAGES, log=None) -> dict[str, np.ndarray]:
    """The arrays of samples.npz (see the module docstring); empty when nothing could be drawn."""
    suite = runner.suite
    if not suite.explainers or len(runner.data) == 0:
        return {}
    batch = runner.data.batch(range(min(k, len(runner.data))))
    ids = batch.ids
    arrays: dict[str, np.ndarray] = {}
    index: list[dict] = []

    def put(entry: dict, value: torch.Tensor, dtype) -> None:
        name = f"a{len(arrays)}"
        value = value.detach().float().cpu()
        if entry["kind"] == "map":  # pictures only: float16 of the map over its largest |value|
            value = value[:PICTURE_IMAGES]
            scale = float(value.abs().max()) or 1.0
            entry = {**entry, "scale": scale}
            value = value / scale
        arrays[name] = value.numpy().astype(dtype)
        index.append({**entry, "array": name})

    spec = runner.model.spec
    model = runner.model.model
    x = spec.normalize(batch.images.to(runner.device))
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    labels = batch.labels.to(runner.device)
    target = labels if suite.target == "label" else predicted
    names = list(runner.data.class_names or ())
    put({"kind": "input", "attack": None, "ids": list(ids),
         "labels": [names[i] if 0 <= i < len(names) else str(i) for i in batch.labels.tolist()]},
        (batch.images.clamp(0, 1) * 255).round(), np.uint8)
    def kept(key: tuple) -> torch.Tensor | None:
        """The rows the run itself computed for these images (Runner.pictures), if it kept them."""
        rows = runner.pictures.get(key) if tuple(ids) == runner.picture_ids else None
        return None if rows is None else rows.to(runner.device)

    def explained(explainer_id: str, attacked_model, images, attack_id: str | None) -> torch.Tensor:
        rows = kept(("map", explainer_id, attack_id, "target"))
        return rows if rows is not None else runner._explain(explainer_id, attacked_model, images, target, ids,
                                                             attack_id)

    clean: dict[str, torch.Tensor] = {}
    for explainer_id in runner.explainers:
        try:
            maps = explained(explainer_id, model, x, None)
            if not any(_map_problems(None, explainer_id, "clean", maps)):
                clean[explainer_id] = maps
                put({"kind": "map", "attack": None, "explainer": explainer_id}, maps, np.float16)
        except Exception as exc:  # the picture is left out; the audit's numbers are untouched
            _note(log, f"samples: clean map of {explainer_id} left out ({type(exc).__name__}: {exc})")
    curve_metrics = {m: metric for m, metric in runner.metrics.items() if callable(getattr(metric, "curve", None))}
    for attack_id, attack in runner.attacks.items():
        attacked = runner.attacked_model(attack_id)
        if isinstance(attacked, Exception):
            continue
        try:
            x_att = kept(("input", attack_id)) if attack.changes_input() else None
            if x_att is None:
                x_att = runner.attacked_inputs(attack_id, attacked, x, target, ids)
            with torch.no_grad():
                predicted_att = attacked(x_att).argmax(dim=1)
        except Exception as exc:
            _note(log, f"samples: attack {attack_id} left out ({type(exc).__name__}: {exc})")
            continue
        if attack.changes_input():
            put({"kind": "input", "attack": attack_id}, (spec.denormalize(x_att).clamp(0, 1) * 255).round(),
                np.uint8)
        for explainer_id in clean:
            if not any(item.applies(attack_id, explainer_id) for item in suite.metrics
                       if runner.metrics[item.id].per_explainer()):
                continue  # no cell of this explainer under this attack: no picture of it either
            try:
                maps = clean[explainer_id] if attack.kind == "identity" else explained(
                    explainer_id, attacked, x_att, attack_id)
                if any(_map_problems(None, explainer_id, "attacked", maps)):
                    continue
                if attack.kind != "identity":
                    put({"kind": "map", "attack": attack_id, "explainer": explainer_id}, maps, np.float16)
                inputs = MetricInputs(
                    spec=spec, x=x, x_attacked=x_att, model=model, attacked_model=attacked, target=target,
                    labels=labels, predicted=predicted, predicted_attacked=predicted_att, map=clean[explainer_id],
                    map_attacked=maps, truth=None, seed=_metric_seed(runner, attack_id, explainer_id),
                    sample_ids=tuple(ids), device=runner.device)
                for metric_id, metric in curve_metrics.items():
                    if not runner.items["metrics"][metric_id].applies(attack_id, explainer_id):
                        continue  # a cell the suite does not compute
                    with torch.no_grad():
                        curve = metric.curve(inputs)
                    if torch.isfinite(curve).all():
                        put({"kind": "curve", "attack": attack_id, "explainer": explainer_id, "metric": metric_id},
                            curve, np.float32)
            except Exception as exc:
                _note(log, f"samples: {attack_id}/{explainer_id} left out ({type(exc).__name__}: {exc})")
    arrays["index"] = np.array(json.dumps(index, sort_keys=True))
    return arrays


def _metric_seed(runner: Runner, attack_id: str, explainer_id: str) -> int:
    from audit.seeding import derive_seed

    return derive_seed(runner.suite.seed, "metric", attack_id, explainer_id)


def _note(log, message: str) -> None:
    if log is not None:
        log(message)


def write_samples(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """samples.npz, compressed, written atomically."""
    import os
    import tempfile

    if not arrays:  # nothing to draw: no stale pictures of an earlier run in this folder either
        path.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix=".samples.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
