"""Where a suite's time goes, stage by stage, against the forward passes each stage needs.

    .venv/bin/python benchmarks/forward_budget.py suites/full.yaml [--n 16] [--project 256]
    .venv/bin/python benchmarks/forward_budget.py suites/full.yaml --n 4 --counts counts.json \
        --manifest reports/full/manifest.json

The second form counts on a small run (kept in ``counts.json``: a later call reads it instead of
running again) and puts the counts, scaled to the other run's n, beside the stage seconds of a
finished run of the same suite (its ``manifest.json``): where a large run's time goes, without
running it again.

Issue K item 3 asks for audits at n = 256 and for every stage to be near its forward count. This
runs a suite in this process (local backend, no cache, so every stage computes, the trainings
included; CPU only) with a counting hook on every outermost ``nn.Module`` call that is given an
image batch (the first (B, C, H, W) tensor among its arguments): the call adds B images to the
stage it runs in (the runner's timed stages ``explain X``, ``attack X``, ``metric X``; the
trainings ``prepare X``; anything else ``outside stages``: the preflight, each unit's predicted
labels and the report's sample curves), split into calls under ``no_grad`` (forward only) and
calls that record a graph (a backward pass usually follows: explainers' gradients, attacks' and
trainings' steps). A wrapper's call counts once (an inference copy, a gated model and its
discriminator, a masking model and the classifier stages it runs: one call).

After the run, on the suite's model and in this process's threads, two rates are measured (medians
of interleaved repeats, batches of 32 as the audit's CPU chunk): seconds per image of a pure
batched forward through the inference copy under ``no_grad`` (``forward_s_per_image``) and of a
forward + backward to the input through the model as given (``graph_s_per_image``). A stage's
*floor* is its images times those rates: the time its forwards and backwards alone take on this
machine, if nothing else cost. The trainings (``prepare X``) are counted but get no floor: most of
their calls are of networks of their own (a mask discriminator, a masking model), which the
classifier's rates would overstate. The ratio ``seconds / floor`` is ~1 for a stage that is its
forwards (below 1 where the network it calls is cheaper than the classifier: realtime_saliency's
masking model) and far above 1 where something else costs (Python loops, per-image work).

``--project N``: every stage but ``prepare`` scales with the audited images, the trainings do not;
the projected floor at N images is Σ prepare seconds + (N / n) × Σ the explain, attack and metric
stages' floors (calls outside the stages are left out, though some of them grow with n too) — the
time a run at N images cannot beat on this machine with this suite's settings, however well each
stage is written (up to the few stages that call a cheaper network). The counts are exact for
this run; scaling them assumes the per-image work does not depend on which images
(early-stopping attacks, e.g. ``iterative_targeted``, vary a little).

The last line is one JSON object. Measure on an idle machine: the rates and the stage times must
see the same machine.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as the CLI: the wait policy before torch loads (not when a test imports this)
    from audit.engine.threads import quiet_openmp_waits

    quiet_openmp_waits()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from audit.engine.prepare import Preparation, explainer_label  # noqa: E402
from audit.engine.progress import Progress  # noqa: E402
from audit.engine.run import run_suite  # noqa: E402
from audit.engine.runner import Runner  # noqa: E402
from audit.engine.suite import LoadedSuite, load_suite, validate_suite  # noqa: E402
from audit.engine.threads import resolve_threads, use_threads  # noqa: E402
from audit.engine.yaml_lines import YamlProblem, load_with_lines  # noqa: E402
from audit.errors import UserError  # noqa: E402
from audit.models.inference import CPU_CHUNK, inference_model  # noqa: E402
from audit.models.sources import load_model  # noqa: E402

OUTSIDE = "outside stages"


def stage_of(frame) -> str:
    """The stage a call runs in: the innermost timed stage on the Python stack."""
    timed, prepare_model, prepare_explainer = (Runner._timed.__code__, Preparation.model.__code__,
                                               Preparation.explainer_state.__code__)
    while frame is not None:
        code = frame.f_code
        if code is timed:
            return frame.f_locals["stage"]
        if code is prepare_model:
            return f"prepare {frame.f_locals['attack_id']}"
        if code is prepare_explainer:
            local = frame.f_locals
            return f"prepare {explainer_label(local['explainer_id'], local.get('setting'))}"
        frame = frame.f_back
    return OUTSIDE


class ForwardCounter:
    """Images through outermost module calls, per stage, with and without a recorded graph."""

    def __init__(self):
        self.depth = 0
        self.images: dict[str, dict[str, int]] = defaultdict(lambda: {"forward": 0, "graph": 0})
        self.handles = []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.handles = [register_module_forward_pre_hook(self._pre),
                        register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _pre(self, module, args):
        self.depth += 1
        if self.depth == 1:
            # the images need not come first: a masking model is called as (classifier, x, ...)
            batch = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4), None)
            if batch is not None:
                kind = "graph" if torch.is_grad_enabled() else "forward"
                self.images[stage_of(sys._getframe(1))][kind] += int(batch.shape[0])

    def _post(self, module, args, output):
        self.depth -= 1


def rates(model: torch.nn.Module, size: int, channels: int, repeats: int) -> tuple[float, float]:
    """(forward, forward + backward) seconds per image at the CPU chunk (see module docstring)."""
    x = torch.randn(CPU_CHUNK, channels, size, size, generator=torch.Generator().manual_seed(0))
    fast = inference_model(model)

    def forward():
        with torch.no_grad():
            fast(x)

    def graph():
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (grad,) = torch.autograd.grad(out[:, 0].sum(), xg)
        return grad

    times = {"forward": [], "graph": []}
    forward(), graph()
    for _ in range(repeats):  # interleaved: a change of load hits both alike
        for name, fn in (("forward", forward), ("graph", graph)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return (statistics.median(times["forward"]) / CPU_CHUNK, statistics.median(times["graph"]) / CPU_CHUNK)


def load_with_n(path: Path, n: int | None) -> LoadedSuite:
    """The suite, with ``data.n`` replaced by ``n`` (validated as if the file said so)."""
    if n is None:
        return load_suite(path)
    try:
        data, lines = load_with_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YamlProblem):
        return load_suite(path)  # its own one-line message
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data["data"]["n"] = n
    return validate_suite(data, lines, Path(path), str(path))


def count_run(loaded: LoadedSuite) -> tuple[dict, dict[str, float], int, float]:
    """Run the suite with the counter: (images per stage, stage seconds, images audited, wall s)."""
    with tempfile.TemporaryDirectory() as out, ForwardCounter() as counter:
        started = time.perf_counter()
        result = run_suite(loaded, Path(out) / "run", Progress(quiet=True), cache_dir=None)
        wall = time.perf_counter() - started
    n = len({r["sample"] for r in result.records})  # the images audited (a folder may hold fewer than n)
    return {k: dict(v) for k, v in counter.images.items()}, dict(result.timings), n, wall


def manifest_run(path: Path) -> tuple[dict[str, float], int]:
    """(stage seconds, images audited) of a finished run, from its manifest.json."""
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    found = re.search(r"\bn=(\d+)", manifest["data"]["description"])
    if found is None:
        raise SystemExit(f"{path}: the data description names no n= ({manifest['data']['description']!r})")
    return manifest["timings_s"], int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--n", type=int, default=None, help="audited images of the counting run "
                        "(default: the suite's)")
    parser.add_argument("--project", type=int, default=None, help="project the floor to this many images")
    parser.add_argument("--repeats", type=int, default=20, help="repeats of each rate measurement")
    parser.add_argument("--counts", type=Path, default=None, help="a JSON file: read the counts from it "
                        "if it exists (no counting run), else write them to it")
    parser.add_argument("--manifest", type=Path, default=None, help="a finished run's manifest.json of "
                        "the same suite: its stage seconds and n replace the counting run's, the counts "
                        "are scaled to its n")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    use_threads(resolve_threads(None))
    try:
        loaded = load_with_n(args.suite, args.n)
        if loaded.suite.device not in ("cpu", "auto") or torch.cuda.is_available():
            raise UserError("forward_budget measures CPU runs; run it where torch sees no GPU "
                            "(CUDA_VISIBLE_DEVICES=) with device: cpu or auto")
        if args.counts is not None and args.counts.exists():
            saved = json.loads(args.counts.read_text(encoding="utf-8"))
            images, timings, n, wall = saved["images"], saved["timings_s"], saved["n"], saved["wall_s"]
        else:
            images, timings, n, wall = count_run(loaded)
            if args.counts is not None:
                args.counts.write_text(json.dumps({"suite": str(args.suite), "n": n, "wall_s": wall,
                                                   "images": images, "timings_s": timings}))
        model = load_model(loaded.suite.model, loaded.resolve, torch.device("cpu"), loaded.suite.seed)
    except UserError as exc:
        raise SystemExit(f"forward_budget: {exc}") from None
    counted_n = n
    if args.manifest is not None:
        timings, n = manifest_run(args.manifest)
        wall = timings.get("total", float("nan"))
    forward_s, graph_s = rates(model.model, model.spec.size, len(model.spec.mean), args.repeats)

    def scale(stage: str) -> float:
        # the trainings do not grow with the audited images; calls outside the stages are shown
        # as counted (mostly the report's sample curves, a fixed number of images)
        return 1.0 if stage.startswith("prepare") or stage == OUTSIDE else n / counted_n

    stages = sorted(set(images) | {s for s in timings if s.split(" ")[0] in ("explain", "attack", "metric", "prepare")})
    rows = []
    for stage in stages:
        counts = images.get(stage, {"forward": 0, "graph": 0})
        forward, graph = round(counts["forward"] * scale(stage)), round(counts["graph"] * scale(stage))
        seconds = timings.get(stage)
        # a training's calls are mostly of networks of its own (a discriminator, a masking model),
        # which the classifier's rates would overstate: counted, but given no floor
        floor = None if stage.startswith("prepare") else forward * forward_s + graph * graph_s
        rows.append({"stage": stage, "seconds": seconds, "forward_images": forward, "graph_images": graph,
                     "floor_s": floor, "ratio": (seconds / floor) if seconds is not None and floor else None})
    rows.sort(key=lambda r: -(r["seconds"] or 0.0))
    source = f"seconds from {args.manifest}, counts from a run at n = {counted_n} scaled" if args.manifest \
        else "seconds and counts from this run"
    print(f"suite {args.suite} at n = {n} ({source}): wall {wall:.1f} s, compute {timings.get('compute', 0):.1f} s; "
          f"threads {torch.get_num_threads()}; pure forward {forward_s * 1e3:.3f} ms/image, "
          f"forward + backward {graph_s * 1e3:.3f} ms/image (batches of {CPU_CHUNK})")
    print(f"{'stage':44}{'seconds':>9}{'forward imgs':>14}{'graph imgs':>12}{'floor s':>9}{'ratio':>7}")
    for r in rows:
        if (r["seconds"] or 0.0) < 0.05 and not r["forward_images"] + r["graph_images"]:
            continue  # bookkeeping stages (kept in the JSON)
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        floor_s = "-" if r["floor_s"] is None else f"{r['floor_s']:.1f}"
        print(f"{r['stage'][:44]:44}{seconds:>9}{r['forward_images']:14d}{r['graph_images']:12d}"
              f"{floor_s:>9}{ratio:>7}")
    # the trainings at their measured seconds (fixed: they do not grow with n, and are cached);
    # calls outside the stages are left out: the floor stays a lower bound
    fixed = sum(r["seconds"] or 0.0 for r in rows if r["stage"].startswith("prepare"))
    scaled = sum(r["floor_s"] or 0.0 for r in rows if r["stage"].split(" ")[0] in ("explain", "attack", "metric"))
    staged = sum(r["seconds"] or 0.0 for r in rows if r["stage"] != OUTSIDE)
    floor = fixed + scaled
    summary = {"suite": str(args.suite), "n": n, "counted_n": counted_n, "wall_s": round(wall, 1),
               "stage_seconds": round(staged, 1), "floor_s": round(floor, 1),
               "stage_seconds_over_floor": round(staged / floor, 3) if floor else None,
               "forward_s_per_image": forward_s, "graph_s_per_image": graph_s,
               "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
               "prepare_s": round(fixed, 1), "per_image_floor_s": round(scaled / n, 4),
               "stages": rows}
    if args.project is not None:
        projected = fixed + scaled * args.project / n
        summary["projected_n"] = args.project
        summary["projected_floor_s"] = round(projected, 1)
        print(f"floor at n = {args.project}: {fixed:.0f} s of trainings (as measured) + {args.project} x "
              f"{scaled / n:.2f} s per image = {projected:.0f} s ({projected / 60:.1f} min): no run of this "
              "suite at that n is faster on this machine")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
