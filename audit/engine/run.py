"""Run a validated suite: load, preflight, compute every unit, write the report files.

The work itself is in ``runner.py`` (what a unit computes) and ``backends.py`` (where units
run); this module orchestrates: setup and preflight before anything is written, attacked
settings prepared once, units dispatched, records put in plan order, summary, gates, outputs.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from audit.engine.backends import BACKENDS, run_local, run_processes, run_ray
from audit.engine.cache import Cache
from audit.engine.output import check_out_folder
from audit.engine.plan import plan_cells
from audit.engine.progress import Progress
from audit.engine.runner import Runner, order_records, preflight, preflight_explainers, run_batch_sizes
from audit.engine.suite import LoadedSuite
from audit.engine.threads import available_cores, resolve_threads
from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK, UserError
from audit.metrics.base import METRICS
from audit.models.sources import LoadedModel


@dataclass
class RunResult:
    records: list[dict]
    summary: list[dict]
    gates: list
    timings: dict[str, float]
    out: Path
    exit_code: int
    model: LoadedModel | None = None
    data_digest: str = ""
    verdicts: list = field(default_factory=list)  # CheckVerdict per (check, row): the suite's checks:


def run_suite(loaded: LoadedSuite, out: Path, progress: Progress | None = None, *,
              cache_dir: Path | None = None, workers: int = 1, backend: str = "local",
              address: str | None = None, gpus_per_task: float = 0.0, strict: bool = False,
              threads: int | None = None) -> RunResult:
    """Run ``loaded`` and write results.jsonl, summary.csv, manifest.json, report.md, junit.xml and
    report.html to ``out`` (and verdicts.csv when the suite has ``checks:``).

    The exit code: 3 when a cell errored, else 1 when a gate failed or a check's verdict is
    ``fail`` (with ``strict`` also ``warn`` or ``skipped``: :mod:`audit.engine.verdicts`), else 0.

    Bad input raises :class:`UserError` before anything is written. ``cache_dir``: the cache
    folder, or ``None`` for no cache (the CLI passes :func:`default_cache_dir` unless told).
    ``threads``: the CPU thread budget (``--threads``; default
    :func:`audit.engine.threads.default_threads`), which ``workers > 1`` share equally; the
    caller sets this process's own torch threads (the CLI does, before any work).
    """
    from audit.engine.gates import evaluate_gates
    from audit.engine.render import render_run_dir
    from audit.engine.samples import SAMPLE_IMAGES, collect_samples, write_samples
    from audit.engine.verdicts import evaluate_checks, verdicts_failed
    from audit.report.manifest import build_manifest
    from audit.report.summary import summarize
    from audit.report.writer import write_data

    progress = progress or Progress(quiet=True)
    check_out_folder(out)
    if workers < 1:
        raise UserError("--workers must be at least 1")
    threads = resolve_threads(threads)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
    if backend != "ray" and (address or gpus_per_task):
        raise UserError("--address and --gpus-per-task are Ray options; add --backend ray")
    wall_started = time.perf_counter()
    cache = Cache(cache_dir)
    runner = Runner(loaded, cache, log=progress.log)
    preflight(runner.model, runner.data, runner.device,
              run_batch_sizes(loaded.suite, runner.explainers, len(runner.data), runner.device))
    explainer_details = preflight_explainers(runner.explainers, runner.model, runner.data, runner.device)
    progress.log(f"model {runner.model.source} on {runner.device}; data {runner.data.description}")
    if threads > available_cores():
        # said, not refused: a user may know better (hyper-threads outside the affinity mask)
        progress.log(f"--threads {threads} is more than the {available_cores()} cores this process may use: "
                     "the threads will wait for each other; fewer run faster")
    for note in runner.model.notes:  # what loading the weights did (checkpoint key, prefixes, …)
        progress.log(note)

    if runner.training is not None:
        progress.log(f"training data {runner.training.description}")
    compute_started = time.perf_counter()
    runner.preparation.prepare_all()  # once, here: workers get the prepared states, never train
    units = runner.units()
    if len(runner.data):  # keep the pictured images' maps as the cells compute them (local backend)
        runner.picture_ids = tuple(runner.data.batch(range(min(SAMPLE_IMAGES, len(runner.data)))).ids)
    with progress.task(f"{len(units)} units", len(units)) as step:
        if backend == "ray":
            records = run_ray(runner, units, step, address=address, gpus_per_task=gpus_per_task)
        elif workers > 1:
            records = run_processes(runner, units, workers, step, threads=threads)
        else:
            records = run_local(runner, units, step)
    records = order_records(records, loaded.suite)
    runner.timings["compute"] = time.perf_counter() - compute_started

    started = time.perf_counter()
    higher = {m.id: METRICS.get(m.plugin).higher_is_better for m in loaded.suite.metrics}
    binary = {m.id: METRICS.get(m.plugin).binary for m in loaded.suite.metrics}
    summary = summarize(records, plan_cells(loaded.suite), higher, loaded.suite.seed, binary)
    gates = evaluate_gates(loaded.suite.gates, summary)
    verdicts = evaluate_checks(loaded.suite.checks, summary, {m.id: m.plugin for m in loaded.suite.metrics})
    runner.timings["summarize"] = time.perf_counter() - started
    errors = any(r["status"] == "error" for r in records)
    failed = any(not g.passed for g in gates) or verdicts_failed(verdicts, strict)
    exit_code = EXIT_INCOMPLETE if errors else (EXIT_GATE_FAILED if failed else EXIT_OK)
    runner.timings["total"] = time.perf_counter() - wall_started
    result = RunResult(records, summary, gates, dict(runner.timings), out, exit_code,
                       runner.model, runner.data_digest, verdicts)
    manifest = build_manifest(loaded, result, runner.data.description, str(runner.device),
                              platform.python_version())
    manifest["training_data"] = None if runner.training is None else {
        "description": runner.training.description, "digest": runner.training.digest}
    manifest["explainers"] = explainer_details  # what each decided about the model (Grad-CAM's layer)
    manifest["prepared"] = runner.preparation.summaries()  # e.g. a manipulation's training curves
    manifest["backend"] = {"name": backend, "workers": workers, "address": address, "threads": threads,
                           # how idle OpenMP threads waited (audit.engine.threads): as the runtime read it
                           "openmp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}
    manifest["check"] = {"strict": strict}  # how the checks' verdicts set the exit code
    manifest["cache"] = {"root": str(cache.root) if cache.root else None, "hits": cache.hits,
                         "misses": cache.misses}
    manifest["data"]["class_names"] = [str(c) for c in (runner.data.class_names or ())]
    write_data(out, result, manifest)
    started = time.perf_counter()
    try:  # the pictures' data: a failure costs the pictures, never the run
        samples = collect_samples(runner, log=progress.log)
    except Exception as exc:
        progress.log(f"report samples left out: {type(exc).__name__}: {exc}")
        samples = {}
    write_samples(out / "samples.npz", samples)
    samples_s = time.perf_counter() - started
    progress.log(f"report samples drawn in {samples_s:.1f} s")
    render_run_dir(out)
    return result
