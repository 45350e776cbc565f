"""Attacked settings: each attack prepared once per run, its state cached and shipped to workers.

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
from audit.data.training import TrainingSet
from audit.engine.cache import Cache, _fault_point, make_key
from audit.seeding import derive_seed
from audit.spec import InputSpec


@dataclass(frozen=True)
class Shipped:
    """One attack's preparation as workers receive it: exported tensors, or the error."""

    state: dict[str, torch.Tensor] | None = None
    error: str | None = None


class PreparationError(RuntimeError):
    """Why an attack could not be prepared (the message is the records' reason)."""


class Preparation:
    """The prepared model of every attack of a run, in this process."""

    def __init__(self, attacks: dict[str, Attack], base: nn.Module, spec: InputSpec, device: torch.device,
                 seed: int, item_keys: dict[str, dict], run_key: dict, cache: Cache,
                 training: TrainingSet | None, timings: dict[str, float], *,
                 shipped: dict[str, Shipped] | None = None, log: Callable[[str], None] | None = None):
        self.attacks, self.base, self.spec, self.device = attacks, base, spec, device
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
    def _reporter(self, attack_id: str):
        started = time.perf_counter()
        last = [0.0]

        def report(step: int, total: int, values: dict[str, float]) -> None:
            _fault_point("train", step)
            now = time.perf_counter()
            if self.log is not None and (step == total or step == 1 or now - last[0] >= 5.0):
                last[0] = now
                shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
                self.log(f"prepare {attack_id}: step {step}/{total} {shown} ({now - started:.1f}s)")

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

    def prepare_all(self) -> None:
        for attack_id in self.attacks:
            self.model(attack_id)

    def summaries(self) -> dict[str, dict]:
        """Per prepared attack, what its ``state_summary`` says (for the manifest); attacks
        with nothing to say are left out."""
        return {a: s for a, s in self._summaries.items() if s}

    def shipment(self) -> dict[str, Shipped]:
        """What workers need to rebuild every prepared attack without preparing it again.

        Attacks that export nothing and did not fail are left out: workers prepare them (cheap
        and deterministic, e.g. an input attack whose model is the original)."""
        self.prepare_all()
        return {a: s for a, s in self._exported.items() if s.state is not None or s.error is not None}
