"""Render a run folder's reports from what it stores: gates are evaluated again on the stored
summary (a pure function of it), nothing else is recomputed. ``explain-audit run`` ends here,
and ``explain-audit report RUN_DIR`` runs the same code, so their files are byte-identical."""

from __future__ import annotations

from pathlib import Path

from audit.engine.gates import GateResult, evaluate_gates
from audit.engine.suite import Gate
from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK, UserError
from audit.report.rundir import RunData, load_run


def stored_gates(run: RunData) -> list[GateResult]:
    try:
        gates = [Gate.model_validate(g) for g in run.suite.get("gates", [])]
    except Exception as exc:
        raise UserError(f"{run.folder / 'manifest.json'}: a gate of the stored suite is not valid "
                        f"({str(exc).splitlines()[0]}); run the suite again") from None
    rows = [{"attack": r.attack, "explainer": r.explainer, "metric": r.metric, "n": r.n, "mean": r.mean,
             "ci_low": r.ci_low, "ci_high": r.ci_high, "higher_is_better": r.higher_is_better,
             "status": r.status} for r in run.summary]
    return evaluate_gates(gates, rows)


def exit_code(run: RunData, gates: list[GateResult]) -> int:
    if any(r.get("status") == "error" for r in run.records):
        return EXIT_INCOMPLETE
    return EXIT_GATE_FAILED if any(not g.passed for g in gates) else EXIT_OK


def build_run_report(folder: Path):
    """(report, gate results, exit code) of the run stored in ``folder``."""
    from audit.report.build import build_report
    from audit.report.figures import load_figures

    run = load_run(folder)
    gates = stored_gates(run)
    code = exit_code(run, gates)
    report = build_report(run.summary, run.records, gates, code, run.manifest, load_figures(run))
    return report, gates, code


def render_run_dir(folder: Path, *, step_summary: bool = False):
    """Write report.md, junit.xml and report.html of the run in ``folder``; returns the report."""
    from audit.report.writer import append_step_summary, write_reports

    report, gates, code = build_run_report(folder)
    texts = write_reports(Path(folder), report)
    if step_summary:
        append_step_summary(texts["report.md"])
    return report
