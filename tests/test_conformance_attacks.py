"""Every registered attack passes audit.testing.check_attack, and the check catches violations."""

import copy

import pytest
import torch
from torch import nn

from audit.attacks.base import ATTACKS, Attack
from audit.testing import ConformanceError, check_attack

# Small budgets so the table runs in seconds; the checks are about the plumbing.
FAST: dict[str, dict] = {"manipulation": {"steps": 2, "batch_size": 4},
                        "gating": {"steps": 4, "images": 24, "calibration": 8, "decoy_steps": 4},
                        "pgd": {"steps": 2}, "iterative_targeted": {"max_steps": 4},
                        "fragility": {"steps": 2}, "targeted_map": {"steps": 2}}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_conformance(name):
    results = check_attack(ATTACKS.create(name, FAST.get(name)))
    assert results == {"model_untouched": True, "shapes_finite": True, "deterministic": True,
                       "batch_invariant": True, "round_trip": True}


class _ChangesWeights(Attack):
    kind = "model"

    def prepare(self, model, ctx):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # forbidden: modifies the audited model
        return model


class _LeavesTrainMode(Attack):
    kind = "model"

    def prepare(self, model, ctx):
        model.train()
        return copy.deepcopy(model)


class _Unseeded(Attack):
    def perturb(self, model, x, target, ctx):
        return x + 0.1 * torch.randn_like(x)  # global RNG: not reproducible


class _BatchDependent(Attack):
    def perturb(self, model, x, target, ctx):
        return x - x.mean(dim=0, keepdim=True)


class _LosesState(Attack):
    kind = "model"

    def prepare(self, model, ctx):
        clone = copy.deepcopy(model)
        clone.extra = nn.Linear(4, 4)
        with torch.no_grad():  # fixed, so only the lost state can make the outputs differ
            clone.extra.weight.copy_(2.0 * torch.eye(4))
            clone.extra.bias.fill_(0.5)
        clone.forward = lambda x, c=clone: c.extra(type(c).forward(c, x))
        return clone

    def export_state(self, attacked):
        return {k: v for k, v in attacked.state_dict().items() if not k.startswith("extra.")}

    def import_state(self, model, state):
        return copy.deepcopy(model)


class _TrainsWithoutExport(Attack):
    needs_training_data = True

    def prepare(self, model, ctx):
        ctx.train_batch(4, "probe")
        return model


@pytest.mark.parametrize("bad, needle", [
    (_ChangesWeights, "input model was changed"), (_LeavesTrainMode, "input model was changed"),
    (_Unseeded, "not deterministic"), (_BatchDependent, "perturbed alone differs"),
    (_LosesState, "other outputs"), (_TrainsWithoutExport, "export_state returned None")])
def test_check_attack_catches(bad, needle):
    with pytest.raises(ConformanceError, match=needle):
        check_attack(bad())
