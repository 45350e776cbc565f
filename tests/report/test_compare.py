"""compare: rows whose 95 % intervals do not overlap, worse by the metric's direction, gated
rows decide the exit code."""

from pathlib import Path

from audit.report.compare import changes_markdown, compare_runs, regressions
from audit.report.model import SummaryRow
from audit.report.rundir import RunData


def _row(attack, metric, mean, low, high, higher=True, explainer="e"):
    return SummaryRow(attack, explainer, metric, 0 if mean is None else 16, mean, low, high, higher,
                      "ok" if mean is not None else "error")


def _run(rows, gates=()):
    return RunData(Path("x"), [], rows, {"suite": {"gates": list(gates)}})


def test_only_non_overlapping_intervals_count_and_direction_follows_the_metric():
    base = [_row("a", "up", 0.5, 0.4, 0.6), _row("b", "up", 0.5, 0.4, 0.6), _row("c", "down", 0.5, 0.4, 0.6, False),
            _row("d", "up", 0.5, 0.4, 0.6), _row("e", "up", 0.5, None, None), _row("f", "up", 0.5, 0.4, 0.6)]
    new = [_row("a", "up", 0.65, 0.59, 0.7),  # overlaps (0.59 < 0.6): not moved
           _row("b", "up", 0.3, 0.2, 0.39),  # below: worse
           _row("c", "down", 0.3, 0.2, 0.39, False),  # lower is better: better
           _row("d", "up", None, None, None),  # lost its value
           _row("e", "up", 0.5, None, None),  # same point: not moved
           _row("f", "up", 0.7, 0.61, 0.8)]  # above: better
    gates = [{"metric": "up", "attack": "*", "explainer": "e", "min": 0.1}]
    changes, common = compare_runs(_run(base), _run(new, gates))
    assert common == 6
    assert {c.name: c.direction for c in changes} == {"b/e/up": "worse", "c/e/down": "better", "d/e/up": "lost",
                                                      "f/e/up": "better"}
    assert [c.name for c in regressions(changes)] == ["b/e/up", "d/e/up"]
    text = changes_markdown(changes, common)
    assert text.startswith("4 of 6 common rows moved") and "| b | e | up | 0.5000 [0.4000, 0.6000] | " in text


def test_an_ungated_regression_does_not_fail_and_a_removed_gated_row_does():
    base = [_row("a", "up", 0.5, 0.4, 0.6), _row("b", "up", 0.5, 0.4, 0.6, explainer="x")]
    new = [_row("a", "up", 0.1, 0.0, 0.2)]
    changes, _ = compare_runs(_run(base), _run(new, [{"metric": "up", "attack": "b", "explainer": "x", "max": 1}]))
    assert {c.name: (c.direction, c.gated) for c in changes} == {"a/e/up": ("worse", False),
                                                                  "b/x/up": ("removed", True)}
    assert [c.name for c in regressions(changes)] == ["b/x/up"]
