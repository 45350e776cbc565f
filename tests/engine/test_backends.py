"""Every backend gives the in-process results."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SUITE = """\
name: backends
seed: 2
device: cpu
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 12, batch_size: 4}
explainers: [saliency]
attacks: [none, {gaussian_noise: {sigma: 0.1}}]
metrics: [spearman, accuracy]
"""


def run(explain_audit, cli_env, suite: Path, out: Path, *extra):
    return subprocess.run([*explain_audit, "run", str(suite), "--out", str(out), "-q", "--cache", "none",
                           *extra], env=cli_env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run, once for every backend compared with it."""
    tmp_path = tmp_path_factory.mktemp("reference")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "inprocess"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLAIN_AUDIT_CACHE": str(tmp_path / "cache")}
    env.pop("EXPLAIN_AUDIT_FAULT", None)
    proc = run([sys.executable, "-m", "audit.cli"], env, suite, out)
    assert proc.returncode in (0, 1), proc.stderr
    return suite, out


@pytest.mark.slow
def test_process_pool_matches_in_process(tmp_path, explain_audit, cli_env, reference):
    suite, expected = reference
    out = tmp_path / "pool"
    proc = run(explain_audit, cli_env, suite, out, "--workers", "2")
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads((out / "manifest.json").read_text())["backend"]["workers"] == 2
    for name in ("results.jsonl", "summary.csv"):
        assert (out / name).read_text() == (expected / name).read_text()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra [ray])")
def test_ray_local_cluster_matches_in_process(tmp_path, explain_audit, cli_env, reference):
    suite, expected = reference
    out = tmp_path / "ray"
    proc = run(explain_audit, cli_env, suite, out, "--backend", "ray")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "ray"
    assert any(stage.startswith("explain ") for stage in manifest["timings_s"])  # workers' timings reach it
    for name in ("results.jsonl", "summary.csv"):
        assert (out / name).read_text() == (expected / name).read_text()


def test_bad_backend_options_are_usage_errors(tmp_path, explain_audit, cli_env):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    for extra, needle in ((["--workers", "0"], "--workers must be at least 1"),
                          (["--backend", "spark"], "unknown backend 'spark'"),
                          (["--address", "auto"], "add --backend ray")):
        proc = run(explain_audit, cli_env, suite, tmp_path / "o", *extra)
        assert proc.returncode == 2 and needle in proc.stderr
        assert not (tmp_path / "o").exists()
