"""Reports of real (tiny) runs: `report` re-renders byte-identical files from the run folder
alone; `compare` flags almost nothing between two seeds and flags an explainer broken on purpose."""

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from audit.engine.run import run_suite
from audit.engine.suite import load_suite
from audit.report.compare import compare_runs, regressions
from audit.report.rundir import load_run

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ("report.md", "junit.xml", "report.html")

SUITE = """\
name: tiny
seed: {seed}
device: cpu
model:
  source: builtin:shapes-resnet
data:
  source: builtin:shapes
  split: test
  n: 16
  batch_size: 16
explainers: [saliency, gradcam]
attacks: [none, {{gaussian_noise: {{sigma: 0.05}}}}]
metrics: [spearman, pointing_game, {{aopc: {{steps: 4}}}}, accuracy, agreement]
gates:
  - {{attack: none, explainer: gradcam, metric: pointing_game, min: 0.5}}
  - {{attack: gaussian_noise, explainer: "-", metric: agreement, min: 0.9}}
"""


def _run(folder: Path, seed: int = 0) -> Path:
    suite = folder / f"suite{seed}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    suite.write_text(SUITE.format(seed=seed))
    out = folder / "out"
    run_suite(load_suite(suite), out, cache_dir=None)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {"seed0": _run(base / "seed0", 0), "seed1": _run(base / "seed1", 1)}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """The same suite, seed 0, with Grad-CAM broken on purpose: its maps negated (the least
    relevant pixel ranks first)."""
    from audit.explainers.base import EXPLAINERS

    cls = EXPLAINERS.get("gradcam")
    original = cls.__call__
    cls.__call__ = lambda self, *a, **k: -original(self, *a, **k)
    try:
        return _run(tmp_path_factory.mktemp("broken"), 0)
    finally:
        cls.__call__ = original


def _cli(*args, summary: Path | None = None):
    """The command line in this process (typer's runner: the exit code, stdout and stderr apart)."""
    from typer.testing import CliRunner

    from audit.cli import app

    env = {"GITHUB_STEP_SUMMARY": None if summary is None else str(summary)}
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.mark.slow
def test_report_rerenders_byte_identical_from_the_run_folder_alone(runs, tmp_path):
    run = runs["seed0"]
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for name in REPORTS:  # only the data files stay: the reports must come back from them
        (copy / name).unlink()
    proc = _cli("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert f"report.html: {(copy / 'report.html').resolve()}" in proc.stdout
    for name in REPORTS:
        assert (copy / name).read_bytes() == (run / name).read_bytes(), name
    html = (run / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # the pictures come from samples.npz (numpy arrays, no pickle): the gaussian_noise heatmap grid
    # and the AOPC curves
    import numpy as np

    with np.load(run / "samples.npz", allow_pickle=False) as stored:
        assert "index" in stored.files
    titles = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', html)
    assert any(t.startswith("Maps under gaussian_noise") for t in titles), titles
    assert any(t.startswith("aopc perturbation curves") for t in titles), titles


@pytest.mark.slow
def test_report_appends_to_the_github_step_summary(runs, tmp_path):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    copy = tmp_path / "copy"
    shutil.copytree(runs["seed0"], copy)
    assert _cli("report", str(copy), summary=summary).returncode == 0
    assert summary.read_text() == "earlier step\n" + (runs["seed0"] / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "not-a-run", "bad-json"])
def test_report_and_compare_refuse_a_bad_folder_in_one_line(runs, tmp_path, case):
    bad = tmp_path / "bad"
    if case == "not-a-run":
        bad.mkdir()
        (bad / "notes.txt").write_text("x")
    elif case == "bad-json":
        shutil.copytree(runs["seed0"], bad)
        (bad / "manifest.json").write_text("{not json")
    for args in (["report", str(bad)], ["compare", str(runs["seed0"]), str(bad)]):
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert str(bad) in proc.stderr
    if case != "missing":
        assert sorted(p.name for p in bad.iterdir()) == sorted(p.name for p in bad.iterdir())  # nothing added
        assert not (bad / "report.html").exists() or case == "bad-json"


@pytest.mark.slow
def test_compare_two_seeds_flags_at_most_one_percent_of_rows(runs):
    changes, common = compare_runs(load_run(runs["seed0"]), load_run(runs["seed1"]))
    moved = [c for c in changes if c.direction in ("better", "worse", "lost", "gained")]
    assert common == 2 * (2 + 2 * 3)
    assert len(moved) <= 0.01 * common, [c.name for c in moved]
    proc = _cli("compare", str(runs["seed0"]), str(runs["seed1"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"0 of {common} common rows moved")


@pytest.mark.slow
def test_compare_flags_the_rows_of_an_explainer_broken_on_purpose(runs, broken_run):
    changes, common = compare_runs(load_run(runs["seed0"]), load_run(broken_run))
    flagged = {c.name: c for c in changes}
    assert flagged, "the negated Grad-CAM moved nothing"
    assert all("/gradcam/" in name for name in flagged)  # saliency and the model rows stay put
    assert flagged["none/gradcam/pointing_game"].direction == "worse"
    assert [c.name for c in regressions(changes)] == ["none/gradcam/pointing_game"]
    proc = _cli("compare", str(runs["seed0"]), str(broken_run))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "| none | gradcam | pointing_game |" in proc.stdout and "| worse | yes |" in proc.stdout
    # and the report of the broken run says so in words and in JUnit
    text = (broken_run / "report.md").read_text()
    assert re.search(r"Gate failed: none/gradcam/pointing_game: pointing_game 0\.\d\d < min 0\.50 \[CI 0\.00, ",
                     text)
    assert 'name="none/gradcam/pointing_game"' in (broken_run / "junit.xml").read_text()
