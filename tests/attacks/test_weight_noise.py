"""Gaussian noise on the weights (Heo et al. 2019 Fig. 4b): of the original model, or of the very
model another attack of the suite prepared (``of``)."""

import copy

import pytest
import torch

from audit.attacks.base import AttackContext
from audit.attacks.weight_noise import WeightNoise, add_weight_noise
from audit.engine.cache import Cache
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.errors import SuiteError
from audit.seeding import derive_seed, generator
from audit.testing import TINY_SPEC, tiny_model


def test_noise_scales_with_each_tensors_std_and_leaves_the_model_alone():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    noisy = WeightNoise(sigma=0.1).prepare(model, AttackContext(TINY_SPEC, seed=5))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, param in model.named_parameters():
        delta = noisy.state_dict()[name] - param
        assert delta.abs().sum() > 0
        if param.numel() >= 500:  # enough draws for the sample std to be near σ·std(w)
            assert delta.std().item() == pytest.approx(0.1 * param.std().item(), rel=0.15)
    # buffers (BatchNorm statistics) are not parameters: untouched
    for name, value in model.named_buffers():
        assert torch.equal(noisy.state_dict()[name], value)


def _suite(tmp_path, attacks: list[str]):
    path = tmp_path / "suite.yaml"
    body = ["name: noise", "seed: 3", "device: cpu", "model: {source: builtin:shapes-resnet}",
            "data: {source: builtin:shapes, n: 4, batch_size: 4}", "explainers: [gradcam]", "attacks:",
            "  - none", *[f"  - {a}" for a in attacks], "metrics: [agreement, {fsr: {resolution: 8}}]", ""]
    path.write_text("\n".join(body))
    return path


FOOLED = "id: fooled\n    manipulation: {steps: 2, batch_size: 4}"


def test_noise_of_an_attack_noises_that_very_prepared_model(tmp_path):
    """The noisy row is the fooled row's model plus noise: bit-equal to noising it here."""
    path = _suite(tmp_path, [FOOLED, "id: noisy\n    weight_noise: {sigma: 0.05, of: fooled}",
                             "id: noisy_original\n    weight_noise: {sigma: 0.05}"])
    runner = Runner(load_suite(path), Cache(None))
    fooled, noisy = runner.attacked_model("fooled"), runner.attacked_model("noisy")
    expected = copy.deepcopy(fooled)
    add_weight_noise(expected, 0.05, generator(derive_seed(3, "attack", "noisy"), "weight_noise"))
    for name, value in expected.state_dict().items():
        assert torch.equal(noisy.state_dict()[name], value), name
    # the baseline noises the original model instead
    original = copy.deepcopy(runner.model.model)
    add_weight_noise(original, 0.05, generator(derive_seed(3, "attack", "noisy_original"), "weight_noise"))
    baseline = runner.attacked_model("noisy_original")
    assert all(torch.equal(baseline.state_dict()[k], v) for k, v in original.state_dict().items())


def test_the_noisy_rows_keys_follow_the_model_it_builds_on(tmp_path):
    noisy = "id: noisy\n    weight_noise: {of: fooled}"
    a = Runner(load_suite(_suite(tmp_path, [FOOLED, noisy])), Cache(None))
    other = FOOLED.replace("steps: 2", "steps: 3")
    b = Runner(load_suite(_suite(tmp_path, [other, noisy])), Cache(None))
    assert a.cell_key("noisy", "gradcam", "agreement", [0]) != b.cell_key("noisy", "gradcam", "agreement", [0])
    assert a.preparation.key("noisy") != b.preparation.key("noisy")
    same = Runner(load_suite(_suite(tmp_path, [FOOLED, noisy])), Cache(None))
    assert a.preparation.key("noisy") == same.preparation.key("noisy")


def test_a_cached_noisy_model_is_rebuilt_on_the_model_it_builds_on(tmp_path):
    path = _suite(tmp_path, [FOOLED, "id: noisy\n    weight_noise: {of: fooled}"])
    cache = Cache(tmp_path / "cache")
    first = Runner(load_suite(path), cache).attacked_model("noisy")
    again = Runner(load_suite(path), cache)
    rebuilt = again.attacked_model("noisy")
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in first.state_dict().items())


@pytest.mark.parametrize("attacks, needle", [
    (["id: noisy\n    weight_noise: {of: missing}"], "'missing', which is not another attack"),
    (["id: noisy\n    weight_noise: {of: noisy}"], "'noisy', which is not another attack"),
    (["blur", "id: noisy\n    weight_noise: {of: blur}"], "only changes inputs"),
    (["id: a\n    weight_noise: {of: b}", "id: b\n    weight_noise: {of: a}"], "in a cycle"),
])
def test_bad_references_are_refused_at_validation(tmp_path, attacks, needle):
    path = _suite(tmp_path, attacks)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert any(needle in p and p.startswith(f"{path}:") for p in err.value.problems), err.value.problems
