"""A run killed with SIGKILL at any moment and started again equals an uninterrupted run."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = """\
name: resume
seed: 5
device: cpu
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 16, batch_size: 4}
explainers: [saliency, {id: sal-p, saliency: {output: probability}}]
attacks: [none, {gaussian_noise: {sigma: 0.08}}]
metrics: [spearman, accuracy, agreement]
"""
OUTPUTS = ("results.jsonl", "summary.csv")


def run(explain_audit, cli_env, suite, out, cache, fault=None):
    env = {**cli_env, "EXPLAIN_AUDIT_CACHE": str(cache)}
    if fault:
        env["EXPLAIN_AUDIT_FAULT"] = fault
    return subprocess.run([*explain_audit, "run", str(suite), "--out", str(out), "-q"], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_results(tmp_path, explain_audit, cli_env):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    reference = tmp_path / "reference"
    assert run(explain_audit, cli_env, suite, reference, tmp_path / "cache-ref").returncode in (0, 1)

    cache = tmp_path / "cache"
    out = tmp_path / "resumed"
    # 4 batches x 3 groups = 12 units; each unit writes maps and cells. Crash at several writes,
    # both after an entry is in place and in the middle of writing one.
    for fault in ("during:1", "after:3", "during:9", "after:14"):
        proc = run(explain_audit, cli_env, suite, out, cache, fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr)
        if fault == "during:1":  # a torn write leaves only a temp file, never a damaged entry
            files = [p for p in cache.rglob("*") if p.is_file()]
            assert files and all(p.name.startswith(".tmp-") for p in files)
    # and once at an arbitrary moment from outside
    env = {**cli_env, "EXPLAIN_AUDIT_CACHE": str(cache)}
    entries_prior = {p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
    proc = subprocess.Popen([*explain_audit, "run", str(suite), "--out", str(out), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill as soon as it has cached something new: a fixed sleep is too short where start-up is
    # slow (a GPU machine initialising CUDA) and lets a fast machine finish the run
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if {p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")} > entries_prior:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed; kill it sooner"
    entries_before = {p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
    assert entries_before > entries_prior, "the run killed from outside cached nothing before dying"

    final = run(explain_audit, cli_env, suite, out, cache)
    assert final.returncode in (0, 1), final.stderr
    for name in OUTPUTS:
        assert (out / name).read_text() == (reference / name).read_text(), name
    # the resumed run reused what the killed runs finished instead of recomputing it
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cache"]["hits"] > 0
    # and a further run recomputes nothing
    again = run(explain_audit, cli_env, suite, tmp_path / "again", cache)
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again.returncode in (0, 1) and manifest["cache"]["misses"] == 0


TRAINING_SUITE = """\
name: resume-training
seed: 6
device: cpu
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 8, batch_size: 4}
explainers: [saliency]
attacks: [none, {gating: {steps: 30, batch_size: 8, images: 64, calibration: 32, width: 4}}]
metrics: [spearman, agreement]
"""


@pytest.mark.slow
def test_kill_during_training_and_resume_gives_identical_results(tmp_path, explain_audit, cli_env):
    suite = tmp_path / "suite.yaml"
    suite.write_text(TRAINING_SUITE)
    reference = tmp_path / "reference"
    assert run(explain_audit, cli_env, suite, reference, tmp_path / "cache-ref").returncode in (0, 1)

    cache, out = tmp_path / "cache", tmp_path / "resumed"
    proc = run(explain_audit, cli_env, suite, out, cache, "train:17")  # in the middle of training
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert not (out / "results.jsonl").exists()
    final = run(explain_audit, cli_env, suite, out, cache)
    assert final.returncode in (0, 1), final.stderr
    for name in OUTPUTS:
        assert (out / name).read_text() == (reference / name).read_text(), name
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert "prepare gating" in manifest["timings_s"]
    assert manifest["training_data"]["description"].startswith("builtin:shapes split=train")
    # the trained state is cached: a further run imports it instead of training again
    proc = subprocess.run([*explain_audit, "run", str(suite), "--out", str(tmp_path / "again")],
                          env={**cli_env, "EXPLAIN_AUDIT_CACHE": str(cache)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode in (0, 1) and "prepare gating: step" not in proc.stderr, proc.stderr
    # while a run that trains shows its steps and loss
    proc = subprocess.run([*explain_audit, "run", str(suite), "--out", str(tmp_path / "fresh")],
                          env={**cli_env, "EXPLAIN_AUDIT_CACHE": str(tmp_path / "cache-fresh")},
                          capture_output=True, text=True, timeout=600)
    assert "prepare gating: step 30/30 loss=" in proc.stderr, proc.stderr
