"""Cost of one fine-tuning step of the ``manipulation`` attack against one plain training step.

    .venv/bin/python benchmarks/manipulation.py [--repeats 7] [--batch 8] [--device cpu]

On the reference model (``builtin:shapes-resnet``, 64×64) and one batch of ``builtin:shapes``
training images, both steps are Adam steps on a copy in eval mode (BatchNorm frozen):

- plain: CE(f_w(x), y), backward, step;
- manipulation: what :meth:`Manipulation.train_step` does — the original model's forward for
  the explained class, CE, the target explainer's map with ``create_graph=True``, the fooling
  penalty (and the original model's map for top-k / center-mass), backward through both, step.

Each variant is timed ``--repeats`` times, interleaved, after one warm-up; the ratio of the
medians is printed per target and fooling type (issue F's goal: ≤ 3×). The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from audit.attacks.manipulation import Manipulation
from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.data.sources import ShapesData
from audit.engine.device import reproducible

VARIANTS = (("gradcam", "location"), ("gradcam", "topk"), ("gradcam", "center_mass"),
            ("saliency", "location"), ("lrp", "location"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8, help="images per step (the attack's batch_size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    reproducible(device)
    model = load_reference().to(device).eval()
    batch = ShapesData("train", None, INPUT_SPEC.size).batch(range(args.batch))
    x, y = INPUT_SPEC.normalize(batch.images).to(device), batch.labels.to(device)

    plain_model = copy.deepcopy(model).eval()
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=1e-4)

    def plain() -> None:
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    steps = {"plain": plain}
    for target, fooling in VARIANTS:
        extra = {"target_params": {"composite": "epsilon"}} if target == "lrp" else {}  # its differentiable form
        attack = Manipulation(target=target, fooling=fooling, lr=1e-4, **extra)
        explainer = attack.target_explainer()
        fooled = copy.deepcopy(model).eval().requires_grad_(True)
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.Adam(fooled.parameters(), lr=1e-4)
        steps[f"{target}/{fooling}"] = (lambda a=attack, e=explainer, f=fooled, r=reference, o=opt:
                                        a.train_step(e, f, r, o, x, y, x))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.repeats + 1):
        for name, fn in steps.items():
            _sync(device)
            started = time.perf_counter()
            fn()
            _sync(device)
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"batch {args.batch}, {args.repeats} repeats, device {device}, threads {torch.get_num_threads()}")
    print(f"plain training step: {1000 * medians['plain']:.1f} ms (median)")
    ratios = {}
    for name, value in medians.items():
        if name != "plain":
            ratios[name] = value / medians["plain"]
            print(f"{name:24s} {1000 * value:8.1f} ms  {ratios[name]:.2f}x plain")
    print(json.dumps({"batch": args.batch, "repeats": args.repeats, "device": str(device),
                      "plain_ms": round(1000 * medians["plain"], 2),
                      "ratios": {k: round(v, 3) for k, v in ratios.items()}}))


if __name__ == "__main__":
    main()
