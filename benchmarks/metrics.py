"""Our AOPC against Quantus' RegionPerturbation: same 32 maps, model and configuration.

    .venv/bin/python benchmarks/metrics.py [--repeats 3] [--device cpu]

Configuration: reference model (``builtin:shapes-resnet``; an untrained seeded copy if its
weights cannot be loaded), 32 test images of the shapes data, gradient saliency maps
(|∂f_c/∂x| summed over channels), 8×8 regions, L = 64 steps (every region), baseline 0 in the
normalised input space, MoRF and LeRF. Quantus needs one call per order; ours computes MoRF,
LeRF and random in one pass, so both the like-for-like time (one order) and the all-orders time
are printed. Times are medians over ``--repeats``, the contenders interleaved.

Ours sends the perturbed images through the model's inference copy (BatchNorm folded,
channels-last) in the device's chunk size (``audit.models.inference``), as the audit does;
Quantus gets the model as given, as a Quantus user would. To separate the two sources of
speed, Quantus is also timed on our inference copy (``..._same_fast_model``): what remains of
the ratio there is the metric's own machinery.

The same comparison is repeated with a tiny model (one strided conv and a linear layer), where
the model's forward pass no longer hides the cost of the metric's own machinery (building the
perturbed images, per-step calls and copies). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from audit.data import shapes
from audit.engine.device import reproducible
from audit.metrics.aopc import aopc_from_curves, region_perturbation
from audit.models.inference import inference_model
from audit.models.shapes_resnet import INPUT_SPEC, ShapesResNet, load_reference

N_IMAGES, REGION, STEPS = 32, 8, 64


def setup(device: torch.device):
    try:
        model, note = load_reference(), "reference weights"
    except Exception as exc:  # the weights file may be mid-retraining; the timing comparison stands
        torch.manual_seed(0)
        model, note = ShapesResNet().eval(), f"untrained seeded model ({type(exc).__name__})"
    model = model.to(device)
    batch = shapes.render(range(N_IMAGES), split="test")
    x = INPUT_SPEC.normalize(batch.images).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), xg)
    maps = grad.abs().sum(1).detach()
    return model, x, maps, target, note


def tiny_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 16 * 16, len(shapes.CLASSES))).eval().to(device)


def timed(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Results and median times of several callables, interleaved repeat by repeat so that a
    change in the (shared) machine's load hits all of them alike."""
    times: dict = {name: [] for name in fns}
    out: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - started)
    return out, {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="our images per forward call (default: the device's, as in the audit)")
    parser.add_argument("--tf32", action="store_true", help="leave TF32 and cuDNN autotuning on "
                        "(PyTorch's defaults); the audit turns them off")
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.tf32:
        reproducible(device)  # as the audit runs (both contenders): fp32, deterministic kernels

    model, x, maps, target, note = setup(device)
    print(f"model: {note}; {N_IMAGES} images {tuple(x.shape[1:])}, regions {REGION}², L = {STEPS}, "
          f"baseline 0, device {device}, torch threads {torch.get_num_threads()}")

    ours_morf, t_ours_morf, t_ours_all, ours_all, q_morf, t_q_morf, q_lerf, t_q_lerf, t_q_fast = compare(
        model, x, maps, target, device, args)
    diff = max(float(np.abs(ours_morf["morf"] - q_morf).max()),
               float(np.abs(ours_all["lerf"] - q_lerf).max()))
    print(f"{'':22}{'ours':>12}{'quantus':>12}")
    print(f"{'AOPC MoRF (mean)':22}{ours_morf['morf'].mean():12.6f}{q_morf.mean():12.6f}")
    print(f"{'AOPC LeRF (mean)':22}{ours_all['lerf'].mean():12.6f}{q_lerf.mean():12.6f}")
    print(f"{'AOPC random (mean)':22}{ours_all['random'].mean():12.6f}{'-':>12}")
    print(f"{'time MoRF [s]':22}{t_ours_morf:12.3f}{t_q_morf:12.3f}")
    print(f"{'time 3 orders [s]':22}{t_ours_all:12.3f}{t_q_morf + t_q_lerf:12.3f}  (quantus: MoRF+LeRF only)")
    print(f"{'time MoRF, quantus on our inference copy [s]':46}{t_q_fast:12.3f}")
    print(f"max |ours - quantus| per image: {diff:.2e}")

    small = tiny_model(device)
    tiny = compare(small, x, maps, small(x).argmax(1).detach(), device, args)
    tiny_diff = max(float(np.abs(tiny[0]["morf"] - tiny[4]).max()),
                    float(np.abs(tiny[3]["lerf"] - tiny[6]).max()))
    print(f"tiny model: MoRF time ours {tiny[1]:.3f} s, quantus {tiny[5]:.3f} s "
          f"(x{tiny[5] / tiny[1]:.1f}); max |diff| {tiny_diff:.2e}")
    print(json.dumps({
        "aopc_speedup_vs_quantus": round(t_q_morf / t_ours_morf, 3),
        "aopc_all_orders_speedup_vs_quantus_morf_lerf": round((t_q_morf + t_q_lerf) / t_ours_all, 3),
        "aopc_speedup_vs_quantus_same_fast_model": round(t_q_fast / t_ours_morf, 3),
        "aopc_max_abs_diff": max(diff, tiny_diff),
        "ours_morf_s": round(t_ours_morf, 4), "quantus_morf_s": round(t_q_morf, 4),
        "aopc_speedup_vs_quantus_tiny_model": round(tiny[5] / tiny[1], 3),
        "n_images": N_IMAGES, "region_size": REGION, "steps": STEPS, "repeats": args.repeats,
        "max_batch": args.max_batch, "device": str(device), "tf32": bool(args.tf32),
        "torch_threads": torch.get_num_threads(),
        "model": note}))


def compare(model, x, maps, target, device, args):
    """Ours (MoRF alone; all three orders) and Quantus (MoRF; LeRF): values and median times."""
    import quantus

    def ours(orders):
        def run():
            curves = region_perturbation(model, x, maps, target, INPUT_SPEC, region_size=REGION,
                                         steps=STEPS, baseline_kind="zero", orders=orders,
                                         max_batch=args.max_batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return {k: aopc_from_curves(v).cpu().numpy() for k, v in curves.items()}
        return run

    def theirs(order, net=model):
        metric = quantus.RegionPerturbation(patch_size=REGION, regions_evaluation=STEPS, order=order,
                                            perturb_baseline=0.0, abs=False, normalise=False,
                                            disable_warnings=True)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curves = metric(model=net, x_batch=x.cpu().numpy(), y_batch=target.cpu().numpy(),
                                a_batch=maps.unsqueeze(1).cpu().numpy(), device=str(device),
                                batch_size=N_IMAGES)
            # Quantus' curve holds f(x) - f(x^k) for k = 1..L; AOPC adds the k = 0 term (0).
            return np.asarray(curves, dtype=float).sum(1) / (STEPS + 1)
        return run

    out, t = timed({"ours_morf": ours(("morf",)), "q_morf": theirs("morf"),
                    "ours_all": ours(("morf", "lerf", "random")), "q_lerf": theirs("lerf"),
                    "q_fast": theirs("morf", inference_model(model))}, args.repeats)
    return (out["ours_morf"], t["ours_morf"], t["ours_all"], out["ours_all"], out["q_morf"], t["q_morf"],
            out["q_lerf"], t["q_lerf"], t["q_fast"])


if __name__ == "__main__":
    main()
