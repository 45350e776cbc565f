"""`explain-audit check` end to end on a torchvision ResNet-18 state_dict and an ImageFolder made
here (benchmarks/check_resnet18.py times the same case at n = 32)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from check_resnet18 import check_command, make_case  # noqa: E402


@pytest.mark.slow
def test_check_a_torchvision_state_dict_on_an_image_folder(tmp_path, cli_env):
    root, weights = make_case(tmp_path, per_class=2, size=48)
    out = tmp_path / "out"
    proc = subprocess.run(check_command(root, weights, out, n=6, input_size=64), capture_output=True, text=True,
                          env=cli_env, cwd=ROOT, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    rows = list(csv.DictReader((out / "verdicts.csv").open()))
    assert len(rows) == 10 and {r["verdict"] for r in rows} <= {"pass", "warn", "fail"}
    assert proc.returncode == (1 if any(r["verdict"] == "fail" for r in rows) else 0)
    report = (out / "report.md").read_text()
    assert "torchvision:resnet18" in report and "explainer gradcam: layer layer4" in report
