"""Gates: bounds on summary means that decide the exit code (CI pipelines gate on it)."""

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
        if self.gate.min is not None:
            bounds.append(f">= {self.gate.min:g}")
        if self.gate.max is not None:
            bounds.append(f"<= {self.gate.max:g}")
        return (f"{self.gate.metric} [attack {self.gate.attack}, explainer {self.gate.explainer}] "
                f"{' and '.join(bounds)}")


def _matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


def evaluate_gates(gates: list[Gate], summary: list[dict]) -> list[GateResult]:
    """A gate passes when every summary row it matches has a mean within its bounds.

    A matching row without a value (all images skipped or errored) fails the gate: an audit
    cannot vouch for what it did not measure. A gate that matches no row fails too.
    """
    results = []
    for gate in gates:
        rows = [r for r in summary if r["metric"] == gate.metric and _matches(gate.attack, r["attack"])
                and _matches(gate.explainer, r["explainer"])]
        checked, failures = [], []
        for row in rows:
            mean = row["mean"]
            ok = mean is not None and (gate.min is None or mean >= gate.min) and (
                gate.max is None or mean <= gate.max)
            checked.append({**row, "passed": ok})
            if not ok:
                shown = "no value" if mean is None else f"{mean:.4g}"
                failures.append(f"{row['attack']}/{row['explainer']}: {shown}")
        if not rows:
            results.append(GateResult(gate, False, [], "matches no summary row"))
        else:
            results.append(GateResult(gate, not failures, checked,
                                      "; ".join(failures) if failures else f"{len(rows)} row(s) within bounds"))
    return results
