"""Render a run folder's reports from what it stores: gates are evaluated again on the stored
summary (a pure function of it), nothing else is recomputed. ``explain-audit run`` ends here,
and ``explain-audit report RUN_DIR`` runs the same code, so their files are byte-identical."""

from __future__ import annotations

from pathlib import Path

from audit.engine.gates import GateResult, evaluate_gates
from audit.engine.suite import CheckRule, Gate
from audit.engine.verdicts import evaluate_checks, verdicts_csv, verdicts_failed
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


def stored_verdicts(run: RunData) -> list:
    """The verdicts of the stored suite's ``checks:`` on the stored summary (a pure function of them)."""
    try:
        rules = [CheckRule.model_validate(c) for c in run.suite.get("checks", [])]
    except Exception as exc:
        raise UserError(f"{run.folder / 'manifest.json'}: a check of the stored suite is not valid "
                        f"({str(exc).splitlines()[0]}); run the suite again") from None
    return evaluate_checks(rules, run.summary, {m.get("id"): m.get("plugin") for m in run.suite.get("metrics", [])
                                                if isinstance(m, dict)})


def strict_checks(run: RunData) -> bool:
    return bool((run.manifest.get("check") or {}).get("strict", False))


def exit_code(run: RunData, gates: list[GateResult], verdicts: list | None = None) -> int:
    if any(r.get("status") == "error" for r in run.records):
        return EXIT_INCOMPLETE
    failed = any(not g.passed for g in gates) or verdicts_failed(verdicts or [], strict_checks(run))
    return EXIT_GATE_FAILED if failed else EXIT_OK


def build_run_report(folder: Path):
    """(report, gate results, exit code) of the run stored in ``folder``."""
    from audit.report.build import build_report
    from audit.report.figures import load_figures

    run = load_run(folder)
    gates = stored_gates(run)
    verdicts = stored_verdicts(run)
    code = exit_code(run, gates, verdicts)
    report = build_report(run.summary, run.records, gates, code, run.manifest, load_figures(run),
                          verdicts=verdicts, strict=strict_checks(run))
    return report, gates, code


def render_run_dir(folder: Path, *, step_summary: bool = False):
    """Write report.md, junit.xml and report.html (and verdicts.csv when the suite has checks) of
    the run in ``folder``; returns the report."""
    from audit.report.writer import append_step_summary, write_atomic, write_reports

    report, gates, code = build_run_report(folder)
    target = Path(folder) / "verdicts.csv"
    if report.verdicts:
        write_atomic(target, verdicts_csv(report.verdicts))
    else:  # no checks: no stale verdicts of an earlier run in this folder either
        target.unlink(missing_ok=True)
    texts = write_reports(Path(folder), report)
    if step_summary:
        append_step_summary(texts["report.md"])
    return report
