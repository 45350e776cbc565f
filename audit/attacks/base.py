"""The attack interface: change the model, the input, or both, for one column of the audit.

An attack is applied in two steps. :meth:`Attack.prepare` runs once per audit and returns the
model the attacked setting uses (a modified copy for model attacks; the original otherwise).
:meth:`Attack.perturb` runs per batch and returns the attacked inputs (identity for model
attacks). Both receive seeds derived from the suite seed and the attack's id.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from audit.registry import Plugin, Registry
from audit.seeding import generator
from audit.spec import InputSpec

AttackKind = Literal["identity", "input", "model"]


@dataclass(frozen=True)
class AttackContext:
    spec: InputSpec
    seed: int = 0  # derived from the suite seed and the attack's id
    sample_ids: tuple[int, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def sample_generator(self, position: int, *identity: object) -> torch.Generator:
        """A generator for the image at ``position``: the same whatever batch holds it."""
        sample = self.sample_ids[position] if self.sample_ids else position
        return generator(self.seed, "sample", sample, *identity, device=self.device)

    def for_samples(self, sample_ids: tuple[int, ...]) -> AttackContext:
        return AttackContext(self.spec, self.seed, sample_ids, self.device)


class Attack(Plugin):
    """Base class. ``kind`` says what the attack changes."""

    kind: ClassVar[AttackKind] = "input"
    needs_gradients: ClassVar[bool] = False
    black_box: ClassVar[bool] = True

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"kind": cls.kind, "needs_gradients": cls.needs_gradients, "black_box": cls.black_box}

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        """The model of the attacked setting. Never modify ``model`` itself."""
        return model

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor] | None:
        """Tensors that rebuild a prepared model attack (cached), or None for nothing to keep.

        The default suits attacks that change weights but not the architecture (fine-tuning,
        randomisation); attacks that add modules (a gate) override both methods.
        """
        return attacked.state_dict() if self.kind == "model" else None

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        """The attacked model rebuilt from :meth:`export_state`'s tensors."""
        clone = copy.deepcopy(model)
        clone.load_state_dict(state)
        return clone.eval()

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        """The attacked inputs for a batch ``x`` (normalised) and its ``target`` classes."""
        return x


ATTACKS: Registry[Attack] = Registry("attack", Attack, "audit.attacks")
