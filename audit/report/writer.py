"""Write a run's outputs atomically (temp file + os.replace): never a half-written file.

The data files (results.jsonl, summary.csv, manifest.json) come first; the three reports
(report.md, junit.xml, report.html) are then rendered from those files as stored, by the same
code ``explain-audit report`` runs, so a re-render is byte-identical to the run's own.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from audit.report.summary import COLUMNS

REPORT_FILES = ("report.md", "junit.xml", "report.html")


def write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if isinstance(text, bytes):
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
        else:
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


def write_data(out: Path, result, manifest: dict) -> None:
    """results.jsonl, summary.csv and manifest.json: what every report is rendered from."""
    out.mkdir(parents=True, exist_ok=True)
    results = "".join(json.dumps(r, allow_nan=False, sort_keys=True) + "\n" for r in result.records)
    write_atomic(out / "results.jsonl", results)
    write_atomic(out / "summary.csv", summary_csv(result.summary))
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, allow_nan=False) + "\n")


def render_reports(report) -> dict[str, str]:
    """The three renderings of a :class:`~audit.report.model.Report`, by file name."""
    from audit.report.html import render_html
    from audit.report.junit import render_junit
    from audit.report.markdown import render_report_markdown

    return {"report.md": render_report_markdown(report), "junit.xml": render_junit(report),
            "report.html": render_html(report)}


def write_reports(out: Path, report) -> dict[str, str]:
    texts = render_reports(report)
    for name in REPORT_FILES:
        write_atomic(out / name, texts[name])
    return texts


def append_step_summary(markdown: str) -> None:
    """Append report.md to GitHub Actions' job summary when ``$GITHUB_STEP_SUMMARY`` is set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
