"""RISE speed: wall time / (N masks x per-image batched forward time), side by side in one process.

For the reference model (64 x 64) and torchvision resnet18 (random weights, 224 x 224), one image:

- ``forward``: per-image time of forwarding N images in batches of RISE's batch size, through the
  same inference copy of the model RISE uses (:func:`audit.models.inference.inference_model`);
- ``rise``: :func:`audit.explainers.rise.rise_maps` (masks made in chunks on the model's device);
- ``eclique``: the reference code's way — every mask made on the CPU one by one, all N stacked,
  then moved, then the forwards and one matrix product.

Goal (issue B): rise / (N x forward) <= 1.05 on CPU. Measurements alternate forward and RISE runs
and keep each one's minimum, so load from other processes on shared cores hurts both alike; the
same ratios are also given in process CPU time (``*_cpu``), which such load does not inflate.
With ``--convergence`` (issue K): how many masks RISE needs for a mean relative L2 error
||m_N - m|| / ||m|| of 0.10 and 0.05 against the limit map m, on 16 reference test images and on
torchvision resnet18 at 224 px (random weights: nothing is downloaded; 16 seeded noise images),
with i.i.d. masks (``plain``, the paper's; ``design: iid``), with the orthogonal design
(``orthogonal``, RISE's default since issue K: ``design: orthogonal``,
:class:`audit.rise_masks.OrthogonalMasks`), with that design and the logistic control variate
(``orthogonal_logistic``, ``estimator: logistic_control_variate``: ours, the fewest masks) and
with i.i.d. masks and the linear control variate (``control_variate``). ``masks_ratio_at_*`` is
plain / ours, ``orthogonal_masks_ratio_at_*`` plain / orthogonal, ``cv_masks_ratio_at_*`` plain /
control variate. The
error is estimated without a reference map: 4 independent replicates per estimator give an
unbiased estimate of its variance at the replicate size n, and of ||m||^2 up to the estimators'
O(1/n) bias; the i.i.d. error falls as 1/sqrt(N) (checked on the reference model, replicates of
512 and 2048 masks), so masks needed = n (error at n / level)^2, an extrapolation, which also
makes the ratio the same at both levels. The orthogonal design's error falls at least as fast
(blocks are independent given their shifts, and the Sobol' shifts of more blocks stratify
better), so for it the extrapolation overstates the masks needed: its ratio is conservative. Two yardsticks:
``centred`` (each map minus its mean over pixels: the structure that ranks, top-k and pointing
read; the main figures, ``masks_ratio_at_0.10`` / ``_0.05``) and ``raw`` (the maps as they are,
``..._raw``): a RISE map is a large constant (the mean class probability) plus a small
structure, so its raw relative error is tiny after a few masks and says little about the map.
Goal: ratio >= 4 at both levels.
Usage: ``python benchmarks/rise.py [--quick] [--convergence]``. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from audit.explainers.rise import (
    MaskedScores,
    RiseParams,
    class_probability,
    logistic_correction,
    rise_maps,
    rise_mask_stream,
)
from audit.explainers.rise_cv import ControlVariate
from audit.explainers.rise_logistic import LogisticControlVariate
from audit.fills import fill
from audit.models.inference import CPU_CHUNK, inference_model
from audit.spec import InputSpec

IMAGENET_224 = InputSpec(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``; CPU time (all threads of this process) is robust to
    other processes sharing the cores, wall time is what the issue's goal is stated in."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def forward_time(model, x, n: int, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image of forwarding ``n`` images in batches of ``batch_size``:
    the same forward calls RISE makes, minus everything else RISE does."""
    batch = x.expand(batch_size, -1, -1, -1).contiguous()
    fast = inference_model(model)

    def run():
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                fast(batch[: min(batch_size, n - start)])

    wall, cpu = timed(run)
    return wall / n, cpu / n


def rise_time(model, x, spec, params: RiseParams) -> tuple[float, float]:
    return timed(lambda: rise_maps(model, x, torch.zeros(1, dtype=torch.long), spec, params, seed=0))


def eclique_time(model, x, params: RiseParams, seed: int = 0) -> tuple[float, float]:
    """The reference code's recipe: CPU masks one by one (numpy grid, resize, crop), then stack."""
    return timed(lambda: _eclique(model, x, params, seed))


def _eclique(model, x, params: RiseParams, seed: int) -> torch.Tensor:
    size = x.shape[-1]
    rng = np.random.default_rng(seed)
    cell = math.ceil(size / params.grid)
    up = (params.grid + 1) * cell
    masks = np.empty((params.n_masks, size, size), dtype=np.float32)
    for i in range(params.n_masks):
        grid = (rng.random((params.grid, params.grid)) < params.p).astype(np.float32)
        dx, dy = rng.integers(0, cell, 2)
        resized = F.interpolate(torch.from_numpy(grid)[None, None], size=(up, up), mode="bilinear",
                                align_corners=False)[0, 0].numpy()
        masks[i] = resized[dx:dx + size, dy:dy + size]
    stacked = torch.from_numpy(masks)[:, None].to(x.device)
    scores = []
    fast = inference_model(model)  # the same forward as ours: the comparison is the mask recipe
    with torch.inference_mode():
        for start in range(0, params.n_masks, params.batch_size):
            chunk = stacked[start:start + params.batch_size]
            scores.append(fast(chunk * x).softmax(1)[:, 0])
        probs = torch.cat(scores)
        return (probs @ stacked.view(params.n_masks, -1)).view(size, size) / params.n_masks / params.p


def measure(name: str, model, spec: InputSpec, n_masks: int, batch_size: int, rounds: int) -> dict:
    model = model.eval()
    x = spec.normalize(torch.rand(1, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(0)))
    params = RiseParams(n_masks=n_masks, batch_size=batch_size)
    forwards, rises = [], []
    rise_time(model, x, spec, RiseParams(n_masks=batch_size, batch_size=batch_size))  # warm-up
    for _ in range(rounds):  # interleaved, so load from other processes hits both alike
        forwards.append(forward_time(model, x, n_masks, batch_size))
        rises.append(rise_time(model, x, spec, params))
    eclique = eclique_time(model, x, params)
    row = {"model": name, "size": spec.size, "n_masks": n_masks, "batch_size": batch_size}
    for i, clock in enumerate(("wall", "cpu")):
        forward, rise = min(f[i] for f in forwards), min(r[i] for r in rises)
        suffix = "" if clock == "wall" else "_cpu"
        row.update({f"forward_ms_per_image{suffix}": round(1000 * forward, 3),
                    f"rise_s{suffix}": round(rise, 3), f"eclique_s{suffix}": round(eclique[i], 3),
                    f"rise_over_forward{suffix}": round(rise / (n_masks * forward), 4),
                    f"eclique_over_forward{suffix}": round(eclique[i] / (n_masks * forward), 4)})
        print(f"{name:>14} {spec.size:>4}px N={n_masks:<5} {clock:>4}: forward "
              f"{1000 * forward:7.2f} ms/img  RISE {rise:7.2f} s  eclique {eclique[i]:7.2f} s  "
              f"RISE/(N x fwd) {rise / (n_masks * forward):.3f}  "
              f"eclique/(N x fwd) {eclique[i] / (n_masks * forward):.3f}", flush=True)
    return row


def convergence_curves(model, x, target, spec, checkpoints: list[int], params: RiseParams,
                       seed: int) -> dict[str, dict[int, torch.Tensor]]:
    """RISE maps after each checkpoint's number of masks, in one pass over ``params``' masks.

    The same loop as :func:`rise_maps` (its building blocks, its masks for ``seed``), with the
    maps read off at every checkpoint; at the last one it must agree with ``rise_maps``. With
    i.i.d. masks: ``plain`` and ``control_variate``; with the orthogonal design: ``orthogonal``.
    """
    height, width = x.shape[-2:]
    batch = x.shape[0]
    design = params.mask_design
    acc = MaskedScores(batch, 1, height, width, x.device)
    if design == "iid":
        cv = ControlVariate(batch, height, width, params.grid, params.p, params.cv_grid, params.cv_ridge,
                            x.device)
        out: dict[str, dict[int, torch.Tensor]] = {"plain": {}, "control_variate": {}}
    else:
        cv = LogisticControlVariate(batch, params.cv_grid, params.cv_ridge)
        out = {"orthogonal": {}, "orthogonal_logistic": {}}
    total = torch.zeros(height * width, dtype=torch.float64)
    done = 0
    base = fill(params.fill, x, spec)
    stream = rise_mask_stream(params.model_copy(update={"n_masks": max(checkpoints)}), (height, width),
                              seed, params.batch_size)
    score = class_probability(model)
    with torch.inference_mode():
        for masks in stream:
            total += masks.flatten(1).sum(0)
            cv.add_masks(masks)
            for b in range(batch):
                scores = score(torch.addcmul(base[b:b + 1], masks, x[b:b + 1] - base[b:b + 1]),
                               int(target[b]))
                acc.add(b, scores, masks)
                cv.add_scores(b, scores)
            done += masks.shape[0]
            if done in checkpoints:
                plain = acc.references()[:, None] + acc.sums[:, 0] / total[None]
                if design == "iid":
                    out["plain"][done] = plain.view(batch, height, width).clone()
                    out["control_variate"][done] = (plain + cv.correction(total)).view(batch, height, width)
                    continue
                out["orthogonal"][done] = plain.view(batch, height, width).clone()
                cv.fit()  # on the scores so far
                corrected = plain + logistic_correction(cv, params.model_copy(update={"n_masks": done}),
                                                        (height, width), seed, params.batch_size, "cpu",
                                                        total.clone())
                out["orthogonal_logistic"][done] = corrected.view(batch, height, width)
    return out


def replicate_maps(model, x, target, spec, params: RiseParams, n_masks: int, replicates: int
                   ) -> dict[str, torch.Tensor]:
    """(R, B, H*W) maps per estimator: R independent runs of ``n_masks`` masks (seeds 1..R), for
    the i.i.d. estimators (plain, control variate) and the orthogonal design."""
    maps: dict[str, torch.Tensor] = {}
    for design, estimator in (("iid", "control_variate"), ("orthogonal", "logistic_control_variate")):
        chosen = params.model_copy(update={"design": design, "estimator": estimator})
        runs = [convergence_curves(model, x, target, spec, [n_masks], chosen, seed=r + 1)
                for r in range(replicates)]
        check = rise_maps(model, x[:2], target[:2], spec, chosen.model_copy(update={"n_masks": n_masks}),
                          seed=1)
        last = "control_variate" if design == "iid" else "orthogonal_logistic"
        assert torch.allclose(check, runs[0][last][n_masks][:2], rtol=1e-4, atol=1e-6), \
            "the benchmark's loop drifted from rise_maps"
        maps.update({name: torch.stack([run[name][n_masks].flatten(1) for run in runs]) for name in runs[0]})
    return maps


def error_constants(maps: torch.Tensor, signal: torch.Tensor | None, centred: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (k, signal) with relative L2 error at N masks = k * sqrt(n_masks / N).

    ``maps`` (R, B, P) are R independent replicates of one estimator at ``n_masks``. Their
    spread v = sum_r ||m_r - mean||^2 / (R - 1) is an unbiased estimate of the estimator's
    variance E||m_N - E m_N||^2; ||mean||^2 - v / R estimates ||E m_N||^2 without bias, which is
    the limit map's squared norm ||m||^2 up to the estimator's own O(1/N) bias (both are ratios
    of sums over the masks, sum s M / sum M; ``signal`` passes one from another estimator of the
    same limit). k itself, a square root of a ratio of the two, is consistent, not unbiased. These
    estimators' errors fall as 1/sqrt(N) (means of N i.i.d. terms, to first order), so k
    extrapolates to any N; ``centred`` subtracts each map's mean over pixels first. Where the
    noise dwarfs the map the signal estimate can come out <= 0 (it is unbiased, not positive):
    k is then NaN (unresolved at this n), never a number made from a clamped denominator.
    """
    if centred:
        maps = maps - maps.mean(dim=-1, keepdim=True)
    replicates = maps.shape[0]
    mean = maps.mean(dim=0)
    spread = ((maps - mean) ** 2).sum(dim=-1).sum(dim=0) / (replicates - 1)
    if signal is None:
        signal = (mean ** 2).sum(dim=-1) - spread / replicates
    k = (spread / signal.clamp_min(1e-300)).sqrt()
    return torch.where(signal > 0, k, torch.nan), signal


def convergence_row(name: str, model, spec: InputSpec, x, target, params: RiseParams,
                    n_runs: list[int], replicates: int) -> dict:
    """Masks each estimator needs for a mean relative L2 error of 0.10 and 0.05 (see module doc)."""
    started = time.perf_counter()
    row: dict = {"model": name, "size": spec.size, "images": x.shape[0], "replicates": replicates,
                 "masks_per_replicate": n_runs}
    for n_masks in n_runs:
        maps = replicate_maps(model, x, target, spec, params, n_masks, replicates)
        for yardstick, centred in (("centred", True), ("raw", False)):
            k_plain, signal = error_constants(maps["plain"], None, centred)
            k = {"plain": k_plain}
            for estimator in ("orthogonal_logistic", "orthogonal", "control_variate"):
                k[estimator] = error_constants(maps[estimator], signal, centred)[0]
            at: dict = {}
            for estimator, per_image in k.items():
                unresolved = torch.nonzero(per_image.isnan()).flatten().tolist()
                if unresolved:
                    raise SystemExit(f"{name} ({yardstick}): {n_masks} masks x {replicates} replicates "
                                     f"cannot resolve the map of images {unresolved} (the noise dwarfs "
                                     f"it: estimated ||m||^2 <= 0); use more masks per replicate")
                mean_k = float(per_image.mean())  # mean over images of k_i; error(N) = mean_k sqrt(n/N)
                at[estimator] = {"error_at_n": round(mean_k, 4),
                                 "masks_at_0.10": round(n_masks * (mean_k / 0.10) ** 2, 1),
                                 "masks_at_0.05": round(n_masks * (mean_k / 0.05) ** 2, 1)}
            for level in ("0.10", "0.05"):  # ours: the orthogonal design, RISE's default
                for estimator, prefix in (("orthogonal_logistic", "masks_ratio"),
                                          ("orthogonal", "orthogonal_masks_ratio"),
                                          ("control_variate", "cv_masks_ratio")):
                    at[f"{prefix}_at_{level}"] = round(at["plain"][f"masks_at_{level}"]
                                                       / at[estimator][f"masks_at_{level}"], 3)
            row[f"{yardstick}@{n_masks}"] = at
            print(f"{name:>14} {yardstick:>8} N={n_masks}: error at N / masks for 0.10 / masks for 0.05 / "
                  f"ratio to plain: " + "; ".join(
                      f"{e} {at[e]['error_at_n']:.4f} / {at[e]['masks_at_0.10']:.0f} / "
                      f"{at[e]['masks_at_0.05']:.0f}" + ("" if e == "plain" else f" / {at[f'{p}_at_0.10']}")
                      for e, p in (("plain", ""), ("orthogonal_logistic", "masks_ratio"),
                                   ("orthogonal", "orthogonal_masks_ratio"), ("control_variate", "cv_masks_ratio"))),
                  flush=True)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def convergence(quick: bool) -> dict:
    """Both models' rows; the ratios are read at the largest replicate size."""
    from torchvision.models import resnet18

    from audit.builtin import shapes
    from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference

    n_images = 4 if quick else 16
    reference = load_reference()
    data = shapes.render(range(n_images), "test")
    x = INPUT_SPEC.normalize(data.images)
    rows = []
    with torch.inference_mode():
        target = reference(x).argmax(1)
    params = RiseParams(batch_size=128)
    rows.append(convergence_row("shapes-resnet", reference, INPUT_SPEC, x, target, params,
                                [256] if quick else [512, 2048], 4))
    # random weights (no download): a real ImageNet model's maps would have more structure
    net = resnet18(weights=None).eval()
    x224 = IMAGENET_224.normalize(torch.rand(n_images, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    with torch.inference_mode():
        target224 = net(x224).argmax(1)
    rows.append(convergence_row("resnet18", net, IMAGENET_224, x224, target224,
                                params.model_copy(update={"batch_size": 32}), [64] if quick else [256], 4))
    result: dict = {"rows": rows}
    for level in ("0.10", "0.05"):
        for yardstick in ("centred", "raw"):
            for prefix in ("masks_ratio", "orthogonal_masks_ratio", "cv_masks_ratio"):
                ratios = [row[f"{yardstick}@{max(row['masks_per_replicate'])}"][f"{prefix}_at_{level}"]
                          for row in rows]
                key = f"{prefix}_at_{level}" + ("" if yardstick == "centred" else "_raw")
                result[key] = min(ratios)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer masks, one round (a smoke run)")
    parser.add_argument("--convergence", action="store_true",
                        help="also: masks plain RISE and the control-variate estimator need for a "
                             "relative L2 error of 0.10 and 0.05 (slow: ~15 min)")
    args = parser.parse_args()
    from torchvision.models import resnet18

    from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference

    rounds = 1 if args.quick else 3
    rows = [
        measure("shapes-resnet", load_reference(), INPUT_SPEC, 500 if args.quick else 2000, CPU_CHUNK,
                rounds),
        measure("resnet18", resnet18(weights=None), IMAGENET_224, 64 if args.quick else 256, 32, rounds),
    ]
    result = {"benchmark": "rise", "rise_over_forward": max(r["rise_over_forward"] for r in rows),
              "rise_over_forward_cpu": max(r["rise_over_forward_cpu"] for r in rows),
              "eclique_over_forward": max(r["eclique_over_forward"] for r in rows),
              "eclique_over_forward_cpu": max(r["eclique_over_forward_cpu"] for r in rows),
              "goal": 1.05, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "rows": rows}
    if args.convergence:
        result["convergence"] = convergence(args.quick)
        for key, value in result["convergence"].items():
            if "masks_ratio" in key:
                result[key] = value
    print(json.dumps(result))


if __name__ == "__main__":
    main()
