"""Real-time saliency speed (issue I): seconds per image beside RISE (N = 1000) and Grad-CAM.

    PYTHONPATH=. .venv/bin/python benchmarks/realtime.py [--n 64] [--repeats 3] [--steps S] [--set KEY=VALUE ...]

On the embedded default (builtin:shapes-resnet, builtin:shapes split test, the first ``--n``
images), in one process: the masking model is trained once on split train (the explainer's
defaults, or ``--steps``; its wall time is quoted separately, it is paid once per explained
model and cached), then the same images are explained ``--repeats`` times by each explainer in
turn (realtime_saliency, Grad-CAM, RISE with 1000 masks), alternating, so load from other
processes on shared cores hurts all alike; per explainer the median wall time and process CPU
time per image, and the ratios to realtime_saliency. Also on the same images: pointing game and
mean crop metric (the suites' metrics) of each explainer, and the wrong-class mean mask (the
masking model asked for the class after the predicted one). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.data.sources import ShapesData
from audit.data.training import TrainingContext, TrainingSet
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.base import METRICS, MetricInputs
from audit.seeding import derive_seed


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def score(metric: str, model, x, target, labels, maps, truth) -> float:
    inputs = MetricInputs(spec=INPUT_SPEC, x=x, x_attacked=x, model=model, attacked_model=model, target=target,
                          labels=labels, predicted=target, predicted_attacked=target, map=maps, map_attacked=maps,
                          truth=truth, sample_ids=tuple(range(len(x))), two_classes_per_image=False)
    result = METRICS.create(metric).compute(inputs)
    ok = [v for v, s in zip(result.values.tolist(), result.status, strict=True) if s in ("ok", "degenerate")]
    return sum(ok) / len(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the explainer's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a realtime_saliency parameter (JSON value), e.g. --set area=2.0; repeatable")
    args = parser.parse_args()

    model = load_reference()
    params = {} if args.steps is None else {"steps": args.steps}
    for item in args.set:
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    realtime = EXPLAINERS.create("realtime_saliency", params)
    training = TrainingSet(ShapesData("train", None, INPUT_SPEC.size))
    ctx = TrainingContext(INPUT_SPEC, derive_seed(args.seed, "explainer", "realtime_saliency", "train"),
                          training=training)
    train_wall, train_cpu, state = timed(lambda: realtime.train(model, ctx))

    batch = ShapesData("test", args.n, INPUT_SPEC.size).batch(range(args.n))
    x = INPUT_SPEC.normalize(batch.images)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    explainers = {"realtime_saliency": realtime, "gradcam": EXPLAINERS.create("gradcam"),
                  "rise_1000": EXPLAINERS.create("rise", {"n_masks": 1000})}
    ids = tuple(range(args.n))
    contexts = {name: ExplainContext(INPUT_SPEC, derive_seed(args.seed, "explainer", name), ids,
                                     trained=state if name == "realtime_saliency" else None)
                for name in explainers}
    walls: dict[str, list[float]] = {name: [] for name in explainers}
    cpus: dict[str, list[float]] = {name: [] for name in explainers}
    maps = {}
    for _ in range(args.repeats):
        for name, explainer in explainers.items():
            wall, cpu, maps[name] = timed(lambda e=explainer, n=name: e(model, x, target, contexts[n]))
            walls[name].append(wall / args.n)
            cpus[name].append(cpu / args.n)
    per_image = {name: statistics.median(v) for name, v in walls.items()}
    per_image_cpu = {name: statistics.median(v) for name, v in cpus.items()}
    wrong = realtime(model, x, (target + 1) % int(state["meta.num_classes"]), contexts["realtime_saliency"])
    quality = {name: {"pointing_game": score("pointing_game", model, x, target, batch.labels, m, batch.masks),
                      "crop": score("crop", model, x, target, batch.labels, m, batch.masks)}
               for name, m in maps.items()}
    # the yardstick itself: the ground-truth object mask scored as a map (its tight box)
    quality["truth_mask"] = {"crop": score("crop", model, x, target, batch.labels, batch.masks.float(), batch.masks)}
    result = {
        "n": args.n, "repeats": args.repeats, "threads": torch.get_num_threads(), "cpu": platform.processor(),
        "train_seconds_wall": round(train_wall, 2), "train_seconds_cpu": round(train_cpu, 2),
        "train_steps": realtime.params.steps, "params": params,
        "seconds_per_image_median": {k: round(v, 6) for k, v in per_image.items()},
        "cpu_seconds_per_image_median": {k: round(v, 6) for k, v in per_image_cpu.items()},
        "ratio_to_realtime": {k: round(v / per_image["realtime_saliency"], 1) for k, v in per_image.items()},
        "images_explained_before_training_pays_off_vs_rise_1000": round(
            train_wall / max(per_image["rise_1000"] - per_image["realtime_saliency"], 1e-12), 1),
        "quality": {k: {m: round(v, 4) for m, v in q.items()} for k, q in quality.items()},
        "wrong_class_mean_mask": round(float(wrong.mean()), 4),
        "true_class_mean_mask": round(float(maps["realtime_saliency"].mean()), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
