import textwrap
from pathlib import Path

import pytest

from audit.engine.plan import plan_cells
from audit.engine.suite import load_suite
from audit.errors import SuiteError, UserError

ROOT = Path(__file__).resolve().parents[2]
BASE = """\
name: t
seed: 3
model:
  source: builtin:shapes-resnet
data:
  source: builtin:shapes
  n: 4
  batch_size: 2
explainers:
  - saliency
  - id: sal-prob
    saliency: {output: probability}
attacks: [none, {gaussian_noise: {sigma: 0.1}}]
metrics: [spearman, accuracy]
gates:
  - {attack: gaussian_noise, explainer: saliency, metric: spearman, min: 0.3}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text) -> list[str]:
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, text))
    return err.value.problems


def test_shipped_suites_validate():
    shipped = sorted((ROOT / "suites").glob("*.yaml"))
    assert {"smoke.yaml", "full.yaml", "sanity.yaml", "active.yaml"} <= {p.name for p in shipped}
    for path in shipped:
        loaded = load_suite(path)
        assert loaded.suite.explainers and loaded.suite.metrics


def test_label_target_on_two_class_images_is_a_suite_problem(tmp_path):
    text = BASE.replace("seed: 3\n", "seed: 3\ntarget: label\n").replace("builtin:shapes\n", "builtin:shapes-pairs\n")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'suite.yaml'}:3: target: builtin:shapes-pairs images hold two classes and carry no "
        "label; use target: predicted"]


def test_items_normalise_and_cells_are_planned(tmp_path):
    suite = load_suite(write(tmp_path, BASE)).suite
    assert [(e.id, e.plugin, e.params) for e in suite.explainers] == [
        ("saliency", "saliency", {}), ("sal-prob", "saliency", {"output": "probability"})]
    cells = plan_cells(suite)
    # 2 attacks x (1 model metric + 2 explainers x 1 map metric)
    assert len(cells) == 6
    assert {c.explainer for c in cells if c.metric == "accuracy"} == {"-"}


def test_near_miss_plugin_name_reports_line_and_suggestion(tmp_path):
    found = problems(tmp_path, BASE.replace("  - saliency\n  - id", "  - salency\n  - id"))
    # the gate naming 'saliency' is orphaned by the typo too; only the cause is reported
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'suite.yaml'}:10: ")
    assert "did you mean 'saliency'?" in found[0]


def test_wrong_parameter_and_unknown_parameter(tmp_path):
    found = problems(tmp_path, BASE.replace("sigma: 0.1", "sigma: loud").replace(
        "{output: probability}", "{outptu: probability}"))
    assert any(":12: " in p and "unknown parameter" in p and "output" in p for p in found)
    assert any(":13: " in p and "sigma" in p for p in found)


def test_a_whole_parameter_set_problem_names_the_plugin_alone(tmp_path):
    # a model-level validator (not one field's) has no field name: no dangling "rise.:"
    found = problems(tmp_path, BASE.replace("  - saliency\n  - id", "  - rise: {design: orthogonal, p: 0.3}\n  - id"))
    assert found == [f"{tmp_path / 'suite.yaml'}:10: rise: design: orthogonal needs p: 0.5 (its cells are "
                     "balanced fair coins), got p: 0.3; use design: iid for another p"]


def test_every_problem_is_reported_with_its_line(tmp_path):
    text = BASE.replace("seed: 3", "seed: three").replace("  n: 4", "  n: 4\n  colour: red")
    found = problems(tmp_path, text)
    assert any(":2: " in p and "seed" in p for p in found)
    assert any(":8: " in p and "unknown key" in p for p in found)


def test_duplicate_ids_and_bad_gates(tmp_path):
    text = BASE.replace("  - id: sal-prob\n", "  - id: saliency\n")
    assert any("used twice" in p for p in problems(tmp_path, text))
    found = problems(tmp_path, BASE + "  - {attack: nope, explainer: saliency, metric: aopc, min: 0}\n")
    assert any(":17: " in p and "computes no metric 'aopc'" in p for p in found)
    assert any(":17: " in p and "no attack with id 'nope'" in p for p in found)


def test_missing_files_and_sources(tmp_path):
    text = BASE.replace("source: builtin:shapes-resnet", "source: builtin:shapes-resnet\n  weights: nope.pt")
    assert any("weights file" in p and "not found" in p for p in problems(tmp_path, text))
    text = BASE.replace("source: builtin:shapes\n", "source: folder:missing_dir\n")
    assert any("image folder" in p for p in problems(tmp_path, text))
    text = BASE.replace("builtin:shapes-resnet", "onnx:model.onnx")
    assert any("model.source" in p for p in problems(tmp_path, text))
    text = BASE.replace("  n: 4", "  n: 999999")
    assert any("lower n" in p for p in problems(tmp_path, text))


def test_invalid_yaml_and_missing_file(tmp_path):
    found = problems(tmp_path, "name: [x\n")
    assert len(found) == 1 and "invalid YAML" in found[0]
    with pytest.raises(UserError, match="not found"):
        load_suite(tmp_path / "absent.yaml")
    assert problems(tmp_path, "")[0].endswith("the suite is empty; see suites/smoke.yaml for the form")


def test_gate_needs_a_bound_and_model_metrics_use_dash(tmp_path):
    found = problems(tmp_path, BASE + "  - {metric: accuracy, explainer: saliency}\n")
    assert any("min:, max: or both" in p for p in found)
    found = problems(tmp_path, BASE + "  - {metric: accuracy, explainer: saliency, min: 0.5}\n")
    assert any("does not depend on an explainer" in p for p in found)


def test_gate_on_a_map_comparison_under_the_identity_attack_is_warned(tmp_path):
    text = BASE + """\
  - {attack: none, explainer: saliency, metric: spearman, min: 0.99}
  - {attack: "*", explainer: saliency, metric: spearman, min: 0.2}
  - {attack: none, explainer: "-", metric: accuracy, min: 0.9}
"""
    loaded = load_suite(write(tmp_path, text))  # a warning, not a problem: the suite loads
    path = tmp_path / "suite.yaml"
    # only the first new gate: the '*' one also matches gaussian_noise and can fail there, and
    # accuracy is no map comparison
    assert loaded.warnings == [
        f"{path}:17: warning: gates[1]: metric 'spearman' compares the clean map with the attacked one, and "
        "attack 'none' is the identity (its map is the clean map): the gate holds by construction and "
        "cannot fail; gate this metric under an attack that changes the input or the model"]
    only_identity = BASE.replace("attacks: [none, {gaussian_noise: {sigma: 0.1}}]", "attacks: [none]").replace(
        "attack: gaussian_noise", 'attack: "*"') + "  - {metric: topk_intersection, min: 0.5}\n"
    only_identity = only_identity.replace("metrics: [spearman, accuracy]", "metrics: [spearman, accuracy, "
                                          "{fsr: {fooling: active}, id: fsr_active}, topk_intersection]")
    only_identity += "  - {metric: fsr_active, max: 0.1}\n"
    warned = load_suite(write(tmp_path, only_identity)).warnings
    # '*' over identity attacks alone holds by construction too; FSR-active compares with the other
    # class's map, which the identity does not fix
    assert [w.split(": warning: ")[1].split(":")[0] for w in warned] == ["gates[0]", "gates[1]"]


def test_validate_prints_the_warning_and_exits_0(tmp_path, explain_audit, cli_env):
    import subprocess

    path = write(tmp_path, BASE + "  - {attack: none, explainer: saliency, metric: spearman, min: 0.99}\n")
    proc = subprocess.run([*explain_audit, "validate", str(path)], capture_output=True, text=True, env=cli_env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{path}:17: warning: gates[1]: metric 'spearman' compares the clean map with the attacked one, and "
        "attack 'none' is the identity (its map is the clean map): the gate holds by construction and "
        "cannot fail; gate this metric under an attack that changes the input or the model"]
    assert "ok (" in proc.stdout


@pytest.mark.parametrize("bound", [".nan", ".inf", "-.inf"])
def test_a_non_finite_gate_bound_is_a_suite_problem(tmp_path, bound):
    """A NaN bound would pass validate, compute the whole matrix, then fail writing the JSON."""
    found = problems(tmp_path, BASE.replace("min: 0.3}", f"min: {bound}}}"))
    assert len(found) == 1 and found[0].endswith(":16: gates.0.min: Input should be a finite number")
