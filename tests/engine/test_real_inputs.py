"""Suite checks for real models and files: channels, builtin:photos, the optional extra, the
model contract end to end."""

import importlib.util
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audit.data.sources import FolderData
from audit.engine.runner import preflight
from audit.engine.suite import load_suite
from audit.errors import SuiteError
from audit.models.sources import LoadedModel
from audit.spec import InputSpec
from tests.engine.test_user_inputs import assert_bad_input, make_folder, run, write_suite


def suite_problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value)


def test_channels_other_than_one_or_three_are_refused_at_validate(tmp_path):
    make_folder(tmp_path / "images")
    (tmp_path / "m.py").write_text("import torch\ndef f(): return torch.nn.Flatten()\n")
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: "import:m:f", input: {size: 8, mean: [0.5, 0.5], std: [0.2, 0.2]}}
        data: {source: folder:images, n: 2}
        metrics: [accuracy]
    """)
    assert "s.yaml:3: model.input: input.mean has 2 values" in problems and "give 1 or 3" in problems
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: "import:m:f", input: {size: 8, mean: [0.5], std: [0.2]}}
        data: {source: builtin:shapes, n: 2}
        metrics: [accuracy]
    """)
    assert "builtin:shapes images are drawn in colour (3 channels) and the model takes 1" in problems


def test_a_one_channel_model_gets_greyscale_images(tmp_path):
    make_folder(tmp_path / "images", per_class=2)
    spec = InputSpec(16, (0.5,), (0.25,))
    data = FolderData(tmp_path / "images", None, spec, 0, None)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert preflight(LoadedModel(model.eval(), spec, "test", "d"), data, torch.device("cpu")) == 2


def test_builtin_photos_checks(tmp_path):
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: builtin:shapes-resnet}
        data: {source: builtin:photos, split: train}
        metrics: [accuracy]
    """)
    assert "data.split: builtin:photos has one split, test" in problems
    assert "data.n: n is 32 but builtin:photos has 8 photos" in problems


def test_a_missing_extra_is_named_in_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("timm", "skimage") else real(name, *a))
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: builtin:efficientnet-lite0}
        data: {source: builtin:photos, n: 8}
        metrics: [accuracy]
    """)
    lines = problems.splitlines()
    assert any("model.source: builtin:efficientnet-lite0 needs the optional extra 'real' (timm not installed)"
               in line for line in lines), problems
    assert any("data.source: builtin:photos needs the optional extra 'real' (scikit-image not installed)"
               in line for line in lines), problems
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: "timm:resnet18"}
        data: {source: builtin:shapes, n: 8}
        metrics: [accuracy]
    """)
    assert "timm: models need timm (the optional extra 'real')" in problems


def test_unknown_timm_model_gets_a_suggestion(tmp_path):
    pytest.importorskip("timm")
    problems = suite_problems(tmp_path, """
        name: s
        model: {source: "timm:resnet1B"}
        data: {source: builtin:shapes, n: 8}
        metrics: [accuracy]
    """)
    assert "timm has no model 'resnet1B' — did you mean" in problems


@pytest.mark.slow
def test_a_softmax_model_is_refused_end_to_end(tmp_path, explain_audit, cli_env):
    (tmp_path / "soft.py").write_text(textwrap.dedent("""
        import torch
        def model():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2), torch.nn.Softmax(1))
    """))
    make_folder(tmp_path / "images", per_class=2)
    for name in ("cat", "dog"):  # a hidden checkpoint folder inside a class is not an image of it
        (tmp_path / "images" / name / ".ipynb_checkpoints").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / name / ".ipynb_checkpoints" / "x.png")
    model = "source: import:soft:model\ninput: {size: 16, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}"
    suite = write_suite(tmp_path, model, "source: folder:images")
    out = tmp_path / "out"
    assert_bad_input(run(explain_audit, cli_env, suite, out), out, "set model.output: probabilities")
    suite = write_suite(tmp_path, model + "\noutput: probabilities", "source: folder:images")
    proc = run(explain_audit, cli_env, suite, out)
    assert proc.returncode in (0, 1), proc.stderr
    assert "n=4 of 4" in (out / "manifest.json").read_text()
