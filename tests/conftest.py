import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def cli_env(tmp_path):
    """Environment for running the CLI in a subprocess, with a cache of the test's own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["EXPLAIN_AUDIT_CACHE"] = str(tmp_path / "cache")
    env.pop("EXPLAIN_AUDIT_FAULT", None)
    env.pop("GITHUB_STEP_SUMMARY", None)  # the CI job's summary is for the audit's own report
    return env


@pytest.fixture
def explain_audit():
    """argv prefix that runs the CLI with the interpreter running the tests."""
    return [sys.executable, "-m", "audit.cli"]
