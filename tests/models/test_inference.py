"""The forward-only inference copy: same outputs, the user's model untouched, never stale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audit.engine.device import reproducible
from audit.models import inference
from audit.models.inference import CPU_CHUNK, GPU_CHUNK, forward_chunk, inference_model
from audit.testing import FLOAT32_RTOL, LOGIT_ATOL

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def bn_net(seed: int = 0) -> nn.Module:
    """Conv→BN→ReLU blocks with non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


class Branchy(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.net = bn_net(1)

    def forward(self, x):
        if x.mean() > 100:  # never true here; a value-dependent branch all the same
            return -self.net(x)
        return self.net(x)


@pytest.mark.parametrize("device", DEVICES)
def test_folded_copy_matches_the_model_and_has_no_batchnorm(device):
    if device == "cuda":
        reproducible(torch.device(device))  # as the audit runs: TF32 alone differs by ~1e-4
    net = bn_net().to(device)
    x = torch.randn(6, 3, 16, 16, device=device)
    fast = inference_model(net)
    assert fast is not net
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=FLOAT32_RTOL, atol=LOGIT_ATOL)
        assert fast.trusted is True
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.fast.modules())
    conv = next(m for m in fast.fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_users_model_is_left_as_it_was():
    net = bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    inference_model(net)(torch.randn(2, 3, 16, 16))
    after = net.state_dict()
    assert before.keys() == after.keys()  # BatchNorm still there, nothing folded into the original
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in net.parameters())
    assert next(net.parameters()).is_contiguous()


def test_copy_is_reused_until_a_parameter_changes_in_place():
    net = bn_net()
    x = torch.randn(3, 3, 16, 16)
    first = inference_model(net)
    assert inference_model(net) is first
    with torch.no_grad():
        net[0].weight.mul_(-1.0)  # an in-place update, as a fine-tuning step makes
    second = inference_model(net)
    assert second is not first
    with torch.inference_mode():
        torch.testing.assert_close(second(x), net(x), rtol=FLOAT32_RTOL, atol=LOGIT_ATOL)


def test_untraceable_model_still_gives_its_outputs():
    net = Branchy().eval()
    x = torch.randn(4, 3, 16, 16)
    fast = inference_model(net)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.fast.modules())  # not folded: untraced
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=FLOAT32_RTOL, atol=LOGIT_ATOL)


def test_a_copy_that_disagrees_is_dropped_for_the_model(monkeypatch):
    """The safety net: a wrong copy (here a differently seeded net) is caught on its first batch."""
    net = bn_net(0)
    monkeypatch.setattr(inference, "_fold_batchnorm", lambda clone: bn_net(7))
    fast = inference_model(net)
    x = torch.randn(5, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(fast(x), net(x))  # the model's own outputs, not the copy's
        assert fast.trusted is False
        assert torch.equal(fast(x * 2), net(x * 2))  # and every later batch too


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_models_used_as_they_are():
    train_mode = bn_net().train()
    assert inference_model(train_mode) is train_mode  # batch statistics: nothing to fold
    no_conv = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    assert inference_model(no_conv) is no_conv
    opted_out = bn_net()
    opted_out.explain_audit_inference_copy = False
    assert inference_model(opted_out) is opted_out
    fast = inference_model(bn_net())
    assert inference_model(fast) is fast  # the copy is not copied again
    scripted = torch.jit.script(bn_net())
    assert inference_model(scripted) is scripted


def test_forward_chunk_per_device():
    assert forward_chunk("cpu") == CPU_CHUNK
    assert forward_chunk(torch.device("cuda")) == GPU_CHUNK
    assert forward_chunk("cpu", 7) == 7
