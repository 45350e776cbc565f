"""Run a validated suite: load, preflight, compute every cell, write the report files.

For each attack the attacked setting is prepared once; images then stream through in batches.
Per batch the clean maps of each explainer are computed once and shared by every attack (they
do not depend on it); the attacked setting's maps are computed with the same explainer seed
(common random numbers). A failure inside an explainer or metric marks the affected records
``error`` and the run goes on; the exit code then says the run is incomplete.
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.data.sources import DataBatch, Dataset, load_data
from audit.engine.plan import NO_EXPLAINER, plan_cells
from audit.engine.progress import Progress
from audit.engine.suite import LoadedSuite
from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK, UserError
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.models.sources import LoadedModel, load_model
from audit.seeding import derive_seed


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
    notes: list[str] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def preflight(loaded: LoadedModel, data: Dataset, device: torch.device) -> int:
    """One real batch through the model: finite 2-D logits with a class for every label."""
    batch = data.batch(range(min(len(data), 4)))
    x = loaded.spec.normalize(batch.images.to(device))
    try:
        with torch.no_grad():
            out = loaded.model(x)
    except Exception as exc:
        raise UserError(f"the model failed on a batch of shape {tuple(x.shape)}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; check model.input "
                        "(size) and the model source") from None
    if not isinstance(out, torch.Tensor):
        raise UserError(f"the model returned {type(out).__name__}, not a tensor of logits; wrap it so "
                        "forward() returns a (batch, classes) tensor")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise UserError(f"the model returned shape {tuple(out.shape)} for {x.shape[0]} images; a "
                        "classifier must return (batch, classes) logits")
    if not torch.isfinite(out).all():
        raise UserError("the model returned NaN or infinite logits on clean images; check its weights "
                        "and model.input (mean/std)")
    classes = int(out.shape[1])
    if len(data.class_names) > classes:
        raise UserError(f"the data has {len(data.class_names)} classes but the model returns {classes} "
                        "logits; use a matching model, set model.num_classes, or map classes with "
                        "data.labels")
    top_label = max((int(v) for v in batch.labels.tolist()), default=-1)
    if top_label >= classes:
        raise UserError(f"label {top_label} is outside the model's {classes} classes; fix data.labels")
    return classes


class Runner:
    def __init__(self, loaded: LoadedSuite, out: Path, progress: Progress | None = None):
        self.loaded = loaded
        self.suite = loaded.suite
        self.out = out
        self.progress = progress or Progress(quiet=True)
        self.timings: dict[str, float] = defaultdict(float)
        self.records: list[dict] = []

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        started = time.perf_counter()
        self.device = pick_device(self.suite.device)
        self.model = load_model(self.suite.model, self.loaded.resolve, self.device)
        self.data = load_data(self.suite.data, self.loaded.resolve, self.model.spec, self.suite.seed)
        if self.suite.target == "label" and not self.data.class_names:
            raise UserError("target: label needs labelled data")
        self.num_classes = preflight(self.model, self.data, self.device)
        self.explainers: dict[str, Explainer] = {
            item.id: EXPLAINERS.create(item.plugin, item.params) for item in self.suite.explainers}
        self.attacks: dict[str, Attack] = {
            item.id: ATTACKS.create(item.plugin, item.params) for item in self.suite.attacks}
        self.metrics: dict[str, Metric] = {
            item.id: METRICS.create(item.plugin, item.params) for item in self.suite.metrics}
        self.data_digest = self.data.digest()
        self.timings["setup"] += time.perf_counter() - started

    # -- per batch -----------------------------------------------------------------------------
    def _record(self, attack: str, explainer: str, metric: str, ids, result: MetricResult) -> None:
        for sample, value, status, reason in zip(ids, result.values.tolist(), result.status, result.reasons):
            if status in ("ok", "degenerate") and not math.isfinite(value):
                status, reason = "error", "metric returned a non-finite value"
            record = {"attack": attack, "explainer": explainer, "metric": metric, "sample": int(sample),
                      "value": float(value) if math.isfinite(value) else None, "status": status}
            if reason:
                record["reason"] = reason
            self.records.append(record)

    def _timed(self, stage: str, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[stage] += time.perf_counter() - started

    def _clean_map(self, cache: dict, explainer_id: str, x, target, ids) -> torch.Tensor:
        if explainer_id not in cache:
            explainer = self.explainers[explainer_id]
            ctx = ExplainContext(self.model.spec, derive_seed(self.suite.seed, "explainer", explainer_id),
                                 tuple(ids), self.device)
            cache[explainer_id] = self._timed(f"explain {explainer_id}", explainer,
                                              self.model.model, x, target, ctx)
        return cache[explainer_id]

    def run_batch(self, attack_id: str, attacked_model, batch: DataBatch, clean_maps: dict) -> None:
        attack = self.attacks[attack_id]
        model = self.model.model
        ids = batch.ids
        n = len(ids)
        x = self.model.spec.normalize(batch.images.to(self.device))
        labels = batch.labels.to(self.device)
        with torch.no_grad():
            predicted = model(x).argmax(dim=1)
        target = labels if self.suite.target == "label" else predicted
        attack_ctx = AttackContext(self.model.spec, derive_seed(self.suite.seed, "attack", attack_id),
                                   tuple(ids), self.device)
        try:
            x_att = self._timed(f"attack {attack_id}", attack.perturb, model, x, target, attack_ctx).detach()
            with torch.no_grad():
                logits_att = attacked_model(x_att)
            if not torch.isfinite(logits_att).all():
                raise RuntimeError("the attacked model returned non-finite logits")
            predicted_att = logits_att.argmax(dim=1)
        except Exception as exc:  # the whole attack column fails for this batch
            reason = f"attack {attack_id!r} failed: {type(exc).__name__}: {exc}"
            for cell in self.cells_of_attack(attack_id):
                self._record(*cell, ids, MetricResult.error(n, reason))
            return

        def inputs(map_clean=None, map_att=None, metric_id="", explainer_id=NO_EXPLAINER) -> MetricInputs:
            return MetricInputs(
                spec=self.model.spec, x=x, x_attacked=x_att, model=model, attacked_model=attacked_model,
                target=target, labels=labels, predicted=predicted, predicted_attacked=predicted_att,
                map=map_clean, map_attacked=map_att, truth=None if batch.masks is None
                else batch.masks.to(self.device),
                seed=derive_seed(self.suite.seed, "metric", attack_id, explainer_id, metric_id),
                sample_ids=tuple(ids), device=self.device)

        for metric_id, metric in self.metrics.items():
            if not metric.per_explainer():
                self._record(attack_id, NO_EXPLAINER, metric_id, ids,
                             self._compute(metric_id, metric, inputs(metric_id=metric_id)))

        for explainer_id, explainer in self.explainers.items():
            metric_ids = [m for m, metric in self.metrics.items() if metric.per_explainer()]
            if not metric_ids:
                continue
            try:
                map_clean = self._clean_map(clean_maps, explainer_id, x, target, ids)
                if attack.kind == "identity":
                    map_att = map_clean
                else:
                    ctx = ExplainContext(self.model.spec,
                                         derive_seed(self.suite.seed, "explainer", explainer_id),
                                         tuple(ids), self.device)
                    map_att = self._timed(f"explain {explainer_id}", explainer, attacked_model, x_att,
                                          target, ctx)
            except Exception as exc:
                reason = f"explainer {explainer_id!r} failed: {type(exc).__name__}: {exc}"
                for metric_id in metric_ids:
                    self._record(attack_id, explainer_id, metric_id, ids, MetricResult.error(n, reason))
                continue
            for metric_id in metric_ids:
                metric = self.metrics[metric_id]
                result = self._compute(metric_id, metric, inputs(map_clean, map_att, metric_id, explainer_id))
                self._record(attack_id, explainer_id, metric_id, ids, result)

    def _compute(self, metric_id: str, metric: Metric, inputs: MetricInputs) -> MetricResult:
        if metric.compares == "map_truth" and inputs.truth is None:
            return MetricResult.skipped(inputs.batch_size, "the data has no ground-truth masks")
        try:
            result = self._timed(f"metric {metric_id}", metric.compute, inputs)
        except Exception as exc:
            return MetricResult.error(inputs.batch_size, f"metric {metric_id!r} failed: "
                                                         f"{type(exc).__name__}: {exc}")
        if len(result.status) != inputs.batch_size:
            return MetricResult.error(inputs.batch_size, f"metric {metric_id!r} returned "
                                                         f"{len(result.status)} values for "
                                                         f"{inputs.batch_size} images")
        return result

    def cells_of_attack(self, attack_id: str):
        return [c.key for c in plan_cells(self.suite) if c.attack == attack_id]

    # -- whole run -----------------------------------------------------------------------------
    def compute(self) -> None:
        batch_size = self.suite.data.batch_size
        n_batches = math.ceil(len(self.data) / batch_size)
        clean_maps: dict[int, dict] = defaultdict(dict)  # batch index -> explainer id -> maps
        for attack_id, attack in self.attacks.items():
            started = time.perf_counter()
            ctx = AttackContext(self.model.spec, derive_seed(self.suite.seed, "attack", attack_id),
                                (), self.device)
            try:
                attacked_model = attack.prepare(self.model.model, ctx)
            except Exception as exc:
                self.timings[f"prepare {attack_id}"] += time.perf_counter() - started
                reason = f"attack {attack_id!r} could not be prepared: {type(exc).__name__}: {exc}"
                self.progress.log(reason)
                for batch in self.data.batches(batch_size):
                    for cell in self.cells_of_attack(attack_id):
                        self._record(*cell, batch.ids, MetricResult.error(len(batch.ids), reason))
                continue
            self.timings[f"prepare {attack_id}"] += time.perf_counter() - started
            with self.progress.task(f"attack {attack_id}", n_batches) as step:
                for index, batch in enumerate(self.data.batches(batch_size)):
                    self.run_batch(attack_id, attacked_model, batch, clean_maps[index])
                    step()


def run_suite(loaded: LoadedSuite, out: Path, progress: Progress | None = None) -> RunResult:
    """Run ``loaded`` and write results.jsonl, summary.csv, report.md and manifest.json to ``out``."""
    from audit.engine.gates import evaluate_gates
    from audit.report.manifest import build_manifest
    from audit.report.summary import summarize
    from audit.report.writer import write_outputs

    progress = progress or Progress(quiet=True)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder path (it is created if missing)")
    wall_started = time.perf_counter()
    runner = Runner(loaded, out, progress)
    runner.setup()
    progress.log(f"model {runner.model.source} on {runner.device}; data {runner.data.description}")
    compute_started = time.perf_counter()
    runner.compute()
    runner.timings["compute"] = time.perf_counter() - compute_started

    started = time.perf_counter()
    higher = {m.id: METRICS.get(m.plugin).higher_is_better for m in loaded.suite.metrics}
    summary = summarize(runner.records, plan_cells(loaded.suite), higher, loaded.suite.seed)
    gates = evaluate_gates(loaded.suite.gates, summary)
    runner.timings["summarize"] = time.perf_counter() - started
    errors = any(r["status"] == "error" for r in runner.records)
    failed = any(not g.passed for g in gates)
    exit_code = EXIT_INCOMPLETE if errors else (EXIT_GATE_FAILED if failed else EXIT_OK)
    runner.timings["total"] = time.perf_counter() - wall_started
    result = RunResult(runner.records, summary, gates, dict(runner.timings), out, exit_code,
                       runner.model, runner.data_digest)
    manifest = build_manifest(loaded, result, runner.data.description, str(runner.device),
                              platform.python_version())
    write_outputs(out, result, manifest, loaded)
    return result
