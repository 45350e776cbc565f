"""Evidence for the input attacks (issue G) on the embedded default: not a timing benchmark.

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/input_attacks_evidence.py --n 64 [--only pgd,fragility,...]

Prints, for builtin:shapes (test split) + builtin:shapes-resnet, the figures the issue asks for:
PGD ε=8/255 success; fragility (top-k vs SimpleGrad, ε=8/255) label kept and top-k intersection;
targeted_map Spearman to the target map before/after and label kept; constant_shift agreement,
max |Δlogit| and each explainer's Spearman clean vs shifted; Gaussian noise σ=0.05 SmoothGrad vs
SimpleGrad Spearman to the clean map. Same seeds as an audit with suite seed 0.
"""

from __future__ import annotations

import argparse
import time

import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.data.sources import ShapesData
from audit.data.training import TrainingSet
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.similarity import resolve_k, topk_mask
from audit.metrics.spearman import spearman
from audit.seeding import derive_seed


def explain(name, model, x, target, ids, params=None):
    ctx = ExplainContext(INPUT_SPEC, derive_seed(0, "explainer", name), tuple(ids), x.device)
    return EXPLAINERS.create(name, params)(model, x, target, ctx)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--only", default="pgd,fragility,targeted_map,constant_shift,gaussian_noise")
    parser.add_argument("--fragility-steps", type=int, default=100)
    parser.add_argument("--targeted-steps", type=int, default=100)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_reference().to(device)
    data = ShapesData("test", args.n, INPUT_SPEC.size)
    batch = data.batch(range(args.n))
    x = INPUT_SPEC.normalize(batch.images.to(device))
    ids = batch.ids
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    print(f"n={args.n} device={device} clean accuracy={(pred.cpu() == batch.labels).float().mean():.4f}")
    train = TrainingSet(ShapesData("train", None, INPUT_SPEC.size))

    def run(name, params, training=None):
        attack = ATTACKS.create(name, params)
        ctx = AttackContext(INPUT_SPEC, derive_seed(0, "attack", name), tuple(ids), device, training)
        started = time.perf_counter()
        prepared = attack.prepare(model, ctx).eval()
        x_att = attack.perturb(prepared, x, pred, ctx)
        with torch.no_grad():
            out = prepared(x_att)
        return attack, ctx, prepared, x_att, out, time.perf_counter() - started

    only = set(args.only.split(","))
    if "pgd" in only:
        _, _, _, _, out, secs = run("pgd", {"eps": 8 / 255, "steps": 10, "step_size": 2 / 255})
        print(f"pgd eps=8/255 steps=10 untargeted: success={(out.argmax(1) != pred).float().mean():.4f} "
              f"({secs:.0f}s)")
        _, _, _, _, out, secs = run("fgsm", {"eps": 8 / 255})
        print(f"fgsm eps=8/255: success={(out.argmax(1) != pred).float().mean():.4f} ({secs:.0f}s)")
        _, _, _, x_att, out, secs = run("iterative_targeted", {"max_steps": 32})
        goal = (pred + 1) % logits.shape[1]
        linf = (INPUT_SPEC.denormalize(x_att) - INPUT_SPEC.denormalize(x)).abs().flatten(1).amax(1)
        print(f"iterative_targeted next, 32 grey levels: reached target={(out.argmax(1) == goal).float().mean():.4f} "
              f"median Linf={linf.median() * 255:.1f}/255 ({secs:.0f}s)")
    if "fragility" in only:
        _, _, _, x_att, out, secs = run("fragility", {"mode": "topk", "eps": 8 / 255, "steps": args.fragility_steps,
                                                      "step_size": 0.5 / 255})
        clean = explain("saliency", model, x, pred, ids)
        moved = explain("saliency", model, x_att, pred, ids)
        k = resolve_k(0.1, clean[0].numel())
        inter = (topk_mask(clean, k) & topk_mask(moved, k)).sum(1).double() / k
        print(f"fragility topk saliency eps=8/255 steps={args.fragility_steps}: label kept="
              f"{(out.argmax(1) == pred).float().mean():.4f} mean top-k intersection={inter.mean():.4f} "
              f"(min {inter.min():.3f}, max {inter.max():.3f}) spearman={spearman(clean, moved).mean():.4f} "
              f"({secs:.0f}s)")
    if "targeted_map" in only:
        attack, ctx, _, x_att, out, secs = run("targeted_map", {"steps": args.targeted_steps}, train)
        goal = attack.target_maps(model, x, pred, ctx)
        clean = explain("saliency", model, x, pred, ids)
        moved = explain("saliency", model, x_att, pred, ids)
        print(f"targeted_map saliency other_image eps=8/255 steps={args.targeted_steps}: label kept="
              f"{(out.argmax(1) == pred).float().mean():.4f} spearman(clean map, target)="
              f"{spearman(clean, goal).mean():.4f} spearman(attacked map, target)={spearman(moved, goal).mean():.4f} "
              f"({secs:.0f}s)")
    if "constant_shift" in only:
        _, _, prepared, x_att, out, secs = run("constant_shift", {"shift": -1.0})
        print(f"constant_shift c=-1: agreement={(out.argmax(1) == pred).float().mean():.4f} "
              f"max |dlogit|={(out - logits).abs().max():.3g}")
        for name, params in [("saliency", None), ("smoothgrad", None), ("integrated_gradients", None),
                             ("gradcam", None), ("lrp", None)]:
            a = explain(name, model, x, pred, ids, params)
            b = explain(name, prepared, x_att, pred, ids, params)
            print(f"  {name}: spearman clean vs shifted = {spearman(a, b).mean():.4f}")
    if "gaussian_noise" in only:
        _, _, _, x_att, _, _ = run("gaussian_noise", {"sigma": 0.05})
        for name in ("saliency", "smoothgrad"):
            a, b = explain(name, model, x, pred, ids), explain(name, model, x_att, pred, ids)
            print(f"gaussian_noise sigma=0.05 {name}: mean spearman to clean = {spearman(a, b).mean():.4f}")


if __name__ == "__main__":
    main()
