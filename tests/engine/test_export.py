"""export-attacked and the export: model source: an attacked model written by torch.export and
loaded back computes what the attacked model computes, maps included."""

import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit.attacks.base import AttackContext
from audit.attacks.model_randomization import ModelRandomization
from audit.cli import app
from audit.engine.cache import Cache
from audit.engine.export import export_attacked_model
from audit.engine.runner import Runner
from audit.engine.suite import ModelConfig, load_suite
from audit.errors import UserError
from audit.explainers._graph import target_layer
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.models.sources import load_model
from audit.testing import LOGIT_ATOL

SUITE = """\
name: e
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 4, batch_size: 4}
explainers: [saliency]
attacks:
  - none
  - {weight_noise: {sigma: 0.05}}
  - {id: gate, gating: {steps: 2, images: 16, calibration: 16, batch_size: 4, decoy_steps: 1}}
  - {gaussian_noise: {sigma: 0.1}}
metrics: [accuracy]
"""
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    loaded = load_suite(path)
    runner = Runner(loaded, Cache(None))
    batch = runner.data.batch(range(4))
    return folder, loaded, runner, runner.model.spec.normalize(batch.images)


def load_export(path: Path):
    return load_model(ModelConfig(source=f"export:{path}"), lambda p: Path(p), CPU)


def close(a, b):
    scale = float(b.abs().max().clamp_min(1.0))
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=LOGIT_ATOL * scale)


def test_a_manipulated_model_round_trips_with_its_maps(setting):
    folder, loaded, runner, x = setting
    written = export_attacked_model(loaded, "weight_noise", folder / "wn")
    assert written.path == folder / "wn" / "model.pt2"
    assert written.check_args.startswith(f"--model export:{written.path}")
    attacked = runner.preparation.model("weight_noise")
    back = load_export(written.path)
    assert back.spec == runner.model.spec  # the input spec travels inside the file
    with torch.no_grad():
        for batch in (x[:1], x):
            assert close(back.model(batch), attacked(batch))
    target = attacked(x).argmax(1)
    # the module hierarchy is back: Grad-CAM finds the same layer by name and draws the same maps
    assert target_layer(back.model, x).name == target_layer(attacked, x).name == "layer3"
    ctx = ExplainContext(runner.model.spec, 0, tuple(range(4)))
    for name in ("gradcam", "saliency"):
        mine = EXPLAINERS.create(name, {})(back.model, x, target, ctx)
        theirs = EXPLAINERS.create(name, {})(attacked, x, target, ctx)
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()))
    # the randomisation check finds the same layers on the restored program and re-initialises them
    randomize = ModelRandomization(layers=4)
    ctx = AttackContext(runner.model.spec, seed=1)
    chosen = randomize.chosen_layers(back.model, ctx)
    assert chosen == randomize.chosen_layers(attacked, ctx) and len(chosen) == 4
    with torch.no_grad():
        assert not close(randomize.prepare(back.model, ctx)(x), back.model(x))


def test_state_dict_format_for_the_same_architecture(setting):
    folder, loaded, runner, x = setting
    written = export_attacked_model(loaded, "weight_noise", folder / "sd", "state_dict")
    assert written.check_args == f"--model builtin:shapes-resnet --weights {written.path} --data builtin:shapes"
    back = load_model(ModelConfig(source="builtin:shapes-resnet", weights=str(written.path)), lambda p: Path(p), CPU)
    with torch.no_grad():
        assert torch.equal(back.model(x), runner.preparation.model("weight_noise")(x))


def test_the_gated_model_exports_with_its_gate_and_refuses_state_dict(setting):
    folder, loaded, runner, x = setting
    with pytest.raises(UserError, match="changes the model's architecture"):
        export_attacked_model(loaded, "gate", folder / "g", "state_dict")
    assert not (folder / "g").exists()
    written = export_attacked_model(loaded, "gate", folder / "g")
    gated, back = runner.preparation.model("gate"), load_export(written.path).model
    masked = x * (torch.rand(x.shape[0], 1, *x.shape[2:], generator=torch.Generator().manual_seed(0)) > 0.5)
    with torch.no_grad():
        for batch in (x, masked):
            assert close(back(batch), gated(batch))


@pytest.mark.parametrize("attack, message", [("gaussian_noise", "changes the inputs, not the model"),
                                             ("nope", "has no attack 'nope'")])
def test_refusals_write_nothing(setting, attack, message):
    folder, loaded, _, _ = setting
    result = CliRunner().invoke(app, ["export-attacked", str(loaded.path), attack, "--out", str(folder / attack),
                                      "--cache", "none"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (folder / attack).exists()


def test_export_source_validation(tmp_path):
    plain = tmp_path / "plain.pt2"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(2, 3, 8, 8))
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(2, 3, 8, 8),)), str(plain))
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nmodel: {{source: 'export:{plain}', weights: w.pt}}\ndata: {{source: builtin:shapes}}\n"
                     "explainers: [saliency]\nmetrics: [spearman]\n")
    with pytest.raises(UserError) as err:
        load_suite(suite)
    found = "\n".join(err.value.problems)
    assert "carries no input spec" in found and "a torch.export file carries its weights" in found
