"""Why realtime_saliency and RISE's ``dabkowski`` fill fare as they do under the gating attack.

    EXPLAIN_AUDIT_CACHE=DIR PYTHONPATH=. .venv/bin/python benchmarks/realtime_gating.py [SUITE]

Builds the run of ``SUITE`` (default suites/realtime.yaml; the gate and the masking models come
from the cache when that suite ran with the same cache, else they are trained here) and, on its
audited images, measures how often the gate's discriminator calls an input masked (so the gated
model answers zeros): clean images; Φ(x, m) and Φ(x, 1 − m) with the masks of the masking model
trained on the original model (what its training on the gated model would query); RISE-masked
images with the zero fill and with the ``dabkowski`` fill (64 RISE masks per image at its defaults s = 8, p = 0.5).
Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

import torch

from audit.engine.cache import Cache, default_cache_dir
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.explainers.realtime_saliency import remove_evidence
from audit.fills import fill
from audit.rise_masks import generate_masks
from audit.seeding import generator


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "suites/realtime.yaml"
    runner = Runner(load_suite(path), Cache(default_cache_dir()))
    gated = runner.attacked_model("gating")
    spec = runner.model.spec
    batch = runner.data.batch(range(len(runner.data)))
    x = spec.normalize(batch.images)
    with torch.no_grad():
        target = runner.model.model(x).argmax(dim=1)

    def flagged(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((gated.discriminator(images) > gated.threshold).double().mean())

    ctx = runner.explain_context("realtime_saliency", None, batch.ids)
    masks = runner.explainers["realtime_saliency"](runner.model.model, x, target, ctx)
    gen = generator(0, "realtime-gating")
    out = {"n": len(x), "clean": flagged(x),
           "phi_keep_m": flagged(remove_evidence(x, masks, spec, gen)),
           "phi_remove_m": flagged(remove_evidence(x, 1 - masks, spec, gen))}
    rise = generate_masks(64, tuple(x.shape[-2:]), 8, 0.5, gen)  # RISE defaults: s = 8, p = 0.5
    for kind in ("zero", "dabkowski"):
        rates = []
        for image in x:
            copies = image.expand(len(rise), -1, -1, -1)
            base = fill(kind, copies, spec, gen)
            rates.append(flagged(base + rise * (copies - base)))
        out[f"rise_{kind}"] = sum(rates) / len(rates)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
