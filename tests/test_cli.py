"""End to end through the command line, as a user or a CI pipeline runs it."""

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ("results.jsonl", "summary.csv", "report.md", "manifest.json")


def run_cli(explain_audit, cli_env, *args, cwd=ROOT):
    return subprocess.run([*explain_audit, *args], capture_output=True, text=True, env=cli_env, cwd=cwd,
                          timeout=600)


def suite_file(tmp_path, **replace) -> Path:
    text = (ROOT / "suites" / "quick.yaml").read_text()
    for old, new in replace.items():
        text = text.replace(old.replace("_", " "), new)
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path, explain_audit, cli_env):
    out = tmp_path / "report"
    started = time.perf_counter()
    proc = run_cli(explain_audit, cli_env, "run", "suites/quick.yaml", "--out", str(out))
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert f"report: {out / 'report.md'}" in proc.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # 2 attacks x (2 model metrics + 1 explainer x 1 map metric) x 32 images
    assert len(records) == 2 * 3 * 32
    assert {r["status"] for r in records} <= {"ok", "degenerate"}
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("attack,explainer,metric,n,mean,ci_low,ci_high,higher_is_better,status")
    assert len(summary) == 1 + 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and len(manifest["model"]["digest"]) == 64
    assert {"setup", "compute", "total"} <= set(manifest["timings_s"])
    assert manifest["versions"]["torch"]
    report = (out / "report.md").read_text()
    assert "PASS" in report and "| none | saliency | spearman | 32 | 1.0000" in report
    # the quick start's budget is 60 s on 2 cores; leave room for a loaded CI machine
    assert wall < 120


@pytest.mark.slow
def test_failed_gate_exits_1(tmp_path, explain_audit, cli_env):
    path = suite_file(tmp_path, **{"spearman, min: 0.3}": "spearman, max: 0.1}"})
    proc = run_cli(explain_audit, cli_env, "run", str(path), "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 1, proc.stderr
    assert "gate FAIL: spearman [attack gaussian_noise, explainer saliency]" in proc.stdout


def test_validate_reports_line_and_suggestion(tmp_path, explain_audit, cli_env):
    path = suite_file(tmp_path, **{"  - saliency": "  - salency"})
    proc = run_cli(explain_audit, cli_env, "validate", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"{path}:13: explainers: unknown explainer 'salency' — did you mean 'saliency'? "
                     "(see `explain-audit list explainers`)"]
    ok = run_cli(explain_audit, cli_env, "validate", "suites/quick.yaml")
    assert ok.returncode == 0 and "ok (6 cells, 3 gates)" in ok.stdout


@pytest.mark.parametrize("case", ["unknown-plugin", "bad-yaml", "missing-weights", "out-is-file",
                                  "missing-suite", "bad-param"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, explain_audit, cli_env, case):
    out = tmp_path / "out"
    args = {
        "unknown-plugin": lambda: [str(suite_file(tmp_path, **{"  - saliency": "  - gradcm"}))],
        "bad-yaml": lambda: [str(suite_file(tmp_path, **{"seed: 0": "seed: [0"}))],
        "missing-weights": lambda: [str(suite_file(tmp_path, **{
            "source: builtin:shapes-resnet": "source: builtin:shapes-resnet\n  weights: absent.pt"}))],
        "out-is-file": lambda: ["suites/quick.yaml"],
        "missing-suite": lambda: [str(tmp_path / "nope.yaml")],
        "bad-param": lambda: [str(suite_file(tmp_path, **{"sigma: 0.05": "sigma: -1"}))],
    }[case]()
    if case == "out-is-file":
        out = tmp_path / "file.txt"
        out.write_text("keep me")
    proc = run_cli(explain_audit, cli_env, "run", *args, "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if case == "out-is-file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def test_list_shows_plugins_with_parameters(explain_audit, cli_env):
    proc = run_cli(explain_audit, cli_env, "list")
    assert proc.returncode == 0, proc.stderr
    for heading in ("explainers:", "attacks:", "metrics:"):
        assert heading in proc.stdout
    assert "gaussian_noise — " in proc.stdout and "sigma: float (default 0.05)" in proc.stdout
    assert "higher_is_better=True" in proc.stdout
    only = run_cli(explain_audit, cli_env, "list", "attacks")
    assert "explainers:" not in only.stdout and "none — " in only.stdout
    bad = run_cli(explain_audit, cli_env, "list", "explaners")
    assert bad.returncode == 2


def test_model_returning_nan_is_bad_input(tmp_path, explain_audit, cli_env):
    (tmp_path / "nanmodel.py").write_text(textwrap.dedent("""
        import torch
        class NaN(torch.nn.Module):
            def forward(self, x):
                return torch.full((x.shape[0], 6), float("nan"))
        def build():
            return NaN()
    """))
    path = suite_file(tmp_path, **{"source: builtin:shapes-resnet": (
        "source: import:nanmodel:build\n  input: {size: 64, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}")})
    out = tmp_path / "out"
    proc = run_cli(explain_audit, cli_env, "run", str(path), "--out", str(out))
    assert proc.returncode == 2
    assert "NaN or infinite logits" in proc.stderr and not out.exists()
