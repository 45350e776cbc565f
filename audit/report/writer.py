"""Write the four output files atomically (temp file + os.replace): never a half-written file."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from audit.report.markdown import render_markdown
from audit.report.summary import COLUMNS


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
    return buffer.getvalue()


def write_outputs(out: Path, result, manifest: dict, loaded) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = "".join(json.dumps(r, allow_nan=False, sort_keys=True) + "\n" for r in result.records)
    write_atomic(out / "results.jsonl", results)
    write_atomic(out / "summary.csv", summary_csv(result.summary))
    write_atomic(out / "report.md", render_markdown(result, manifest))
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, allow_nan=False) + "\n")
