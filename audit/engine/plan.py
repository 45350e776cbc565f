"""The audit's cells: one per (attack, explainer, metric); model-level metrics use explainer '-'."""

from __future__ import annotations

from audit.engine.suite import Suite
from audit.metrics.base import METRICS
from audit.records import NO_EXPLAINER, Cell

__all__ = ["NO_EXPLAINER", "Cell", "plan_cells"]


def plan_cells(suite: Suite) -> list[Cell]:
    """Cells in suite order: attacks outermost, then model-level metrics, then explainers; a metric
    that names its ``attacks:`` / ``explainers:`` only where it names."""
    cells = []
    for attack in suite.attacks:
        for metric in suite.metrics:
            if not METRICS.get(metric.plugin).per_explainer() and metric.applies(attack.id):
                cells.append(Cell(attack.id, NO_EXPLAINER, metric.id))
        for explainer in suite.explainers:
            for metric in suite.metrics:
                if METRICS.get(metric.plugin).per_explainer() and metric.applies(attack.id, explainer.id):
                    cells.append(Cell(attack.id, explainer.id, metric.id))
    return cells
