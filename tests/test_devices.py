"""The same draws on every device: a GPU run differs from a CPU run by rounding, not by sampling."""

import pytest
import torch

from audit.attacks.base import ATTACKS, AttackContext
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.seeding import generator
from audit.testing import TINY_SPEC, tiny_inputs, tiny_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_generators_are_on_the_cpu_whatever_the_context_device():
    assert generator(3, "x").device.type == "cpu"
    ctx = ExplainContext(TINY_SPEC, seed=1, sample_ids=(4,), device=torch.device("meta"))
    assert ctx.sample_generator(0, "smoothgrad").device.type == "cpu"
    actx = AttackContext(TINY_SPEC, seed=1, sample_ids=(4,), device=torch.device("meta"))
    assert actx.sample_generator(0, "noise").device.type == "cpu"


@needs_cuda
@pytest.mark.parametrize("name, params", [("rise", {"n_masks": 200}), ("mc_rise", {"n_masks": 200}),
                                          ("smoothgrad", {"n_samples": 8}), ("saliency", {})])
def test_an_explainer_draws_the_same_masks_and_noise_on_a_gpu(name, params):
    model, x = tiny_model(), tiny_inputs(3)
    with torch.no_grad():
        target = model(x).argmax(1)
    explainer = EXPLAINERS.create(name, params)
    ids = (5, 9, 13)
    cpu = explainer(model, x, target, ExplainContext(TINY_SPEC, seed=2, sample_ids=ids))
    gpu_ctx = ExplainContext(TINY_SPEC, seed=2, sample_ids=ids, device=torch.device("cuda"))
    gpu = explainer(model.cuda(), x.cuda(), target.cuda(), gpu_ctx).cpu()
    # other masks or noise would move the maps by 1e-2 and more; kernels alone by ~1e-6
    scale = float(cpu.abs().max())
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-3 * scale)


@needs_cuda
def test_gaussian_noise_draws_the_same_noise_on_a_gpu():
    x = tiny_inputs(2)
    attack = ATTACKS.create("gaussian_noise", {"sigma": 0.1})
    cpu = attack.perturb(None, x, None, AttackContext(TINY_SPEC, seed=4, sample_ids=(1, 2)))
    gpu = attack.perturb(None, x.cuda(), None, AttackContext(TINY_SPEC, seed=4, sample_ids=(1, 2),
                                                             device=torch.device("cuda")))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
