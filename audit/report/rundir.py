"""Read a run folder back as typed records: results.jsonl, summary.csv and manifest.json.

Anything that is not a complete run folder raises :class:`UserError` with one line naming the
file and the fix; nothing is guessed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from audit.errors import UserError
from audit.report.model import SummaryRow
from audit.report.summary import COLUMNS

RUN_FILES = ("results.jsonl", "summary.csv", "manifest.json")
REQUIRED_COLUMNS = ("attack", "explainer", "metric", "n", "mean", "ci_low", "ci_high", "higher_is_better", "status")


@dataclass
class RunData:
    folder: Path
    records: list[dict]
    summary: list[SummaryRow]
    manifest: dict

    @property
    def suite(self) -> dict:
        return self.manifest.get("suite", {})


def _read(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise UserError(f"{folder} has no {name}: not a finished run folder (give the --out folder of "
                        "`explain-audit run`, or run the suite again)")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); run the suite again") from None


def summary_rows(text: str, path: Path) -> list[SummaryRow]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: not an explain-audit summary; "
                        "run the suite again")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            rows.append(SummaryRow.from_dict(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}:{line}: unreadable row ({exc}); the run folder is damaged, run the "
                            "suite again") from None
    return rows


def load_run(folder: Path) -> RunData:
    """The run stored in ``folder`` (the ``--out`` folder of ``explain-audit run``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give the --out folder of `explain-audit run`")
    texts = {name: _read(folder, name) for name in RUN_FILES}
    try:
        manifest = json.loads(texts["manifest.json"])
    except json.JSONDecodeError as exc:
        raise UserError(f"{folder / 'manifest.json'}:{exc.lineno}: not valid JSON ({exc.msg}); the run folder "
                        "is damaged, run the suite again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("suite"), dict):
        raise UserError(f"{folder / 'manifest.json'} has no suite: not an explain-audit manifest; run the "
                        "suite again")
    records = []
    for line, text in enumerate(texts["results.jsonl"].splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{folder / 'results.jsonl'}:{line}: not valid JSON ({exc.msg}); the run folder "
                            "is damaged, run the suite again") from None
        if not isinstance(record, dict) or not {"attack", "explainer", "metric", "status"} <= set(record):
            raise UserError(f"{folder / 'results.jsonl'}:{line}: not a result record; run the suite again")
        records.append(record)
    return RunData(folder, records, summary_rows(texts["summary.csv"], folder / "summary.csv"), manifest)


__all__ = ["COLUMNS", "RUN_FILES", "RunData", "load_run", "summary_rows"]
