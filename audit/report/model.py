"""The report as one typed model, built once from a run's typed records and rendered three ways
(:mod:`audit.report.markdown`, :mod:`audit.report.html`, :mod:`audit.report.junit`).

Every string here is plain text as the user or the data gave it (suite name, ids, class names,
reasons): each renderer escapes it for its own format. Numbers stay numbers until a renderer
formats them, except in :class:`Table` cells, which hold the text every format shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from audit.records import CheckVerdict


@dataclass(frozen=True)
class SummaryRow:
    """One line of summary.csv: a cell's mean over images with its 95 % interval."""

    attack: str
    explainer: str
    metric: str
    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    higher_is_better: bool
    status: str  # ok | skipped | error
    degenerate: int = 0
    skipped: int = 0
    errors: int = 0
    ci_method: str = "none"  # bootstrap | clopper-pearson | none

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.attack, self.explainer, self.metric)

    @property
    def name(self) -> str:
        """``attack/explainer/metric``: the cell's name in JUnit and in compare."""
        return f"{self.attack}/{self.explainer}/{self.metric}"

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.ci_low is None or self.ci_high is None else (self.ci_low, self.ci_high)

    @classmethod
    def from_dict(cls, row: dict) -> SummaryRow:
        def num(key):
            value = row.get(key)
            return None if value is None or value == "" else float(value)

        def integer(key):
            value = row.get(key)
            return 0 if value is None or value == "" else int(value)

        higher = row.get("higher_is_better", True)
        if isinstance(higher, str):
            higher = higher.strip().lower() == "true"
        return cls(attack=str(row["attack"]), explainer=str(row["explainer"]), metric=str(row["metric"]),
                   n=integer("n"), mean=num("mean"), ci_low=num("ci_low"), ci_high=num("ci_high"),
                   higher_is_better=bool(higher), status=str(row.get("status") or "ok"),
                   degenerate=integer("degenerate"), skipped=integer("skipped"), errors=integer("errors"),
                   ci_method=str(row.get("ci_method") or "none"))


def format_value(row: SummaryRow, digits: int = 4) -> str:
    """``mean [low, high]``, ``mean (no spread)`` or ``–`` (no value)."""
    if row.mean is None:
        return "–"
    if row.interval is None:
        return f"{row.mean:.{digits}f} (no spread)" if row.n > 1 else f"{row.mean:.{digits}f} (one image)"
    return f"{row.mean:.{digits}f} [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"


Outcome = Literal["pass", "failure", "error", "skipped"]


@dataclass(frozen=True)
class GateCase:
    """One gate checked on one summary row (a JUnit ``<testcase>``), or a gate matching no row."""

    name: str  # attack/explainer/metric, unique within the report
    gate: str  # the gate as the suite states it
    outcome: Outcome
    message: str  # why it failed / errored / was skipped; what held when it passed


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    headline: str  # PASS / FAIL / INCOMPLETE with a short reason
    gates_passed: int
    gates_total: int
    cells: int
    cells_errored: int
    cells_skipped: int

    @property
    def word(self) -> str:
        return self.headline.split()[0] if self.headline else ""


@dataclass(frozen=True)
class Finding:
    """One sentence in plain words, generated from the numbers it quotes."""

    text: str
    severity: Literal["bad", "good", "note"] = "note"


@dataclass(frozen=True)
class Cell:
    """A table cell: the text every format shows, and how to show it."""

    text: str
    emphasis: bool = False
    numeric: bool = False
    badness: float | None = None  # 0 best .. 1 worst, for heat colouring; None: uncoloured


@dataclass(frozen=True)
class Table:
    title: str
    intro: str
    columns: list[str]
    rows: list[list[Cell]]
    align: str = ""  # one letter a column: l(eft) or r(ight); default left
    notes: list[str] = field(default_factory=list)
    anchor: str = ""


@dataclass(frozen=True)
class HeatTable:
    """One metric: attacks (rows) x explainers (columns), each cell coloured by how bad it is."""

    metric: str
    plugin: str
    higher_is_better: bool
    scale: tuple[float, float]  # the values the colour ramp spans (best..worst depends on direction)
    attacks: list[str]
    explainers: list[str]
    cells: dict[tuple[str, str], Cell]
    row_notes: dict[str, str] = field(default_factory=dict)  # attack -> why its shading reads otherwise


@dataclass(frozen=True)
class Figure:
    """A picture, PNG bytes (HTML inlines it as a data URI; Markdown does not carry pictures)."""

    title: str
    caption: str
    png: bytes
    alt: str


@dataclass(frozen=True)
class Method:
    """A plugin of the suite with its resolved parameters (the methods appendix)."""

    section: str  # explainer | attack | metric
    id: str
    plugin: str
    summary: str
    params: dict
    capabilities: dict


@dataclass(frozen=True)
class Identity:
    suite: str
    suite_file: str
    created: str
    seed: int
    device: str
    model_source: str
    model_digest: str
    data_description: str
    data_digest: str
    versions: dict
    git_commit: str | None
    wall_s: float
    class_names: list[str] = field(default_factory=list)
    # per explainer id, what it chose at preflight (e.g. Grad-CAM's target layer)
    explainer_details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    identity: Identity
    verdict: Verdict
    gates: list[GateCase]
    findings: list[Finding]
    summary: list[SummaryRow]
    heat: list[HeatTable]
    checks: list[Table]  # randomisation, input invariance, transfer matrix, … (present when measured)
    problems: list[tuple[str, str, str, str]]  # (attack, explainer, metric, reason) of skipped/errored cells
    problems_total: int
    methods: list[Method]
    figures: list[Figure] = field(default_factory=list)
    cell_outcomes: list[GateCase] = field(default_factory=list)  # errored/skipped cells no gate covers
    # the suite's checks: (``explain-audit check``), one verdict per check and row, shown first
    verdicts: list[CheckVerdict] = field(default_factory=list)
    strict: bool = False  # whether warn and skipped verdicts fail the check (exit 1)
