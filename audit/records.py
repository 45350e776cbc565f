"""The audit's result types, shared by the engine (which makes them) and the report (which reads
them): a cell (attack, explainer, metric) and a record (one image's value in one cell).

Top-level so that :mod:`audit.report` never imports :mod:`audit.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

NO_EXPLAINER = "-"  # the explainer column of model-level metrics

Status = Literal["ok", "degenerate", "skipped", "error"]


@dataclass(frozen=True)
class Cell:
    """One column of the audit: an attack x an explainer (or ``-``) x a metric."""

    attack: str
    explainer: str
    metric: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.attack, self.explainer, self.metric)


class _RecordBase(TypedDict):
    attack: str
    explainer: str
    metric: str
    sample: int  # the image's sample id (stable across runs)
    value: float | None  # None where status is skipped or error
    status: Status


class Record(_RecordBase, total=False):
    """One line of results.jsonl."""

    reason: str  # why the status is not ok


VerdictWord = Literal["pass", "warn", "fail", "skipped", "error"]


@dataclass(frozen=True)
class CheckVerdict:
    """One line of verdicts.csv: a check's verdict on one summary row (``explain-audit check``).

    ``value``, ``ci_low``, ``ci_high``: the row's mean and 95 % interval (None where it has none);
    ``threshold`` with ``bound`` ``min`` (higher is better) or ``max``; ``reason``: one sentence.
    """

    check: str
    explainer: str
    verdict: VerdictWord
    value: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    bound: Literal["min", "max"]
    metric: str
    attack: str
    reason: str
