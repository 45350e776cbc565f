"""The attack interface: change the model, the input, or both, for one column of the audit.

An attack is applied in two steps, both driven by the engine (:mod:`audit.engine.prepare` and
the runner):

- :meth:`Attack.prepare` runs once per audit and returns the model the attacked setting uses
  (a modified copy for model attacks; the original otherwise). Attacks that learn something
  (``needs_training_data = True``) draw seeded batches of *training* images from the context,
  never the audited ones. The engine puts the prepared model in eval mode, caches what
  :meth:`Attack.export_state` returns (keyed by the attack's resolved parameters, the model,
  the training data's digest and the code) and ships it to workers, which rebuild the model
  with :meth:`Attack.import_state` instead of preparing again.
- :meth:`Attack.perturb` runs once per batch and returns the attacked inputs (identity for
  model attacks). It gets the *prepared* model (for input attacks that is the original), so
  an attack that changes both (``kind = "both"``, e.g. a constant input shift the model
  compensates) optimises against what is audited. The engine computes the attacked images of
  an (attack, batch) once and shares them with every explainer.

Both receive seeds derived from the suite seed and the attack's id, and may build any
registered explainer by name (:meth:`AttackContext.explainer`), e.g. to put a map in a loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from audit.data.training import StepReport, TrainingDraws
from audit.registry import Plugin, Registry
from audit.seeding import derive_seed, generator
from audit.spec import InputSpec

if TYPE_CHECKING:
    from audit.data.training import TrainingSet
    from audit.explainers.base import ExplainContext, Explainer

AttackKind = Literal["identity", "input", "model", "both"]

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackKind", "StepReport"]


@dataclass(frozen=True)
class AttackContext(TrainingDraws):
    """What an attack may use besides the model and the images.

    ``seed`` derives from the suite seed and the attack's id. ``training`` holds the training
    images for attacks with ``needs_training_data`` (None otherwise). ``report`` receives
    training progress. The seeded training draws (``train_batch``, ``train_split``,
    ``train_images``, ``generator``, ``step``) are :class:`~audit.data.training.TrainingDraws`,
    shared with explainers that train.
    """

    spec: InputSpec
    seed: int = 0  # derived from the suite seed and the attack's id
    sample_ids: tuple[int, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    training: TrainingSet | None = None
    report: StepReport | None = None

    def sample_generator(self, position: int, *identity: object) -> torch.Generator:
        """A generator for the image at ``position``: the same whatever batch holds it."""
        sample = self.sample_ids[position] if self.sample_ids else position
        return generator(self.seed, "sample", sample, *identity)

    def for_samples(self, sample_ids: tuple[int, ...]) -> AttackContext:
        return replace(self, sample_ids=tuple(sample_ids))

    # -- explainers ----------------------------------------------------------------------------
    def explainer(self, name: str, params: dict[str, Any] | None = None) -> Explainer:
        """The registered explainer ``name`` built with ``params`` (e.g. F puts a
        ``differentiable_map`` in its loss; G optimises inputs against a map)."""
        from audit.explainers.base import EXPLAINERS

        return EXPLAINERS.create(name, params)

    def explain_context(self, *identity: object, sample_ids: tuple[int, ...] | None = None) -> ExplainContext:
        """An :class:`ExplainContext` for an explainer the attack calls, seeded by the attack."""
        from audit.explainers.base import ExplainContext

        ids = self.sample_ids if sample_ids is None else tuple(sample_ids)
        return ExplainContext(self.spec, derive_seed(self.seed, "explainer", *identity), ids, self.device)


class Attack(Plugin):
    """Base class. ``kind`` says what the attack changes."""

    kind: ClassVar[AttackKind] = "input"
    needs_gradients: ClassVar[bool] = False
    black_box: ClassVar[bool] = True

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"kind": cls.kind, "needs_gradients": cls.needs_gradients, "black_box": cls.black_box,
                "needs_training_data": cls.needs_training_data}

    @classmethod
    def changes_model(cls) -> bool:
        return cls.kind in ("model", "both")

    @classmethod
    def changes_input(cls) -> bool:
        return cls.kind in ("input", "both")

    def builds_on(self) -> str | None:
        """The id of another attack of the suite whose prepared model this attack starts from
        (``prepare`` and ``import_state`` then receive that model instead of the original), or
        None. The engine prepares it first and refuses unknown ids and cycles at validation."""
        return None

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        """The model of the attacked setting. Never modify ``model`` itself (its weights, modes
        or hooks): copy or wrap it."""
        return model

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor] | None:
        """Tensors that rebuild a prepared model attack (cached, shipped to workers), or None
        for nothing to keep (the attack is then prepared again where it is needed, so an
        attack that trains must export).

        The default suits attacks that change weights but not the architecture (fine-tuning,
        randomisation); attacks that add modules (a gate) override both methods.
        """
        return attacked.state_dict() if self.changes_model() else None

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        """The attacked model rebuilt from :meth:`export_state`'s tensors and the original ``model``
        (which must not be modified)."""
        clone = copy.deepcopy(model)
        clone.load_state_dict(state)
        return clone.eval()

    def state_summary(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """What the manifest records about an exported state (JSON values, e.g. training
        curves); empty by default."""
        return {}

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        """The attacked inputs for a batch ``x`` (normalised) and its ``target`` classes.

        ``model`` is the attacked setting's (prepared) model.
        """
        return x


ATTACKS: Registry[Attack] = Registry("attack", Attack, "audit.attacks")
