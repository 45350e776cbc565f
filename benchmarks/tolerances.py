"""How far one value moves when it is computed another way: the evidence for the tests' tolerances.

    .venv/bin/python benchmarks/tolerances.py [--n 16] [--device cuda]

On the reference model and 16 test images of the embedded default, every registered metric that
forwards perturbed images (``compares: map_model``) scores Grad-CAM's maps

- in one batch of ``n`` and in batches of two (other batch shapes, so other float32 kernels), and
- with ``--device cuda`` (or when a GPU is present), on the CPU and on the GPU.

Every explainer's maps are compared the same way, relative to the map's largest magnitude. For each
comparison it prints the largest absolute difference and its ratio to the tolerance the tests use
(``audit.testing``): a ratio far below 1 means the tolerance has room on this machine, one near or
above 1 means a test would fail here. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from audit.builtin.shapes_resnet import load_reference
from audit.data.sources import ShapesData
from audit.engine.device import reproducible
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.base import METRICS, MetricInputs
from audit.spec import InputSpec
from audit.testing import FLOAT32_RTOL, LOGIT_ATOL, PROB_ATOL

SMALL = {"rise": {"n_masks": 256}, "mc_rise": {"n_masks": 256}, "smoothgrad": {"n_samples": 8},
         "integrated_gradients": {"n_steps": 16}}


def metric_values(name, model, spec, x, maps, target, ids, device, rows=None):
    rows = rows or [slice(0, x.shape[0])]
    parts = []
    for r in rows:
        inputs = MetricInputs(spec=spec, x=x[r].to(device), x_attacked=x[r].to(device), model=model.to(device),
                              attacked_model=model, target=target[r].to(device), labels=target[r].to(device),
                              predicted=target[r].to(device), predicted_attacked=target[r].to(device),
                              map=maps[r].to(device), map_attacked=maps[r].to(device), seed=3,
                              sample_ids=tuple(ids[r]), device=torch.device(device))
        parts.append(METRICS.create(name).compute(inputs).values)
    return torch.cat(parts)


def explain(name, model, spec, x, target, ids, device, rows=None):
    rows = rows or [slice(0, x.shape[0])]
    explainer = EXPLAINERS.create(name, SMALL.get(name))
    parts = []
    for r in rows:
        ctx = ExplainContext(spec, seed=3, sample_ids=tuple(ids[r]), device=torch.device(device))
        parts.append(explainer(model.to(device), x[r].to(device), target[r].to(device), ctx).detach().cpu())
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else None)
    args = parser.parse_args()
    model = load_reference()
    spec = InputSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    data = ShapesData("test", n=args.n, size=64, seed=0)
    batch = data.batch(range(args.n))
    x = spec.normalize(batch.images)
    ids = list(batch.ids)
    with torch.no_grad():
        target = model(x).argmax(1)
    pairs = [slice(i, i + 2) for i in range(0, args.n, 2)]
    devices = ["cpu"] + ([args.device] if args.device else [])
    for d in devices[1:]:
        reproducible(torch.device(d))
    out: dict[str, float] = {}
    maps = explain("gradcam", model, spec, x, target, ids, "cpu")
    for name in METRICS.names():
        if METRICS.get(name).compares != "map_model":
            continue
        tol = LOGIT_ATOL if name == "crop" else PROB_ATOL
        whole = metric_values(name, model, spec, x, maps, target, ids, "cpu")
        comparisons = {"batch": metric_values(name, model, spec, x, maps, target, ids, "cpu", pairs)}
        for d in devices[1:]:
            comparisons[d] = metric_values(name, model, spec, x, maps, target, ids, d).cpu()
        for how, other in comparisons.items():
            diff = float((whole - other).abs().max())
            out[f"{name}_{how}_max_abs"] = diff
            print(f"metric {name:12s} {how:5s} max |Δ| {diff:.2e}  ÷ tolerance {diff / tol:.2e}")
    model = model.cpu()
    for name in EXPLAINERS.names():
        whole = explain(name, model, spec, x, target, ids, "cpu")
        scale = float(whole.abs().max()) or 1.0
        comparisons = {"batch": explain(name, model, spec, x, target, ids, "cpu", pairs)}
        for d in devices[1:]:
            comparisons[d] = explain(name, model, spec, x, target, ids, d)
            model = model.cpu()
        for how, other in comparisons.items():
            rel = float((whole - other).abs().max()) / scale
            out[f"{name}_{how}_max_rel"] = rel
            print(f"explainer {name:20s} {how:5s} max |Δ|/max|map| {rel:.2e}  ÷ 1e-4 {rel / 1e-4:.2e}")
    out["float32_rtol"] = FLOAT32_RTOL
    print(json.dumps(out))


if __name__ == "__main__":
    main()
