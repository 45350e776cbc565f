"""audit.testing.check_explainer catches what it promises to catch."""

import pytest
import torch
from torch import nn

from audit.explainers.base import Explainer
from audit.testing import ConformanceError, check_explainer


class _Good(Explainer):
    needs_gradients = False

    def explain(self, model, x, target, ctx):
        with torch.no_grad():
            return model(x)[:, :1, None].expand(-1, *x.shape[-2:]) * x.mean(1)


class LeavesHook(_Good):
    def explain(self, model, x, target, ctx):
        model.register_forward_hook(lambda *a: None)
        return super().explain(model, x, target, ctx)


class LeavesHookWhenRaising(_Good):
    def explain(self, model, x, target, ctx):
        handle = model.register_forward_hook(lambda *a: None)
        out = super().explain(model, x, target, ctx)  # no try/finally: the hook stays on a raise
        handle.remove()
        return out


class GlobalNoise(_Good):
    """Noise from the global RNG: not reproducible, not batch-invariant."""

    def explain(self, model, x, target, ctx):
        return super().explain(model, x, target, ctx) + torch.rand(x.shape[0], *x.shape[-2:])


class BatchNoise(_Good):
    """Seeded, but one draw for the whole batch: a batch differs from one by one."""

    def explain(self, model, x, target, ctx):
        gen = torch.Generator().manual_seed(ctx.seed)
        return super().explain(model, x, target, ctx) + torch.rand(x.shape[0], *x.shape[-2:], generator=gen)


class FlipsInplace(_Good):
    def explain(self, model, x, target, ctx):
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        return super().explain(model, x, target, ctx)


class NaNs(_Good):
    def explain(self, model, x, target, ctx):
        return super().explain(model, x, target, ctx) * float("nan")


def test_good_explainer_passes():
    assert all(check_explainer(_Good).values())


@pytest.mark.parametrize("bad, words", [
    (LeavesHook, "hooks changed"), (LeavesHookWhenRaising, "raised on call"),
    (GlobalNoise, "deterministic"), (BatchNoise, "alone differs"), (FlipsInplace, "inplace changed"),
    (NaNs, "non-finite")])
def test_bad_explainers_are_caught(bad, words):
    with pytest.raises(ConformanceError, match=words):
        check_explainer(bad)

