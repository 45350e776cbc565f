"""manifest.json: what was run, on what, with which versions, and where the time went."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

import audit
from audit.report.build import resolve_methods


def git_commit() -> str | None:
    """The commit of the explain-audit source tree, when it is a git checkout."""
    root = Path(audit.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"explain-audit": audit.__version__, "python": sys.version.split()[0],
                "torch": torch.__version__}
    for name in ("torchvision", "captum", "zennit", "numpy", "scipy", "pandas", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build_manifest(loaded, result, data_description: str, device: str, python: str) -> dict:
    suite = loaded.suite
    return {
        "suite": suite.model_dump(mode="json"),
        "suite_file": str(loaded.path),
        "seed": suite.seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": device,
        "model": {"source": suite.model.source, "digest": result.model.digest,
                  "input": result.model.spec.to_dict()},
        "data": {"description": data_description, "digest": result.data_digest},
        # every plugin with its resolved parameters (the report's methods appendix)
        "plugins": [dataclasses.asdict(m) for m in resolve_methods(suite.model_dump(mode="json"))],
        "records": len(result.records),
        "exit_code": result.exit_code,
        "timings_s": {k: round(v, 4) for k, v in sorted(result.timings.items())},
    }
