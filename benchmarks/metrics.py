"""Our AOPC against Quantus' RegionPerturbation: same 32 maps, model and configuration.

    .venv/bin/python benchmarks/metrics.py [--repeats 3] [--device cpu] [--n 32]

Configuration: reference model (``builtin:shapes-resnet``; an untrained seeded copy if its
weights cannot be loaded), 32 test images of the shapes data, gradient saliency maps
(|∂f_c/∂x| summed over channels), 8×8 regions, L = 64 steps (every region), baseline 0 in the
normalised input space, MoRF and LeRF. Each side runs one order per call, as the audit's
``aopc`` / ``aopc_lerf`` / ``aopc_random`` rows do; the like-for-like time is MoRF, and the
audit's three rows are timed against Quantus' MoRF + LeRF. Times are medians over
``--repeats``, the contenders interleaved.

The values agree only because the configuration avoids where the two differ: Quantus pads a
side that is not a multiple of the region size on both ends (ours at the end), sums relevance
in float32 and sorts regions without a stable order. 64 px images with 8 px regions and
gradient maps without near-ties keep both on the same regions.

Ours sends the perturbed images through the model's inference copy (BatchNorm folded,
channels-last) in the device's chunk size (``audit.models.inference``), as the audit does;
Quantus gets the model as given, as a Quantus user would. To separate the two sources of
speed, Quantus is also timed on our inference copy (``..._same_fast_model``): what remains of
the ratio there is the metric's own machinery.

The same comparison is repeated with a tiny model (one strided conv and a linear layer), where
the model's forward pass no longer hides the cost of the metric's own machinery (building the
perturbed images, per-step calls and copies).

Forward-only metrics at the forward-pass limit: each of ``aopc``, ``aopc_lerf``,
``aopc_random`` (defaults: 8 px regions, every region removed), ``deletion``, ``insertion``
(32 steps) and ``crop``, computed as the audit computes it (``Metric.compute`` on the same maps,
reference model and images, the antithetic tie pass included where an image has ties), is timed
against a pure batched forward of as many images as the metric sent through the model (counted
by a hook on the inference copy in an untimed run), through the same inference copy, in the same
chunk size, under ``no_grad`` as the metric runs: ``<metric>_over_forward`` (goal ≤ 1.10 each;
``aopc_over_forward`` is MoRF). Metric and forward are interleaved repeat by repeat, medians.

The last line is one JSON object.
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

from audit.builtin import shapes
from audit.builtin.shapes_resnet import INPUT_SPEC, ShapesResNet, load_reference
from audit.engine.device import reproducible
from audit.metrics.aopc import AOPC, AOPCLerf, AOPCRandom, aopc_from_curves, region_perturbation
from audit.metrics.base import MetricInputs
from audit.metrics.causal import Deletion, Insertion
from audit.metrics.crop import Crop
from audit.models.inference import forward_chunk, inference_model

N_IMAGES, REGION, STEPS = 32, 8, 64  # N_IMAGES: the default of --n
FORWARD_ONLY = {"aopc": AOPC, "aopc_lerf": AOPCLerf, "aopc_random": AOPCRandom, "deletion": Deletion,
                "insertion": Insertion, "crop": Crop}


def setup(device: torch.device, n_images: int = N_IMAGES):
    try:
        model, note = load_reference(), "reference weights"
    except Exception as exc:  # the weights file may be mid-retraining; the timing comparison stands
        torch.manual_seed(0)
        model, note = ShapesResNet().eval(), f"untrained seeded model ({type(exc).__name__})"
    model = model.to(device)
    batch = shapes.render(range(n_images), split="test")
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
    parser.add_argument("--n", type=int, default=N_IMAGES, help="images (maps) in every comparison")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="our images per forward call (default: the device's, as in the audit)")
    parser.add_argument("--tf32", action="store_true", help="leave TF32 and cuDNN autotuning on "
                        "(PyTorch's defaults); the audit turns them off")
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.tf32:
        reproducible(device)  # as the audit runs (both contenders): fp32, deterministic kernels

    model, x, maps, target, note = setup(device, args.n)
    print(f"model: {note}; {args.n} images {tuple(x.shape[1:])}, regions {REGION}², L = {STEPS}, "
          f"baseline 0, device {device}, torch threads {torch.get_num_threads()}")

    out, t = compare(model, x, maps, target, device, args)
    diff = max(float(np.abs(out["ours_morf"] - out["q_morf"]).max()),
               float(np.abs(out["ours_lerf"] - out["q_lerf"]).max()))
    print(f"{'':22}{'ours':>12}{'quantus':>12}")
    print(f"{'AOPC MoRF (mean)':22}{out['ours_morf'].mean():12.6f}{out['q_morf'].mean():12.6f}")
    print(f"{'AOPC LeRF (mean)':22}{out['ours_lerf'].mean():12.6f}{out['q_lerf'].mean():12.6f}")
    print(f"{'AOPC random (mean)':22}{out['ours_random'].mean():12.6f}{'-':>12}")
    print(f"{'time MoRF [s]':22}{t['ours_morf']:12.3f}{t['q_morf']:12.3f}")
    ours_rows, q_rows = t["ours_morf"] + t["ours_lerf"] + t["ours_random"], t["q_morf"] + t["q_lerf"]
    print(f"{'time 3 rows [s]':22}{ours_rows:12.3f}{q_rows:12.3f}  (quantus: MoRF+LeRF only)")
    print(f"{'time MoRF, quantus on our inference copy [s]':46}{t['q_fast']:12.3f}")
    print(f"max |ours - quantus| per image: {diff:.2e}")

    small = tiny_model(device)
    tiny_out, tiny_t = compare(small, x, maps, small(x).argmax(1).detach(), device, args)
    tiny_diff = max(float(np.abs(tiny_out["ours_morf"] - tiny_out["q_morf"]).max()),
                    float(np.abs(tiny_out["ours_lerf"] - tiny_out["q_lerf"]).max()))
    tiny_ratio = tiny_t["q_morf"] / tiny_t["ours_morf"]
    print(f"tiny model: MoRF time ours {tiny_t['ours_morf']:.3f} s, quantus {tiny_t['q_morf']:.3f} s "
          f"(x{tiny_ratio:.1f}); max |diff| {tiny_diff:.2e}")

    limits = over_forward(model, x, maps, target, device, args)
    print(f"{'metric':12}{'images':>8}{'metric [s]':>12}{'forward [s]':>13}{'ratio':>8}  (goal <= 1.10)")
    for name, row in limits.items():
        print(f"{name:12}{row['images']:8d}{row['metric_s']:12.4f}{row['forward_s']:13.4f}{row['ratio']:8.3f}")
    print(json.dumps({
        **{f"{name}_over_forward": round(row["ratio"], 3) for name, row in limits.items()},
        **{f"{name}_forwarded_images": row["images"] for name, row in limits.items()},
        "aopc_speedup_vs_quantus": round(t["q_morf"] / t["ours_morf"], 3),
        "aopc_three_rows_speedup_vs_quantus_morf_lerf": round(q_rows / ours_rows, 3),
        "aopc_speedup_vs_quantus_same_fast_model": round(t["q_fast"] / t["ours_morf"], 3),
        "aopc_max_abs_diff": max(diff, tiny_diff),
        "ours_morf_s": round(t["ours_morf"], 4), "quantus_morf_s": round(t["q_morf"], 4),
        "aopc_speedup_vs_quantus_tiny_model": round(tiny_ratio, 3),
        "n_images": args.n, "region_size": REGION, "steps": STEPS, "repeats": args.repeats,
        "max_batch": args.max_batch, "device": str(device), "tf32": bool(args.tf32),
        "torch_threads": torch.get_num_threads(),
        "model": note}))


def compare(model, x, maps, target, device, args) -> tuple[dict, dict]:
    """Per-image AOPC values and median times: ours per order (``ours_<order>``), Quantus MoRF
    and LeRF (``q_morf``, ``q_lerf``) and Quantus MoRF on our inference copy (``q_fast``)."""
    import quantus

    def ours(order):
        def run():
            curves = region_perturbation(model, x, maps, target, INPUT_SPEC, region_size=REGION,
                                         steps=STEPS, baseline_kind="zero", orders=(order,),
                                         max_batch=args.max_batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return aopc_from_curves(curves[order]).cpu().numpy()
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
                                batch_size=x.shape[0])
            # Quantus' curve holds f(x) - f(x^k) for k = 1..L; AOPC adds the k = 0 term (0).
            return np.asarray(curves, dtype=float).sum(1) / (STEPS + 1)
        return run

    return timed({"ours_morf": ours("morf"), "q_morf": theirs("morf"), "ours_lerf": ours("lerf"),
                  "q_lerf": theirs("lerf"), "ours_random": ours("random"),
                  "q_fast": theirs("morf", inference_model(model))}, args.repeats)


def over_forward(model, x, maps, target, device, args) -> dict[str, dict]:
    """Per forward-only metric: images it forwards, median seconds of the metric and of a pure
    batched forward of that many images (same inference copy, chunk size and ``no_grad``)."""
    params = {} if args.max_batch is None else {"max_batch": args.max_batch}
    inputs = MetricInputs(spec=INPUT_SPEC, x=x, x_attacked=x, model=model, attacked_model=model, target=target,
                          labels=target, predicted=target, predicted_attacked=target, map=maps, map_attacked=maps,
                          seed=0, sample_ids=tuple(range(x.shape[0])), device=device)
    fast = inference_model(model)
    chunk = forward_chunk(device, args.max_batch)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows: dict[str, dict] = {}
    for name, cls in FORWARD_ONLY.items():
        metric = cls(**params)
        seen: list[int] = []  # the images each forward call of the inference copy got
        hook = fast.register_forward_pre_hook(lambda module, args_, seen=seen: seen.append(int(args_[0].shape[0])))
        try:
            reference = metric.compute(inputs)  # untimed: counts the images, warms the copy up
        finally:
            hook.remove()
        n = sum(seen)
        if max(seen) > chunk:
            raise SystemExit(f"{name}: a forward call of {max(seen)} images, more than the chunk {chunk}")
        images = x[torch.arange(n, device=x.device) % x.shape[0]].contiguous()

        def run_metric(metric=metric):
            result = metric.compute(inputs)
            sync()
            return result

        def run_forward(images=images):
            with torch.no_grad():
                for start in range(0, images.shape[0], chunk):
                    fast(images[start:start + chunk])
            sync()

        out, t = timed({"metric": run_metric, "forward": run_forward}, args.repeats)
        # the very same computation, repeated: bit for bit
        if not torch.allclose(out["metric"].values, reference.values, rtol=0, atol=0, equal_nan=True):
            raise SystemExit(f"{name}: two runs of the metric gave different values")
        rows[name] = {"images": n, "metric_s": t["metric"], "forward_s": t["forward"],
                      "ratio": t["metric"] / t["forward"]}
    return rows


if __name__ == "__main__":
    main()
