"""The model contract at preflight: logits (or a declared output kind), determinism in eval mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.engine.runner import preflight
from audit.errors import UserError
from audit.models.contract import ProbabilitiesToLogits, output_kind
from audit.models.sources import LoadedModel, model_digest
from audit.spec import InputSpec
from audit.testing import PROB_ATOL, TensorData

SPEC = InputSpec(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class Linear(nn.Module):
    def __init__(self, head: str = "logits", noise: str = ""):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 5)
        self.head, self.noise = head, noise

    def forward(self, x):
        z = self.fc(x.flatten(1)) * 3
        if self.noise == "dropout":
            z = F.dropout(z, 0.5, training=True)  # functional dropout left on in eval mode
        if self.noise == "gauss":
            z = z + torch.randn_like(z)
        if self.head == "probabilities":
            return z.softmax(1)
        if self.head == "log_probabilities":
            return z.log_softmax(1)
        return z


def loaded(model: nn.Module, output=None) -> LoadedModel:
    if output == "probabilities":
        model = ProbabilitiesToLogits(model)
    return LoadedModel(model.eval(), SPEC, "test", model_digest(model), output)


def data(n: int = 4) -> TensorData:
    gen = torch.Generator().manual_seed(1)
    return TensorData(torch.rand(n, 3, 8, 8, generator=gen), torch.zeros(n, dtype=torch.long))


def test_output_kind_known_answers():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    assert output_kind(z) == "logits"
    assert output_kind(z.softmax(1)) == "probabilities"
    assert output_kind(z.log_softmax(1)) == "log_probabilities"
    assert output_kind(torch.tensor([[0.2, 0.3, 0.4]])) == "logits"  # ≥ 0 but sums to 0.9
    assert output_kind(torch.tensor([[-0.1, -0.2, -3.0]])) == "logits"  # ≤ 0 but logsumexp ≠ 0
    assert output_kind(torch.tensor([[1.0], [1.0]])) == "logits"  # one class: cannot tell


@pytest.mark.parametrize("head", ["probabilities", "log_probabilities"])
def test_undeclared_probabilities_are_refused_naming_the_fix(head):
    with pytest.raises(UserError, match=f"set model.output: {head}"):
        preflight(loaded(Linear(head)), data(), torch.device("cpu"))


@pytest.mark.parametrize("head", ["probabilities", "log_probabilities"])
def test_declared_probabilities_give_the_logit_models_probabilities(head):
    model = loaded(Linear(head), output=head)
    assert preflight(model, data(), torch.device("cpu")) == 5
    x = SPEC.normalize(data().images)
    with torch.no_grad():
        expected = Linear("logits")(x).softmax(1)
        # what every metric computes from the engine's model: softmax of its outputs
        assert torch.allclose(model.model(x).softmax(1), expected, rtol=0, atol=PROB_ATOL)


def test_a_declaration_the_outputs_contradict_is_refused():
    with pytest.raises(UserError, match="model.output is probabilities but"):
        preflight(loaded(Linear("logits"), output="probabilities"), data(), torch.device("cpu"))
    # logits declared: trusted, no recognition (the escape hatch for a model that happens to
    # return non-negative rows summing to one)
    assert preflight(loaded(Linear("probabilities"), output="logits"), data(), torch.device("cpu")) == 5


@pytest.mark.parametrize("noise", ["dropout", "gauss"])
def test_randomness_in_eval_mode_is_refused(noise):
    with pytest.raises(UserError, match="not deterministic in eval mode"):
        preflight(loaded(Linear(noise=noise)), data(), torch.device("cpu"))


def test_module_dropout_in_eval_mode_passes():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 8 * 8, 4))
    assert preflight(loaded(model), data(), torch.device("cpu")) == 4


def test_output_setting_in_the_suite_schema():
    from audit.engine.suite import ModelConfig

    assert ModelConfig(source="builtin:shapes-resnet", output="probabilities").output == "probabilities"
    with pytest.raises(Exception, match="logits"):
        ModelConfig(source="builtin:shapes-resnet", output="softmax")
