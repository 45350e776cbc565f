"""TorchScript models (issue P): gradient explainers explain them as the eager model, hook-based
ones are refused at validate, and a model traced at a fixed batch size is caught at preflight."""

import textwrap

import pytest
import torch
from torch import nn

from audit.engine.runner import preflight
from audit.engine.suite import load_suite
from audit.errors import SuiteError, UserError
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.models.sources import LoadedModel, model_digest
from audit.testing import FLOAT32_RTOL, TINY_SPEC, TensorData, tiny_inputs, tiny_model

GRADIENT_EXPLAINERS = [("saliency", {}), ("smoothgrad", {"n_samples": 3}),
                       ("integrated_gradients", {"n_steps": 8})]


def ctx(n):
    return ExplainContext(TINY_SPEC, seed=0, sample_ids=tuple(range(n)))


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name,params", GRADIENT_EXPLAINERS)
def test_gradient_explainers_explain_a_scripted_model_as_the_eager_one(how, name, params):
    model, x = tiny_model(), tiny_inputs(3)
    # in-place ReLUs compiled into the script: they must not be rewritten, gradients flow through
    compiled = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    target = model(x).argmax(dim=1)
    explainer = EXPLAINERS.create(name, params)
    expected = explainer(model, x, target, ctx(3))
    got = explainer(compiled, x, target, ctx(3))
    assert got.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=FLOAT32_RTOL * 10, atol=1e-6 * float(expected.abs().max()))


def test_a_scripted_submodule_inside_an_eager_model():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.jit.script(tiny_model())
            self.scale = nn.ReLU(inplace=True)  # outside the script: still turned off in the copy

        def forward(self, x):
            return self.scale(self.body(x))

    model, x = Wrapper().eval(), tiny_inputs(2)
    target = torch.tensor([0, 1])
    maps = EXPLAINERS.create("saliency")(model, x, target, ctx(2))
    torch.testing.assert_close(maps, EXPLAINERS.create("saliency")(model.body, x, target, ctx(2)))
    with pytest.raises(ValueError, match="TorchScript module 'body' runs no hooks"):
        EXPLAINERS.create("gradcam").check_model(model, x)


def write_suite(tmp_path, explainers: str):
    torch.jit.save(torch.jit.script(tiny_model()), str(tmp_path / "m.pt"))
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: ts
        model:
          source: torchscript:m.pt
          input: {{size: 16, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
        data: {{source: "builtin:shapes", n: 2}}
        explainers: {explainers}
        metrics: [spearman]
        """))
    return path


def test_hook_based_explainers_on_torchscript_are_refused_at_validate(tmp_path):
    with pytest.raises(SuiteError) as info:
        load_suite(write_suite(tmp_path, "[saliency, gradcam, {lrp: {}}]"))
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 's.yaml'}:6: explainers: gradcam hooks the model's layers")
    assert "explainers: lrp hooks" in problems[1]
    assert all("source: import:pkg.module:callable" in p and "saliency" in p for p in problems)
    load_suite(write_suite(tmp_path, "[saliency, smoothgrad, integrated_gradients, rise]"))  # no problem


class FixedBatch(nn.Module):
    """Turns the batch size into a number: torch.jit.trace records it as a constant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 16 * 16, 6)

    def forward(self, x):
        n = int(x.shape[0])
        return self.fc(x.reshape(n, -1))


def loaded(model):
    return LoadedModel(model, TINY_SPEC, "torchscript:m.pt", model_digest(model))


def test_a_model_traced_at_a_fixed_batch_size_is_refused_at_the_sizes_it_will_see():
    gen = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(8, 3, 16, 16, generator=gen), torch.zeros(8, dtype=torch.long))
    x = TINY_SPEC.normalize(data.batch(range(4)).images)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(FixedBatch().eval(), x)
    assert preflight(loaded(traced), data, torch.device("cpu")) == 6  # the 4 images it was traced at
    with pytest.raises(UserError, match=r"fails .* on a batch of 1 images .* torch.jit.script"):
        preflight(loaded(traced), data, torch.device("cpu"), [1, 4, 8, 32])
    scripted = torch.jit.script(FixedBatch().eval())  # script keeps the shape symbolic: fine
    assert preflight(loaded(scripted), data, torch.device("cpu"), [1, 4, 8, 32]) == 6
