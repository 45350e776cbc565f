"""Gates: bounds on summary rows that decide the exit code (CI pipelines gate on it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.engine.suite import Gate


@dataclass
class GateResult:
    gate: Gate
    passed: bool
    checked: list[dict] = field(default_factory=list)  # rows with their own pass/fail
    message: str = ""

    @property
    def label(self) -> str:
        bounds = []
        subject = "95 % interval " if self.gate.check == "interval" else ""
        if self.gate.min is not None:
            bounds.append(f"{subject}>= {self.gate.min:g}")
        if self.gate.max is not None:
            bounds.append(f"{subject}<= {self.gate.max:g}")
        return (f"{self.gate.metric} [attack {self.gate.attack}, explainer {self.gate.explainer}] "
                f"{' and '.join(bounds)}")


def _matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


def _check(gate: Gate, row: dict) -> tuple[bool, str]:
    """(passed, what was compared, for the message)."""
    if row["mean"] is None:
        return False, "no value"
    if gate.check == "mean":
        low = high = row["mean"]
        shown = f"{row['mean']:.4g}"
    else:
        low, high = row.get("ci_low"), row.get("ci_high")
        if low is None or high is None:
            return False, f"{row['mean']:.4g} with no interval (every value equal)"
        shown = f"{row['mean']:.4g} [{low:.4g}, {high:.4g}]"
    ok = (gate.min is None or low >= gate.min) and (gate.max is None or high <= gate.max)
    return ok, shown


def evaluate_gates(gates: list[Gate], summary: list[dict]) -> list[GateResult]:
    """A gate passes when every summary row it matches is within its bounds.

    ``check: mean`` compares the mean; ``check: interval`` compares the interval's far end (``ci_low``
    for ``min``, ``ci_high`` for ``max``), and a row without an interval fails it. A matching row
    without a value (all images skipped or errored) fails the gate: an audit cannot vouch for
    what it did not measure. A gate that matches no row fails too.
    """
    results = []
    for gate in gates:
        rows = [r for r in summary if r["metric"] == gate.metric and _matches(gate.attack, r["attack"])
                and _matches(gate.explainer, r["explainer"])]
        checked, failures = [], []
        for row in rows:
            ok, shown = _check(gate, row)
            checked.append({**row, "passed": ok})
            if not ok:
                failures.append(f"{row['attack']}/{row['explainer']}: {shown}")
        if not rows:
            results.append(GateResult(gate, False, [], "matches no summary row"))
        else:
            results.append(GateResult(gate, not failures, checked,
                                      "; ".join(failures) if failures else f"{len(rows)} row(s) within bounds"))
    return results
