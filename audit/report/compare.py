"""``explain-audit compare BASE NEW``: the summary rows whose mean moved between two runs.

A row has moved when both runs measured it and their 95 % intervals do not overlap (a row
without an interval, every value equal, counts as the point interval [mean, mean]). It got
worse when it moved in the metric's bad direction (``higher_is_better``). A row that had a
value in BASE and has none in NEW got worse too. Whether a row is gated is read from NEW's
suite (gates matching the row's attack, explainer and metric; ``*`` matches any).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.report.model import SummaryRow
from audit.report.rundir import RunData


@dataclass(frozen=True)
class Change:
    base: SummaryRow | None
    new: SummaryRow | None
    direction: str  # better | worse | lost | gained | added | removed
    gated: bool

    @property
    def name(self) -> str:
        return (self.new or self.base).name


def _interval(row: SummaryRow) -> tuple[float, float]:
    return row.interval if row.interval is not None else (row.mean, row.mean)


def _gated(row: SummaryRow, gates: list[dict]) -> bool:
    return any(g.get("metric") == row.metric and g.get("attack", "*") in ("*", row.attack)
               and g.get("explainer", "*") in ("*", row.explainer) for g in gates)


def compare_runs(base: RunData, new: RunData) -> tuple[list[Change], int]:
    """(changed rows in NEW's order, number of rows both runs have)."""
    gates = list(new.suite.get("gates", []))
    base_rows = {r.key: r for r in base.summary}
    new_keys = {r.key for r in new.summary}
    changes, common = [], 0
    for row in new.summary:
        old = base_rows.get(row.key)
        if old is None:
            changes.append(Change(None, row, "added", _gated(row, gates)))
            continue
        common += 1
        if old.mean is None and row.mean is None:
            continue
        if row.mean is None:
            changes.append(Change(old, row, "lost", _gated(row, gates)))
            continue
        if old.mean is None:
            changes.append(Change(old, row, "gained", _gated(row, gates)))
            continue
        (a_lo, a_hi), (b_lo, b_hi) = _interval(old), _interval(row)
        if b_lo > a_hi or b_hi < a_lo:
            up = row.mean > old.mean
            direction = "better" if up == row.higher_is_better else "worse"
            changes.append(Change(old, row, direction, _gated(row, gates)))
    for row in base.summary:
        if row.key not in new_keys:
            changes.append(Change(row, None, "removed", _gated(row, gates)))
    return changes, common


def regressions(changes: list[Change]) -> list[Change]:
    """Gated rows that got worse (or lost their value): what makes ``compare`` exit 1."""
    return [c for c in changes if c.gated and c.direction in ("worse", "lost", "removed")]


def _show(row: SummaryRow | None) -> str:
    if row is None:
        return "(absent)"
    if row.mean is None:
        return "no value"
    if row.interval is None:
        return f"{row.mean:.4f} (no spread)"
    return f"{row.mean:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"


def changes_markdown(changes: list[Change], common: int) -> str:
    from audit.report.markdown import _cell

    lines = [f"{len(changes)} of {common} common rows moved (non-overlapping 95 % intervals) or changed presence; "
             f"{len(regressions(changes))} gated row(s) got worse.", ""]
    if changes:
        lines += ["| attack | explainer | metric | base | new | change | gated |", "|---|---|---|---|---|---|---|"]
        for c in changes:
            row = c.new or c.base
            lines.append(f"| {_cell(row.attack)} | {_cell(row.explainer)} | {_cell(row.metric)} | {_show(c.base)} | "
                         f"{_show(c.new)} | {c.direction} | {'yes' if c.gated else ''} |")
    return "\n".join(lines) + "\n"
