"""--threads (the CPU thread budget) and the passive OpenMP wait policy set before torch loads."""

import json
import os
import subprocess
import sys
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
import torch

from audit.engine import backends, threads
from audit.errors import UserError
from tests.conftest import ROOT

TINY = """\
name: tiny
seed: 0
device: cpu
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, n: 4, batch_size: 4}
explainers: [saliency]
attacks: [none]
metrics: [accuracy]
"""


# -- the budget ---------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [(1, 1), (7, 7), ("3", 3), (" 12 ", 12), ("+2", 2)])
def test_threads_given_are_taken(given, expected):
    assert threads.resolve_threads(given, environ={}) == expected


@pytest.mark.parametrize("given", [0, -1, "0", "-4", "two", "", "1.5", "2,2", True])
def test_bad_threads_are_user_errors(given):
    with pytest.raises(UserError, match="--threads .*at least 1"):
        threads.resolve_threads(given, environ={})


def test_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 32)  # PyTorch's default: the machine's physical cores
    assert threads.available_cores() == 3  # the affinity mask (taskset, a cpuset), not the machine
    assert threads.resolve_threads(None, environ={}) == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert threads.available_cores() == 64
    assert threads.resolve_threads(None, environ={}) == 32  # hardware threads beyond the physical cores: not used


def test_users_omp_num_threads_is_the_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert threads.resolve_threads(None, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert threads.resolve_threads(None, environ={"OMP_NUM_THREADS": "3"}) == 3
    for unusable in ("", "0", "4,2", "many"):  # not a plain positive budget: the cores
        assert threads.resolve_threads(None, environ={"OMP_NUM_THREADS": unusable}) == 4
    assert threads.resolve_threads(2, environ={"OMP_NUM_THREADS": "1"}) == 2  # --threads beats the env


# -- the wait policy ----------------------------------------------------------------------------
def test_wait_policy_is_a_default_the_user_overrides():
    env: dict[str, str] = {}
    assert threads.quiet_openmp_waits(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.quiet_openmp_waits(env) == {}
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def _cli_import_state(**env_changes):
    """What ``import audit.cli`` (as the explain-audit entry point does) leaves in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    env.update(env_changes)
    code = ("import json, os, sys; import audit.cli; "
            "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_sets_passive_waits_before_torch_loads():
    policy, torch_loaded = _cli_import_state()
    assert policy == "PASSIVE"
    assert not torch_loaded  # so OpenMP, loaded with torch later, reads the policy
    assert _cli_import_state(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", False]  # the user's value wins


# -- the CLI ------------------------------------------------------------------------------------
def test_bad_threads_exit_2_one_line_nothing_written(tmp_path, explain_audit, cli_env):
    out = tmp_path / "out"
    proc = subprocess.run([*explain_audit, "run", str(ROOT / "suites" / "quick.yaml"), "--out", str(out),
                           "--threads", "0", "--cache", "none"], env=cli_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("error: --threads '0': give a whole number") and not out.exists()


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("value", ["-2", "two"])
def test_run_and_check_refuse_bad_threads(tmp_path, command, value):
    from typer.testing import CliRunner

    from audit.cli import app

    out = tmp_path / "out"
    args = (["run", str(ROOT / "suites" / "quick.yaml")] if command == "run" else
            ["check", "--model", "builtin:shapes-resnet", "--data", "builtin:shapes"])
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--threads", value, "--cache", "none"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: --threads '{value}': give a whole number of CPU "
                                                   f"threads, at least 1 (this process may use "
                                                   f"{threads.available_cores()} cores)"]
    assert not out.exists()


def test_threads_reach_torch_and_the_manifest(tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out"), "-q", "--cache",
                                          "none", "--threads", str(wanted)], env={"GITHUB_STEP_SUMMARY": None})
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
    assert result.exit_code in (0, 1), result.output
    backend = json.loads((tmp_path / "out" / "manifest.json").read_text())["backend"]
    assert backend["threads"] == wanted
    assert backend["openmp"] == {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                                 "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT")}



def test_more_threads_than_cores_is_said_not_refused(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from audit.cli import app

    monkeypatch.setattr("audit.engine.run.available_cores", lambda: 1)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out"), "--cache", "none",
                                          "--threads", "2"], env={"GITHUB_STEP_SUMMARY": None})
    finally:
        torch.set_num_threads(before)
    assert result.exit_code in (0, 1), result.output
    assert "--threads 2 is more than the 1 cores this process may use" in result.output

# -- the process pool ---------------------------------------------------------------------------
class _RecordingPool:
    """Stands in for ProcessPoolExecutor: records how the workers would be set up, runs nothing."""

    seen: list = []

    def __init__(self, max_workers, mp_context, initializer, initargs):
        _RecordingPool.seen.append((max_workers, initargs[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, unit):
        future: Future = Future()
        future.set_result(([], {}))
        return future


@pytest.mark.parametrize("budget, workers, per_worker", [(8, 2, 4), (5, 2, 2), (2, 4, 1), (1, 1, 1)])
def test_pool_workers_share_the_thread_budget(monkeypatch, budget, workers, per_worker):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's size must not matter
    monkeypatch.setattr(backends, "ProcessPoolExecutor", _RecordingPool)
    for helper in ("_run_key", "_shipped", "_cache_root"):
        monkeypatch.setattr(backends, helper, lambda runner: None)
    _RecordingPool.seen = []
    steps = []
    records = backends.run_processes(SimpleNamespace(), ["u1", "u2", "u3"], workers, lambda: steps.append(1),
                                     threads=budget)
    assert records == [] and len(steps) == 3
    assert _RecordingPool.seen == [(workers, per_worker)]
