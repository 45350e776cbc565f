"""Compute the audit's records, one unit of work at a time.

A unit is (batch index, explainer id) — or (batch index, '-') for the model-level metrics — and
covers every attack. Within a unit the clean map of the batch is computed once and shared by
all attacks; the attacked setting's map uses the same explainer seed (common random numbers).
Every random draw derives from the suite seed and the identity of what draws it, so a unit
gives the same records in any process, in any order, on any backend.

Attacks are prepared once per run by :mod:`audit.engine.prepare` (the driver prepares them;
workers import the shipped states). The attacked images of an (attack, batch) are computed
once and shared by every explainer's unit (cached like maps).

Finished (cell, batch) results and maps are cached by content keys (see ``cache.py``), which is
what makes a killed run resume where it stopped. A failure inside an attack, explainer or
metric marks the affected records ``error`` and the run goes on.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.data.sources import DataBatch, Dataset, load_data, load_training
from audit.data.training import TrainingSet
from audit.engine.cache import Cache, code_digest, make_key, package_digest
from audit.engine.device import pick_device, reproducible
from audit.engine.plan import NO_EXPLAINER, plan_cells
from audit.engine.prepare import Preparation
from audit.engine.suite import LoadedSuite, training_plugins
from audit.errors import UserError
from audit.explainers._graph import script_modules
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, Unsupported
from audit.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from audit.models.contract import check_deterministic, check_output
from audit.models.inference import forward_chunk
from audit.models.sources import LoadedModel, load_model
from audit.seeding import derive_seed
from audit.testing import LOGIT_ATOL


@dataclass(frozen=True)
class Unit:
    batch: int
    group: str  # an explainer id, or '-' for the model-level metrics


def preflight(loaded: LoadedModel, data: Dataset, device: torch.device, batch_sizes: Sequence[int] = ()) -> int:
    """One real batch through the model, twice: finite 2-D logits with a class for every label,
    bit-identical both times (eval-mode determinism), and logits rather than probabilities or
    log-probabilities unless ``model.output`` says so (:mod:`audit.models.contract`).

    A model with TorchScript in it is also run at every size of ``batch_sizes`` (the batch and
    chunk sizes the run will use; see :func:`run_batch_sizes`): a ``torch.jit.trace`` records the
    batch size it was traced at wherever the code turned a shape into a number, and then fails —
    or broadcasts — at any other size."""
    batch = data.batch(range(min(len(data), 4)))
    x = loaded.spec.normalize(batch.images.to(device))
    try:
        with torch.no_grad():
            out = loaded.model(x)
            again = loaded.model(x) if isinstance(out, torch.Tensor) else out
    except Exception as exc:
        raise UserError(f"the model failed on a batch of shape {tuple(x.shape)}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; check model.input "
                        "(size, and as many mean/std values as the model has input channels) and the "
                        "model source") from None
    if not isinstance(out, torch.Tensor):
        raise UserError(f"the model returned {type(out).__name__}, not a tensor of logits; wrap it so "
                        "forward() returns a (batch, classes) tensor")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise UserError(f"the model returned shape {tuple(out.shape)} for {x.shape[0]} images; a "
                        "classifier must return (batch, classes) logits")
    if not torch.isfinite(out).all():
        raise UserError("the model returned NaN or infinite logits on clean images; check its weights "
                        "and model.input (mean/std)")
    check_deterministic(out, again)
    check_output(out, loaded.output)
    if batch_sizes and script_modules(loaded.model):
        _check_batch_sizes(loaded.model, x, out, sorted(set(batch_sizes)))
    classes = int(out.shape[1])
    if len(data.class_names) > classes:
        raise UserError(f"the data has {len(data.class_names)} classes but the model returns {classes} "
                        "logits; use a matching model, set model.num_classes, or map classes with "
                        "data.labels")
    top_label = max((int(v) for v in batch.labels.tolist()), default=-1)
    if top_label >= classes:
        raise UserError(f"label {top_label} is outside the model's {classes} classes; fix data.labels")
    return classes


def _check_batch_sizes(model: nn.Module, x: torch.Tensor, out: torch.Tensor, sizes: list[int]) -> None:
    """The model on its preflight images tiled to each size: (size, classes) logits whose rows
    agree with the preflight batch's (float32 tolerance: kernels differ by batch size)."""
    for size in sizes:
        if size == x.shape[0]:
            continue
        tiled = x.repeat((size + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:size]
        problem = None
        try:
            with torch.no_grad():
                got = model(tiled)
        except Exception as exc:
            problem = f"fails ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})"
        else:
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (size, out.shape[1]):
                problem = f"returns shape {tuple(getattr(got, 'shape', ()))}"
            else:
                n = min(size, out.shape[0])
                scale = float(out.abs().max().clamp_min(1.0))
                if not torch.allclose(got[:n], out[:n], rtol=0.0, atol=LOGIT_ATOL * scale):
                    problem = "gives other logits for the same images"
        if problem:
            raise UserError(f"the TorchScript model {problem} on a batch of {size} images (the run uses "
                            f"batches of {', '.join(map(str, sizes))}); a model saved with torch.jit.trace "
                            "keeps the batch size it was traced at: save it with torch.jit.script, or give "
                            "its Python code as source: import:pkg.module:callable")


def run_batch_sizes(suite, explainers: dict[str, Explainer], n_images: int, device: torch.device) -> list[int]:
    """Batch sizes the model will see in a run: one image, the data batch, the device's forward and
    gradient chunks (:func:`audit.models.inference.forward_chunk`) and any chunk an explainer's
    parameters set (``batch_size``, ``internal_batch_size``). Smaller remainders occur too."""
    sizes = {1, min(n_images, suite.data.batch_size), forward_chunk(device), forward_chunk(device, gradients=True)}
    for explainer in explainers.values():
        for key in ("batch_size", "internal_batch_size"):
            value = getattr(explainer.params, key, None)
            if isinstance(value, int):
                sizes.add(value)
    return sorted(sizes)


def preflight_explainers(explainers: dict[str, Explainer], loaded: LoadedModel, data: Dataset,
                         device: torch.device) -> dict[str, dict]:
    """Each explainer's :meth:`Explainer.check_model` on one real batch (the model in eval mode):
    what it decided, by explainer id, for manifest.json; :class:`UserError` (exit 2, nothing
    written) naming the explainer where one cannot explain the model correctly."""
    batch = data.batch(range(min(len(data), 2)))
    x = loaded.spec.normalize(batch.images.to(device))
    details = {}
    for explainer_id, explainer in explainers.items():
        try:
            details[explainer_id] = explainer.check_model(loaded.model, x)
        except ValueError as exc:
            raise UserError(f"explainer {explainer_id!r} cannot explain {loaded.source}: {exc}") from None
    return details


class Runner:
    """Everything a unit of work needs: model, data, plugins, attacked models, cache."""

    def __init__(self, loaded: LoadedSuite, cache: Cache, *, model: LoadedModel | None = None,
                 data: Dataset | None = None, data_digest: str | None = None,
                 training: TrainingSet | None = None, shipped: dict | None = None,
                 log=None):
        self.loaded = loaded
        self.suite = loaded.suite
        self.cache = cache
        self.timings: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        self.device = pick_device(self.suite.device)
        reproducible(self.device)
        self.model = model or load_model(self.suite.model, loaded.resolve, self.device, self.suite.seed)
        self.model.model.to(self.device).eval()  # a worker's copy may come from another device
        self.data = data or load_data(self.suite.data, loaded.resolve, self.model.spec, self.suite.seed)
        if self.suite.target == "label" and not self.data.class_names:
            raise UserError("target: label needs labelled data")
        self.items = {"explainers": {i.id: i for i in self.suite.explainers},
                      "attacks": {i.id: i for i in self.suite.attacks},
                      "metrics": {i.id: i for i in self.suite.metrics}}
        self.explainers: dict[str, Explainer] = {
            i.id: EXPLAINERS.create(i.plugin, i.params) for i in self.suite.explainers}
        self.attacks: dict[str, Attack] = {i.id: ATTACKS.create(i.plugin, i.params) for i in self.suite.attacks}
        self.metrics: dict[str, Metric] = {i.id: METRICS.create(i.plugin, i.params) for i in self.suite.metrics}
        self.data_digest = data_digest or self.data.digest()  # workers get the driver's: no re-hashing
        if training is None and shipped is None and training_plugins(self.suite):
            train = load_training(self.suite.data, loaded.resolve, self.model.spec, self.suite.seed)
            training = TrainingSet(train) if train is not None else None
        self.training = training  # workers get the driver's (with its digest)
        # what every cache key holds, built once: each item's id, plugin and *resolved* parameters
        # (defaults filled in, so `rise: {}` and `rise: {n_masks: <default>}` share cells), its
        # plugin source, and the run
        plugins = {"explainers": self.explainers, "attacks": self.attacks, "metrics": self.metrics}
        registries = {"explainers": EXPLAINERS, "attacks": ATTACKS, "metrics": METRICS}
        self._item_keys = {(section, i.id): {"id": i.id, "plugin": i.plugin,
                                             "params": plugins[section][i.id].params.model_dump(mode="json"),
                                             "code": code_digest(registries[section].get(i.plugin))}
                           for section, items in self.items.items() for i in items.values()}
        # an attack that starts from another's prepared model (Attack.builds_on) depends on that
        # attack's parameters too: its key holds the other's (validation refuses cycles)
        flat = dict(self._item_keys)

        def with_base(attack_id: str, seen: tuple[str, ...] = ()) -> dict:
            key = dict(flat[("attacks", attack_id)])
            base = self.attacks[attack_id].builds_on()
            if base in self.attacks and base not in seen:
                key["builds_on"] = with_base(base, seen + (attack_id,))
            return key

        for attack_id in self.attacks:
            self._item_keys[("attacks", attack_id)] = with_base(attack_id)
        self._run_key = {"seed": self.suite.seed, "target": self.suite.target, "device": self.device.type,
                         "model": self.model.digest, "data": self.data_digest, "code": package_digest()}
        if self.training is not None:  # what a plugin learned, so every cell and map, depends on it
            self._run_key["training"] = self.training.digest
        self.preparation = Preparation(
            self.attacks, self.model.model, self.model.spec, self.device, self.suite.seed,
            {a: self._item_keys[("attacks", a)] for a in self.attacks}, self._run_key, cache, self.training,
            self.timings, shipped=shipped, log=log, explainers=self.explainers,
            explainer_keys={e: self._item_keys[("explainers", e)] for e in self.explainers})
        self._inputs: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}  # this batch's attacked images
        # the report's pictures (audit.engine.samples) show the first images of the data; a run
        # that computes their maps and attacked inputs in this process keeps those rows here, so
        # the pictures show exactly what the cells scored and nothing is explained twice
        self.picture_ids: tuple[int, ...] = ()  # set by the driver; empty: keep nothing
        self.pictures: dict[tuple, torch.Tensor] = {}
        # this batch's maps by cache key: a reference explainer's map (explainer_agreement) is
        # computed once per batch even with --cache none
        self._maps: dict[str, torch.Tensor] = {}
        self._maps_ids: tuple[int, ...] = ()
        self.timings["setup"] += time.perf_counter() - started

    # -- plan ----------------------------------------------------------------------------------
    def n_batches(self) -> int:
        return math.ceil(len(self.data) / self.suite.data.batch_size)

    def units(self) -> list[Unit]:
        groups = [g for g in (NO_EXPLAINER, *self.explainers) if self.metric_ids(g)]
        return [Unit(b, g) for b in range(self.n_batches()) for g in groups]

    def metric_ids(self, group: str, attack_id: str | None = None) -> list[str]:
        """The metrics of a unit's group (an explainer id or '-'), under ``attack_id`` if given,
        as the plan has them (:func:`plan_cells`: a metric's ``attacks:`` / ``explainers:``)."""
        per_explainer = group != NO_EXPLAINER
        return [m for m, metric in self.metrics.items() if metric.per_explainer() == per_explainer
                and self.items["metrics"][m].applies(attack_id, group if per_explainer else None)]

    def batch(self, index: int) -> DataBatch:
        size = self.suite.data.batch_size
        return self.data.batch(range(index * size, min(len(self.data), (index + 1) * size)))

    # -- keys ----------------------------------------------------------------------------------
    def _item(self, section: str, item_id: str):
        return NO_EXPLAINER if item_id == NO_EXPLAINER else self._item_keys[(section, item_id)]

    def cell_key(self, attack_id: str, explainer_id: str, metric_id: str, ids) -> str:
        return make_key(kind="cell", attack=self._item("attacks", attack_id),
                        explainer=self._item("explainers", explainer_id),
                        metric=self._item("metrics", metric_id), ids=list(ids), **self._run_key)

    def map_key(self, explainer_id: str, attack_id: str | None, ids, role: str = "target") -> str:
        return make_key(kind="map", explainer=self._item("explainers", explainer_id),
                        attack=None if attack_id is None else self._item("attacks", attack_id),
                        ids=list(ids), role=role, **self._run_key)

    # -- attacked settings ---------------------------------------------------------------------
    def attack_context(self, attack_id: str, ids=()) -> AttackContext:
        return self.preparation.context(attack_id, ids)

    def attacked_model(self, attack_id: str) -> nn.Module | Exception:
        """The attacked setting's model (see :mod:`audit.engine.prepare`), or why it has none."""
        return self.preparation.model(attack_id)

    def attacked_inputs(self, attack_id: str, attacked: nn.Module, x: torch.Tensor, target: torch.Tensor,
                        ids) -> torch.Tensor:
        """The attacked images of (attack, batch): computed once, shared by every explainer's unit
        (in this process, and through the cache across processes and runs)."""
        attack = self.attacks[attack_id]
        if not attack.changes_input():
            return attack.perturb(attacked, x, target, self.attack_context(attack_id, ids)).detach()
        memo = (attack_id, tuple(ids))
        if memo not in self._inputs:
            key = make_key(kind="attacked-input", attack=self._item("attacks", attack_id), ids=list(ids),
                           train=self.preparation.training_digest(attack_id), **self._run_key)
            cached = self.cache.get_tensors("inputs", key)
            if cached is not None:
                x_att = cached["x"].to(self.device)
            else:
                x_att = self._timed(f"attack {attack_id}", attack.perturb, attacked, x, target,
                                    self.attack_context(attack_id, ids)).detach()
                self.cache.put_tensors("inputs", key, {"x": x_att})
            if any(k[1] != tuple(ids) for k in self._inputs):  # units run batch by batch: keep one
                self._inputs.clear()
            self._inputs[memo] = x_att
            self._keep_picture(("input", attack_id), ids, x_att)
        return self._inputs[memo]

    # -- one unit ------------------------------------------------------------------------------
    def _timed(self, stage: str, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[stage] += time.perf_counter() - started

    def _keep_picture(self, key: tuple, ids, rows: torch.Tensor) -> None:
        k = len(self.picture_ids)
        if k and len(ids) >= k and tuple(ids[:k]) == self.picture_ids:
            self.pictures[key] = rows[:k].detach().cpu()

    def explain_context(self, explainer_id: str, attack_id: str | None, ids) -> ExplainContext:
        """The context an explainer gets in ``attack_id``'s setting (None: clean): the explainer's
        seed and, for an explainer that trains, its state for that setting's model
        (:meth:`Preparation.explainer_state`; raises ``PreparationError`` where it has none)."""
        return ExplainContext(self.model.spec, derive_seed(self.suite.seed, "explainer", explainer_id),
                              tuple(ids), self.device, self.preparation.explainer_state(explainer_id, attack_id))

    def _explain(self, explainer_id: str, model: nn.Module, x, target, ids, attack_id: str | None,
                 role: str = "target"):
        key = self.map_key(explainer_id, attack_id, ids, role)
        if key in self._maps:  # this batch's map, computed by another unit in this process
            return self._maps[key]
        cached = self.cache.get_tensors("maps", key)
        if cached is not None:
            maps = cached["map"].to(self.device)
        else:
            ctx = self.explain_context(explainer_id, attack_id, ids)
            maps = self._timed(f"explain {explainer_id}", self.explainers[explainer_id], model, x, target, ctx)
            self.cache.put_tensors("maps", key, {"map": maps})
        self._keep_picture(("map", explainer_id, attack_id, role), ids, maps)
        if self._maps_ids != tuple(ids):  # units run batch by batch: keep one batch's maps
            self._maps.clear()
            self._maps_ids = tuple(ids)
        self._maps[key] = maps
        return maps

    def _explain_fn(self, explainer_id: str, attack_id: str):
        """The explainer of a cell as metrics call it (uncached, seeded like the cell's maps) on
        the attacked setting's model (a trained explainer gets that model's state)."""
        explainer = self.explainers[explainer_id]

        def explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ids) -> torch.Tensor:
            return explainer(model, x, target, self.explain_context(explainer_id, attack_id, ids))

        return explain

    @staticmethod
    def _records(attack: str, explainer: str, metric: str, ids, result: MetricResult) -> list[dict]:
        out = []
        rows = zip(ids, result.values.tolist(), result.status, result.reasons, strict=True)
        for sample, value, status, reason in rows:
            if status in ("ok", "degenerate") and not math.isfinite(value):
                status, reason = "error", "metric returned a non-finite value"
            record = {"attack": attack, "explainer": explainer, "metric": metric, "sample": int(sample),
                      "value": float(value) if math.isfinite(value) else None, "status": status}
            if reason:
                record["reason"] = str(reason)
            out.append(record)
        return out

    def _compute(self, metric_id: str, inputs: MetricInputs) -> MetricResult:
        metric = self.metrics[metric_id]
        if metric.compares == "map_truth" and inputs.truth is None:
            return MetricResult.skipped(inputs.batch_size, "the data has no ground-truth masks")
        try:
            result = self._timed(f"metric {metric_id}", metric.compute, inputs)
        except Exception as exc:
            return MetricResult.error(inputs.batch_size, f"metric {metric_id!r} failed: "
                                                         f"{type(exc).__name__}: {exc}")
        if not len(result.status) == len(result.reasons) == result.values.numel() == inputs.batch_size:
            return MetricResult.error(inputs.batch_size, f"metric {metric_id!r} returned "
                                                         f"{len(result.status)} values for "
                                                         f"{inputs.batch_size} images")
        return result

    def run_unit(self, unit: Unit) -> list[dict]:
        """All records of ``unit``: every attack x the group's metrics x the batch's images."""
        batch = self.batch(unit.batch)
        ids = batch.ids
        records: list[dict] = []
        pending: dict[str, dict[str, str]] = {}  # attack -> {metric: its cell key} still to compute
        for attack_id in self.attacks:
            missing = {}
            for metric_id in self.metric_ids(unit.group, attack_id):
                key = self.cell_key(attack_id, unit.group, metric_id, ids)
                cached = self.cache.get_json("cells", key)
                if cached is not None:
                    records.extend(cached)
                else:
                    missing[metric_id] = key
            if missing:
                pending[attack_id] = missing
        if not pending:
            return records

        model = self.model.model
        x = self.model.spec.normalize(batch.images.to(self.device))
        labels = batch.labels.to(self.device)
        with torch.no_grad():
            logits = model(x)
        predicted = logits.argmax(dim=1)
        target = labels if self.suite.target == "label" else predicted
        # c₂ of active fooling: the original model's most probable class other than the target
        swap_target = logits.scatter(1, target.view(-1, 1), float("-inf")).argmax(dim=1)
        truth = None if batch.masks is None else batch.masks.to(self.device)
        clean: dict = {}  # clean maps (target, swap), computed on first need, shared by all attacks

        for attack_id, missing in pending.items():
            results = self._attack_cells(attack_id, unit.group, list(missing), batch, x, labels, predicted,
                                         target, swap_target, truth, clean)
            for metric_id, result in results.items():
                new = self._records(attack_id, unit.group, metric_id, ids, result)
                if all(r["status"] != "error" for r in new):  # errors are retried on the next run
                    self.cache.put_json("cells", missing[metric_id], new)
                records.extend(new)
        return records

    def _attack_cells(self, attack_id, group, metric_ids, batch, x, labels, predicted, target, swap_target,
                      truth, clean) -> dict[str, MetricResult]:
        ids, n = batch.ids, len(batch.ids)
        attack = self.attacks[attack_id]
        attacked = self.attacked_model(attack_id)
        if isinstance(attacked, Exception):
            reason = f"attack {attack_id!r} could not be prepared: {attacked}"
            return {m: MetricResult.error(n, reason) for m in metric_ids}
        model = self.model.model
        try:
            x_att = self.attacked_inputs(attack_id, attacked, x, target, ids)
            with torch.no_grad():
                logits_att = attacked(x_att)
            if not torch.isfinite(logits_att).all():
                raise RuntimeError("the attacked model returned non-finite logits")
            predicted_att = logits_att.argmax(dim=1)
        except Exception as exc:
            reason = f"attack {attack_id!r} failed: {type(exc).__name__}: {exc}"
            return {m: MetricResult.error(n, reason) for m in metric_ids}

        map_clean = map_att = map_swap = None
        if group != NO_EXPLAINER:
            try:
                if "target" not in clean:
                    clean["target"] = self._explain(group, model, x, target, ids, None)
                map_clean = clean["target"]
                map_att = map_clean if attack.kind == "identity" else self._explain(
                    group, attacked, x_att, target, ids, attack_id)
                if any(self.metrics[m].needs_swap_map() for m in metric_ids):
                    if "swap" not in clean:
                        clean["swap"] = self._explain(group, model, x, swap_target, ids, None, "swap")
                    map_swap = clean["swap"]
            except Unsupported as exc:  # a model the explainer refuses (e.g. a gated model's functional
                # conv for LRP): no map, and no failure of the explainer either
                reason = f"explainer {group!r} refused this setting's model: {exc}"
                return {m: MetricResult.skipped(n, reason) for m in metric_ids}
            except Exception as exc:
                reason = f"explainer {group!r} failed: {type(exc).__name__}: {exc}"
                return {m: MetricResult.error(n, reason) for m in metric_ids}

        # A map with NaN/inf is an explainer failure (error); a map the explainer's own check rejects
        # (e.g. LRP's relevance conservation) is refused (skipped). Only the metrics that read that
        # map lose the image; they see non-finite maps zeroed, so the other images are unharmed.
        problems = {role: _map_problems(self.explainers.get(group), group, role, m)
                    for role, m in (("attacked", map_att), ("clean", map_clean), ("swapped-class", map_swap))}
        map_clean, map_att, map_swap = (None if m is None else torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
                                        for m in (map_clean, map_att, map_swap))
        references, refused = self._reference_maps(group, metric_ids, attack_id, attacked, x, x_att, target, ids)
        results = {}
        seed = derive_seed(self.suite.seed, "metric", attack_id, group)
        explain = None if group == NO_EXPLAINER else self._explain_fn(group, attack_id)
        for metric_id in metric_ids:
            reference = self.metrics[metric_id].reference_explainer()
            if reference in refused:
                results[metric_id] = refused[reference]
                continue
            map_reference = None
            if reference is not None:
                map_reference, problems["reference"] = references[reference]
            inputs = MetricInputs(
                spec=self.model.spec, x=x, x_attacked=x_att, model=model, attacked_model=attacked,
                target=target, labels=labels, predicted=predicted, predicted_attacked=predicted_att,
                map=map_clean, map_attacked=map_att, truth=truth, map_swap=map_swap,
                accepted=None if batch.accepted is None else batch.accepted.to(self.device),
                seed=seed, sample_ids=tuple(ids), device=self.device, explain=explain,
                two_classes_per_image=not self.data.single_label, map_reference=map_reference)
            results[metric_id] = _with_map_problems(self._compute(metric_id, inputs), self.metrics[metric_id],
                                                    problems)
        return results

    def _reference_maps(self, group, metric_ids, attack_id, attacked, x, x_att, target, ids):
        """The attacked setting's maps of the explainers the metrics name as their reference
        (:meth:`Metric.reference_explainer`): ({id: (map, per-image problems)}, {id: the result of
        every metric that reads it where it cannot be had}). Computed (and cached) exactly as that
        explainer's own cell computes its map, so the two share it."""
        n = len(ids)
        maps, refused = {}, {}
        for reference in {self.metrics[m].reference_explainer() for m in metric_ids} - {None}:
            if reference == group:
                refused[reference] = MetricResult.skipped(n, f"explainer {group!r} is this metric's reference: "
                                                             "compared with itself")
                continue
            try:
                if self.attacks[attack_id].kind == "identity":
                    found = self._explain(reference, self.model.model, x, target, ids, None)
                else:
                    found = self._explain(reference, attacked, x_att, target, ids, attack_id)
            except Unsupported as exc:
                refused[reference] = MetricResult.skipped(n, f"reference explainer {reference!r} refused this "
                                                             f"setting's model: {exc}")
                continue
            except Exception as exc:
                refused[reference] = MetricResult.error(n, f"reference explainer {reference!r} failed: "
                                                           f"{type(exc).__name__}: {exc}")
                continue
            problems = _map_problems(self.explainers[reference], reference, "reference", found)
            maps[reference] = (torch.nan_to_num(found, nan=0.0, posinf=0.0, neginf=0.0), problems)
        return maps, refused


def _map_problems(explainer: Explainer | None, explainer_id: str, role: str,
                  maps: torch.Tensor | None) -> list[tuple[str, str] | None]:
    """Per image: (status, reason) when its ``role`` map cannot be scored, else None.

    NaN/inf pixels make the image an ``error``; a finite map that the explainer's own check
    rejects (:meth:`Explainer.map_problems`) makes it ``skipped``.
    """
    if maps is None:
        return []
    n = maps[0].numel()
    counts = (~torch.isfinite(maps)).flatten(1).sum(dim=1).tolist()
    rejected = explainer.map_problems(maps) if explainer is not None and not any(counts) else [None] * len(counts)
    out: list[tuple[str, str] | None] = []
    for k, reason in zip(counts, rejected, strict=True):
        if k:
            out.append(("error", f"explainer {explainer_id!r} returned NaN/inf in {k} of {n} pixels ({role} map)"))
        elif reason:
            out.append(("skipped", f"{explainer_id} {role} map rejected: {reason}"))
        else:
            out.append(None)
    return out


def _with_map_problems(result: MetricResult, metric: Metric,
                       problems: dict[str, list[tuple[str, str] | None]]) -> MetricResult:
    """``result`` with the images whose maps the metric reads unusable turned into errors or skips."""
    roles = ["clean", "attacked"] if metric.compares == "maps" else ["attacked"]
    if metric.compares == "maps" and metric.needs_swap_map():
        roles.append("swapped-class")
    if metric.reference_explainer() is not None:
        roles.append("reference")
    for role in roles:
        for i, problem in enumerate(problems.get(role, [])):
            if problem is not None and result.status[i] not in ("error", problem[0]):
                result.values[i] = float("nan")
                result.status[i], result.reasons[i] = problem
    return result


def order_records(records: list[dict], suite) -> list[dict]:
    """Plan order (:func:`plan_cells`) whatever order units finished in, then sample."""
    rank = {cell.key: i for i, cell in enumerate(plan_cells(suite))}
    return sorted(records, key=lambda r: (rank[(r["attack"], r["explainer"], r["metric"])], r["sample"]))
