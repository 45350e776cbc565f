"""The identity attack: the clean setting every other column is compared with."""

from __future__ import annotations

from audit.attacks.base import ATTACKS, Attack


@ATTACKS.register("none")
class NoAttack(Attack):
    """Identity: the original model on the clean images."""

    kind = "identity"
