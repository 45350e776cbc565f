"""Trained state: each attack prepared once per run, each explainer that trains trained once per
explained model; both cached and shipped to workers.

The driver prepares every attack before any unit runs (:meth:`Preparation.prepare_all`).
What :meth:`~audit.attacks.base.Attack.export_state` returns is

- cached under a key made of the attack's resolved parameters and source, the model, the
  seed, the code and, for attacks that train, the training data's digest, so a second run (or
  a run resumed after a kill during training) imports it instead of training again;
- shipped to process-pool and Ray workers (:meth:`Preparation.shipment`), which rebuild the
  model with ``import_state``: no worker retrains, also with ``--cache none``.

An attack that builds on another (:meth:`~audit.attacks.base.Attack.builds_on`, e.g.
``weight_noise`` with ``of``) starts from that attack's prepared model, which is prepared first;
its cache key holds the other's.

A preparation that fails is shipped as its error, so every cell of that attack is an error
with the reason and no worker tries again. The prepared model is put in eval mode here,
whatever the plugin did. Training progress (``AttackContext.step``) is logged, throttled, and
the wall time of each preparation is the manifest stage ``prepare <attack id>``.

Explainers that train (``needs_training_data``, e.g. ``realtime_saliency``) go through the
same machinery: :meth:`~audit.explainers.base.Explainer.train` runs once per *explained model*
— the original, and the prepared model of every attack that changes the model (input attacks
are explained on the original model, so they share its state) — with a
:class:`~audit.data.training.TrainingContext` (the same seeded draws and progress reports as
an attack's; its seed derives from the suite seed and the explainer's id, the same for every
explained model, so two models' masking models see the same batches). The state is cached
under the explainer's resolved parameters, the training data's digest, the explained model
(the model's digest and, for an attacked one, the attack's key), the seed, device and code —
not the audited images, which it never sees, so suites that differ only in those share it —
shipped to workers, and handed to ``explain`` in ``ExplainContext.trained``. Its wall time is
the manifest stage ``prepare <explainer id>`` (``… on <attack id>`` for an attacked model).

``EXPLAIN_AUDIT_FAULT=train:N`` kills the process at the N-th reported training step (resume
tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from audit.attacks.base import Attack, AttackContext
from audit.data.training import TrainingContext, TrainingSet
from audit.engine.cache import Cache, _fault_point, make_key
from audit.explainers.base import Explainer
from audit.seeding import derive_seed
from audit.spec import InputSpec


@dataclass(frozen=True)
class Shipped:
    """One attack's preparation as workers receive it: exported tensors, or the error."""

    state: dict[str, torch.Tensor] | None = None
    error: str | None = None


class PreparationError(RuntimeError):
    """Why an attack could not be prepared or an explainer trained (the records' reason)."""


def explainer_label(explainer_id: str, setting: str | None) -> str:
    """How a trained explainer state is named in logs and manifest.json."""
    return explainer_id if setting is None else f"{explainer_id} on {setting}"


class Preparation:
    """The prepared model of every attack of a run, in this process."""

    def __init__(self, attacks: dict[str, Attack], base: nn.Module, spec: InputSpec, device: torch.device,
                 seed: int, item_keys: dict[str, dict], run_key: dict, cache: Cache,
                 training: TrainingSet | None, timings: dict[str, float], *,
                 shipped: dict | None = None, log: Callable[[str], None] | None = None,
                 explainers: dict[str, Explainer] | None = None, explainer_keys: dict[str, dict] | None = None):
        self.attacks, self.base, self.spec, self.device = attacks, base, spec, device
        # explainers that train, and their cache-key parts (id, plugin, resolved params, code)
        self.explainers = {e: x for e, x in (explainers or {}).items() if type(x).needs_training_data}
        self.explainer_keys = explainer_keys or {}
        self._states: dict[tuple[str, str | None], Shipped] = {}
        self.seed, self.item_keys, self.run_key, self.cache = seed, item_keys, run_key, cache
        self.training, self.timings, self.log = training, timings, log
        self.worker = shipped is not None  # a worker never prepares an attack that trains
        self._shipped = dict(shipped or {})
        self._models: dict[str, nn.Module | Exception] = {}
        self._exported: dict[str, Shipped] = {}
        self._summaries: dict[str, dict] = {}
        self._preparing: set[str] = set()

    # -- identity ------------------------------------------------------------------------------
    def trains(self, attack_id: str) -> bool:
        """Whether the attack ``attack_id`` trains (reads training data)."""
        return type(self.attacks[attack_id]).needs_training_data

    def training_digest(self, attack_id: str) -> str | None:
        """The training data's digest where the attack trains (it is part of its keys)."""
        if not self.trains(attack_id):
            return None
        return self.training.digest if self.training is not None else "none"

    def key(self, attack_id: str) -> str:
        base = self.attacks[attack_id].builds_on()
        return make_key(kind="attacked-model", attack=self.item_keys[attack_id],
                        train=self.training_digest(attack_id),
                        base=None if base is None else self.key(base), **self.run_key)

    def _base(self, attack_id: str) -> nn.Module:
        """The model ``attack_id`` starts from: the original, or the prepared model of the attack
        it builds on (:meth:`Attack.builds_on`), prepared first."""
        base_id = self.attacks[attack_id].builds_on()
        if base_id is None:
            return self.base
        if base_id not in self.attacks:  # validation refuses this; a guard for direct use
            raise PreparationError(f"it builds on attack {base_id!r}, which this run does not have")
        base = self.model(base_id)
        if isinstance(base, Exception):
            raise PreparationError(f"the attack it builds on ({base_id!r}) could not be prepared: {base}")
        return base

    def context(self, attack_id: str, ids=(), report=None) -> AttackContext:
        training = self.training if self.trains(attack_id) else None
        return AttackContext(self.spec, derive_seed(self.seed, "attack", attack_id), tuple(ids), self.device,
                             training, report)

    # -- preparing -----------------------------------------------------------------------------
    def _reporter(self, label: str):
        started = time.perf_counter()
        last = [0.0]

        def report(step: int, total: int, values: dict[str, float]) -> None:
            _fault_point("train", step)
            now = time.perf_counter()
            if self.log is not None and (step == total or step == 1 or now - last[0] >= 5.0):
                last[0] = now
                shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
                self.log(f"prepare {label}: step {step}/{total} {shown} ({now - started:.1f}s)")

        return report

    def _prepare(self, attack_id: str) -> tuple[nn.Module, Shipped]:
        attack = self.attacks[attack_id]
        if attack_id in self._shipped:  # a worker: rebuild from the driver's preparation
            shipped = self._shipped[attack_id]
            if shipped.error is not None:
                raise PreparationError(shipped.error)
            if shipped.state is not None:
                return attack.import_state(self._base(attack_id), shipped.state), shipped
        elif attack.changes_model() or self.trains(attack_id):  # the others have no state to find
            state = self.cache.get_tensors("models", self.key(attack_id))
            if state is not None:
                return attack.import_state(self._base(attack_id), state), Shipped(state)
        if self.worker and self.trains(attack_id):
            raise PreparationError("the driver shipped no prepared state for this attack (it trains, so "
                                   "workers never prepare it)")
        if self.trains(attack_id) and self.training is None:
            raise PreparationError("the suite has no training data for this attack; add data.train")
        base = self._base(attack_id)
        prepared = attack.prepare(base, self.context(attack_id, report=self._reporter(attack_id)))
        if not isinstance(prepared, nn.Module):
            raise PreparationError(f"prepare returned {type(prepared).__name__}, not a torch.nn.Module")
        exported = attack.export_state(prepared)
        if exported is None and self.trains(attack_id):
            raise PreparationError("the attack trains but export_state returned None; export what "
                                   "it learned so that workers and reruns do not train again")
        if exported is not None and attack_id not in self._shipped:
            exported = {k: v.detach().cpu() for k, v in exported.items()}
            self.cache.put_tensors("models", self.key(attack_id), exported)
        return prepared, Shipped(exported)

    def model(self, attack_id: str) -> nn.Module | Exception:
        """The attacked setting's model in eval mode on the run's device, or the exception that
        prevented it (recorded as the error of every cell of the attack)."""
        if attack_id not in self._models:
            base_id = self.attacks[attack_id].builds_on()
            if base_id in self.attacks and base_id not in self._models:
                if attack_id in self._preparing:  # a cycle (validation refuses them)
                    raise PreparationError(f"attacks {sorted(self._preparing)} build on each other")
                self._preparing.add(attack_id)
                try:  # outside this attack's timer: its own stage is its own work
                    self.model(base_id)
                finally:
                    self._preparing.discard(attack_id)
            started = time.perf_counter()
            try:
                prepared, shipped = self._prepare(attack_id)
                self._models[attack_id] = prepared.to(self.device).eval()
                self._exported[attack_id] = shipped
                if shipped.state is not None:
                    self._summaries[attack_id] = self.attacks[attack_id].state_summary(shipped.state)
            except Exception as exc:  # one message, the same in the driver and in every worker
                message = str(exc) if isinstance(exc, PreparationError) else f"{type(exc).__name__}: {exc}"
                self._models[attack_id] = PreparationError(message)
                self._exported[attack_id] = Shipped(error=message)
            self.timings[f"prepare {attack_id}"] += time.perf_counter() - started
        return self._models[attack_id]

    # -- explainers that train -----------------------------------------------------------------
    def setting(self, attack_id: str | None) -> str | None:
        """The explained model of an attacked setting: the attack's id where the attack changes
        the model, None (the original model) for the clean setting and for input attacks."""
        if attack_id is None or not self.attacks[attack_id].changes_model():
            return None
        return attack_id

    def settings(self) -> list[str | None]:
        """Every explained model of the run: the original, then each model-changing attack."""
        return [None] + [a for a in self.attacks if self.setting(a) is not None]

    def explainer_key(self, explainer_id: str, setting: str | None) -> str:
        # not the audited images (never trained on); the training digest is ``train`` below
        run = {k: v for k, v in self.run_key.items() if k not in ("data", "target", "training")}
        return make_key(kind="explainer-state", explainer=self.explainer_keys.get(explainer_id, explainer_id),
                        train=self.training.digest if self.training is not None else "none",
                        explains=None if setting is None else self.key(setting), **run)

    def explainer_state(self, explainer_id: str, attack_id: str | None) -> dict[str, torch.Tensor] | None:
        """What the explainer ``explainer_id`` learned for the model of ``attack_id``'s setting
        (None: the clean setting), trained, loaded from the cache or shipped on first use; None
        for an explainer that does not train. Raises :class:`PreparationError` with the reason
        where it has none (the cells of that setting are then errors)."""
        if explainer_id not in self.explainers:
            return None
        setting = self.setting(attack_id)
        memo = (explainer_id, setting)
        if memo not in self._states:
            started = time.perf_counter()
            try:
                self._states[memo] = Shipped(self._train_explainer(explainer_id, setting))
            except Exception as exc:
                message = str(exc) if isinstance(exc, PreparationError) else f"{type(exc).__name__}: {exc}"
                self._states[memo] = Shipped(error=f"explainer {explainer_id!r} could not be trained: {message}")
            self.timings[f"prepare {explainer_label(explainer_id, setting)}"] += time.perf_counter() - started
            state = self._states[memo].state
            if state is not None:
                self._summaries[explainer_label(explainer_id, setting)] = \
                    self.explainers[explainer_id].state_summary(state)
        shipped = self._states[memo]
        if shipped.error is not None:
            raise PreparationError(shipped.error)
        return shipped.state

    def _train_explainer(self, explainer_id: str, setting: str | None) -> dict[str, torch.Tensor]:
        shipped_key = ("explainer", explainer_id, setting)
        if shipped_key in self._shipped:  # a worker: the driver's state (or its error)
            shipped = self._shipped[shipped_key]
            if shipped.error is not None:
                raise PreparationError(shipped.error)
            return shipped.state
        model = self.base if setting is None else self.model(setting)
        if isinstance(model, Exception):
            raise PreparationError(f"the model of attack {setting!r} could not be prepared: {model}")
        key = self.explainer_key(explainer_id, setting)
        state = self.cache.get_tensors("explainers", key)
        if state is not None:
            return state
        if self.worker:
            raise PreparationError("the driver shipped no trained state (explainers that train are "
                                   "trained by the driver, never by workers)")
        if self.training is None:
            raise PreparationError("the suite has no training data for it; add data.train")
        label = explainer_label(explainer_id, setting)
        if self.log is not None:
            self.log(f"prepare {label}: training on {self.training.description}")
        ctx = TrainingContext(self.spec, derive_seed(self.seed, "explainer", explainer_id, "train"), self.device,
                              self.training, self._reporter(label))
        state = self.explainers[explainer_id].train(model, ctx)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PreparationError("train() must return a dict of tensors")
        state = {k: v.detach().cpu() for k, v in state.items()}
        self.cache.put_tensors("explainers", key, state)
        return state

    # -- the run ---------------------------------------------------------------------------------
    def prepare_all(self) -> None:
        """Every attack, then every explainer that trains on every explained model."""
        for attack_id in self.attacks:
            self.model(attack_id)
        for explainer_id in self.explainers:
            for setting in self.settings():
                try:
                    self.explainer_state(explainer_id, setting)
                except PreparationError:  # recorded: the cells of that setting carry the reason
                    pass

    def summaries(self) -> dict[str, dict]:
        """Per prepared attack and trained explainer state, what its ``state_summary`` says (for
        the manifest); those with nothing to say are left out."""
        return {a: s for a, s in self._summaries.items() if s}

    def shipment(self) -> dict:
        """What workers need to rebuild every prepared attack and trained explainer without
        preparing or training again: attack ids, and ``("explainer", id, setting)`` keys.

        Attacks that export nothing and did not fail are left out: workers prepare them (cheap
        and deterministic, e.g. an input attack whose model is the original)."""
        self.prepare_all()
        out: dict = {a: s for a, s in self._exported.items() if s.state is not None or s.error is not None}
        out.update({("explainer", e, setting): s for (e, setting), s in self._states.items()})
        return out
