"""`explain-audit check`: the suite it runs, where metrics are computed, the reference map,
bad input, and a small run end to end."""

import csv
import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from audit.cli import app
from audit.engine.cache import Cache
from audit.engine.check import THRESHOLDS, check_suite
from audit.engine.plan import plan_cells
from audit.engine.runner import Runner, Unit
from audit.engine.suite import Suite, load_suite
from audit.errors import SuiteError
from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.metrics.spearman import spearman
from audit.report.checks import RANDOMISATION_MOVED_MAX
from audit.seeding import derive_seed

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_MODEL = {"source": "builtin:shapes-resnet"}
BUILTIN_DATA = {"source": "builtin:shapes", "split": "test", "n": 32, "batch_size": 32}


def test_suites_check_yaml_is_the_check_command():
    shipped = load_suite(ROOT / "suites" / "check.yaml").suite
    built = Suite.model_validate(check_suite(BUILTIN_MODEL, BUILTIN_DATA))
    assert shipped.model_dump() == built.model_dump()
    # the sanity check's bound is the report's randomisation check's: the two never disagree
    assert THRESHOLDS["randomization_max"] == RANDOMISATION_MOVED_MAX


def test_metrics_are_planned_only_where_they_are_named():
    cells = plan_cells(Suite.model_validate(check_suite(BUILTIN_MODEL, BUILTIN_DATA)))
    keys = {c.key for c in cells}
    assert ("none", "-", "gating_probe") in keys and ("randomized", "-", "gating_probe") not in keys
    assert ("randomized", "gradcam", "spearman_abs") in keys and ("none", "gradcam", "spearman_abs") not in keys
    assert not any(c.explainer == "rise" for c in cells)  # the reference is judged by nobody
    # 2 model-level + 2 explainers x 3 metrics under none, 2 explainers x 1 under randomized
    assert len(cells) == 2 + 6 + 2


SUITE = """\
name: t
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 2, batch_size: 2}
explainers: [saliency, {rise: {n_masks: 40}}]
attacks: [none, {gaussian_noise: {sigma: 0.1}}]
metrics:
  - {id: agree, explainer_agreement: {reference: rise, resolution: 4}, explainers: [saliency]}
  - {accuracy: {}, attacks: [none]}
checks:
  - {check: manipulation, metric: agree, attack: gaussian_noise, min: 0.2}
"""


def write(tmp_path, text) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("old, new, expected", [
    ("reference: rise", "reference: lime", "metrics[0]: explainer_agreement's reference 'lime' is not an explainer"),
    ("explainers: [saliency]}", "explainers: [salency]}", "metrics[0].explainers: no explainer with id 'salency'"),
    ("attacks: [none]}", "attacks: [nope]}", "metrics[1].attacks: no attack with id 'nope'"),
    ("attack: gaussian_noise, min", "attack: gaussian_noise, explainer: rise, min",
     "checks[0].explainer: metric 'agree' is not computed for explainer 'rise'"),
    ("metric: agree,", "metric: accuracy, explainer: '-',", "checks[0].attack: metric 'accuracy' is not computed "
                                                             "under attack 'gaussian_noise'"),
    ("min: 0.2}", "min: 0.2, max: 0.9}", "a check has exactly one bound"),
    ("[saliency, {rise", "[{saliency: {}, attacks: [none]}, {rise", "explainers[0].attacks: only a metric says"),
])
def test_scope_and_check_problems(tmp_path, old, new, expected):
    assert old in SUITE
    text = SUITE.replace(old, new)
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, text))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_reference_map_is_the_reference_explainers_map_of_the_same_setting(tmp_path):
    loaded = load_suite(write(tmp_path, SUITE))
    runner = Runner(loaded, Cache(None))
    runner.preparation.prepare_all()
    rise, calls = runner.explainers["rise"], []
    original = rise.explain
    rise.explain = lambda *a: calls.append(1) or original(*a)
    records = runner.run_unit(Unit(0, "saliency"))
    assert len(calls) == 2  # one reference map per attack of the batch
    assert runner.run_unit(Unit(0, "saliency")) == records and len(calls) == 2  # shared, even uncached
    batch = runner.batch(0)
    model, spec = runner.model.model, runner.model.spec
    x = spec.normalize(batch.images)
    with torch.no_grad():
        target = model(x).argmax(1)
    noise = runner.attacked_inputs("gaussian_noise", model, x, target, batch.ids)
    assert not torch.equal(noise, x)

    def explain(name, params, inputs):
        ctx = ExplainContext(spec, derive_seed(0, "explainer", name), tuple(batch.ids))
        return EXPLAINERS.create(name, params)(model, inputs, target, ctx)

    for attack, inputs in (("none", x), ("gaussian_noise", noise)):
        mine, theirs = explain("saliency", {}, inputs), explain("rise", {"n_masks": 40}, inputs)
        pooled = [F.adaptive_avg_pool2d(m[:, None].double(), 4)[:, 0] for m in (mine, theirs)]
        expected = spearman(*pooled).tolist()
        got = [r["value"] for r in records if r["attack"] == attack and r["metric"] == "agree"]
        assert got == pytest.approx(expected, abs=1e-6), attack


def invoke(*args):
    return CliRunner().invoke(app, ["check", *args], catch_exceptions=False)


@pytest.mark.parametrize("args, message", [
    (["--model", "builtin:shapes-resnet", "--weights", "absent.pt", "--data", "builtin:shapes"],
     "--weights: weights file"),
    (["--model", "onnx:model.onnx", "--data", "builtin:shapes"], "--model: source 'onnx:model.onnx' must be one of"),
    (["--model", "builtin:shapes-resnet", "--data", "folder:no_such_dir"], "--data:"),
    (["--model", "builtin:shapes-resnet", "--mean", "0.5,0.5,0.5", "--data", "builtin:shapes"],
     "--input-size, --std missing"),
    (["--model", "builtin:shapes-resnet", "--input-size", "64", "--mean", "a,b", "--std", "1,1,1",
      "--data", "builtin:shapes"], "--mean 'a,b': give one number per channel"),
    (["--model", "builtin:shapes-resnet", "--data", "builtin:shapes", "--n", "0"], "--n must be at least 1"),
    (["--model", "export:absent.pt2", "--data", "builtin:shapes"], "--model: torch.export file"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["check", *args, "--out", str(out), "--cache", "none"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_out_is_a_file_is_refused_and_kept(tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("keep me")
    result = CliRunner().invoke(app, ["check", "--model", "builtin:shapes-resnet", "--data", "builtin:shapes",
                                      "--out", str(out), "--cache", "none"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert out.read_text() == "keep me"


@pytest.mark.slow
def test_check_end_to_end_on_the_reference_model(tmp_path):
    """A small check (n = 8) runs through: verdicts.csv, the table first in report.md and
    report.html, the exit code from the verdicts, a byte-identical re-render."""
    out = tmp_path / "check"
    result = CliRunner().invoke(app, ["check", "--model", "builtin:shapes-resnet", "--data", "builtin:shapes",
                                      "--n", "8", "--out", str(out), "--cache", str(tmp_path / "cache"), "-q"])
    rows = list(csv.DictReader((out / "verdicts.csv").open()))
    # gating, accuracy: one row each; manipulation (2 metrics), sanity, fragility: one per judged explainer
    assert [(r["check"], r["explainer"]) for r in rows] == [
        ("gating", "-"), ("manipulation", "saliency"), ("manipulation", "gradcam"), ("manipulation", "saliency"),
        ("manipulation", "gradcam"), ("sanity", "saliency"), ("sanity", "gradcam"), ("fragility", "saliency"),
        ("fragility", "gradcam"), ("accuracy", "-")]
    words = {r["verdict"] for r in rows}
    assert words <= {"pass", "warn", "fail"}
    assert result.exit_code == (1 if "fail" in words else 0), result.output
    assert "fail" not in {r["verdict"] for r in rows if r["check"] in ("gating", "accuracy")}
    report = (out / "report.md").read_text()
    assert report.index("## Checks") < report.index("## Findings")
    assert "| gating | - | " in report and "| sanity | gradcam | " in report
    html = (out / "report.html").read_text()
    assert html.index('id="checks"') < html.index('id="identity"')
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"] == {"strict": False} and manifest["suite"]["checks"]
    before = {n: (out / n).read_bytes() for n in ("verdicts.csv", "report.md", "junit.xml", "report.html")}
    (out / "verdicts.csv").unlink()
    again = CliRunner().invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert {n: (out / n).read_bytes() for n in before} == before
    junit = (out / "junit.xml").read_text()
    assert '<testsuite name="check checks"' in junit and 'name="gating/-/gating_probe"' in junit
