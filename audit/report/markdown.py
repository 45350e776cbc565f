"""report.md: the report in GitHub-flavoured Markdown (verdict, findings, gates, tables), < 1 MiB.

Renders the typed :class:`~audit.report.model.Report`; user-controlled text is escaped so it
cannot break a table or inject markup (``|``, newlines, ``<``, ``>``, ``&``).
"""

from __future__ import annotations

import re

from audit.report.model import Cell, Report, Table

MAX_BYTES = 1024 * 1024  # GitHub's job summary takes at most 1 MiB
OUTCOME_WORDS = {"pass": "pass", "failure": "**FAIL**", "error": "**ERROR**", "skipped": "skipped"}


# a "<" that could open an HTML tag, comment or declaration (GitHub renders inline HTML); a "<"
# before a space or a digit ("0.41 < min 0.50") cannot, and stays readable
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")


def _text(text: object) -> str:
    """Running text: no raw HTML from user-controlled strings; one line."""
    return _TAG_OPEN.sub("&lt;", str(text).replace("&", "&amp;")).replace("\r", " ").replace("\n", " ")


def _cell(text: object) -> str:
    """Markdown table cells: user-controlled text must not break the table nor become HTML."""
    return _text(text).replace("|", "\\|")


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _table_cell(cell: Cell) -> str:
    text = _cell(cell.text)
    return f"**{text}**" if cell.emphasis and text else text


def table_lines(table: Table) -> list[str]:
    """A :class:`Table` as Markdown lines (a leading blank line; title as a level-2 heading)."""
    lines = [""]
    if table.title:
        lines += [f"## {table.title}", ""]
    if table.intro:
        lines += [table.intro, ""]
    align = table.align or "l" * len(table.columns)
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "".join("---:|" if a == "r" else "---|" for a in align))
    for row in table.rows:
        lines.append("| " + " | ".join(_table_cell(c) for c in row) + " |")
    for note in table.notes:
        lines += ["", note]
    return lines


def _summary_lines(report: Report) -> list[str]:
    lines = ["## Summary", "",
             "Mean over images with its 95 % interval: exact binomial (Clopper–Pearson) for metrics whose "
             "per-image values are 0/1 (marked ᵇ), bootstrap otherwise; \"no spread\" where every value is "
             "equal, which a bootstrap cannot turn into an interval. ↑ higher is better, ↓ lower is better.",
             "",
             "| attack | explainer | metric | n | mean | 95 % CI | dir | status | degenerate |",
             "|---|---|---|---:|---:|---|---|---|---:|"]
    for row in report.summary:
        if row.interval is not None:
            ci = f"[{row.ci_low:.4f}, {row.ci_high:.4f}]" + ("ᵇ" if row.ci_method == "clopper-pearson" else "")
        else:
            ci = "no spread" if row.n else "–"
        lines.append(f"| {_cell(row.attack)} | {_cell(row.explainer)} | {_cell(row.metric)} | {row.n} | "
                     f"{_fmt(row.mean)} | {ci} | {'↑' if row.higher_is_better else '↓'} | {row.status} | "
                     f"{row.degenerate} |")
    return lines


VERDICT_WORDS = {"pass": "pass", "warn": "**warn**", "fail": "**FAIL**", "skipped": "skipped", "error": "**ERROR**"}


def verdict_value(v) -> str:
    """A verdict's figure: ``mean [low, high]``, ``mean (no interval)`` or ``–``."""
    if v.value is None:
        return "–"
    if v.ci_low is None or v.ci_high is None:
        return f"{v.value:.3f} (no interval)"
    return f"{v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]"


def verdict_threshold(v) -> str:
    return f"{'≥' if v.bound == 'min' else '≤'} {v.threshold:g}"


def _verdict_lines(report: Report) -> list[str]:
    if not report.verdicts:
        return []
    strict = " (--strict: warn and skipped fail too)" if report.strict else ""
    lines = ["## Checks", "",
             "The model judged alone, with no original to compare: **pass** when the whole 95 % interval lies on "
             "the passing side of the threshold, **FAIL** when it lies wholly beyond it, **warn** when it holds "
             f"the threshold (these images cannot tell){strict}. `-`: a check of the model itself.", "",
             "| check | explainer | verdict | value [95 % CI] | threshold | metric | why |",
             "|---|---|---|---|---|---|---|"]
    for v in report.verdicts:
        lines.append(f"| {_cell(v.check)} | {_cell(v.explainer)} | {VERDICT_WORDS.get(v.verdict, v.verdict)} | "
                     f"{verdict_value(v)} | {verdict_threshold(v)} | {_cell(v.metric)} | {_cell(v.reason)} |")
    lines.append("")
    return lines


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(none)"


def render_report_markdown(report: Report) -> str:
    ident, verdict = report.identity, report.verdict
    lines = [f"# explain-audit report: {_text(ident.suite)}", "",
             f"**{verdict.headline}**", "", *_verdict_lines(report),
             f"- gates: {verdict.gates_passed} of {verdict.gates_total} passed; cells: {verdict.cells} "
             f"({verdict.cells_errored} errored, {verdict.cells_skipped} without a value)",
             f"- model: `{_cell(ident.model_source)}` (digest {ident.model_digest[:12]})",
             f"- data: {_text(ident.data_description)}",
             f"- seed: {ident.seed}; device: {_text(ident.device)}; wall time {ident.wall_s:.1f} s"]
    for explainer_id, details in ident.explainer_details.items():  # e.g. Grad-CAM's traced target layer
        shown = "; ".join(f"{k.replace('_', ' ')} {_cell(v)}" for k, v in details.items())
        lines.append(f"- explainer {_cell(explainer_id)}: {shown}")
    lines.append("")
    if report.findings:
        lines += ["## Findings", ""]
        lines += [f"- {_text(f.text)}" for f in report.findings]
        lines.append("")
    lines += ["## Gates", ""]
    if not report.gates:
        lines += ["No gates in this suite.", ""]
    else:
        lines += ["| cell | gate | result | detail |", "|---|---|---|---|"]
        for case in report.gates:
            lines.append(f"| {_cell(case.name)} | {_cell(case.gate)} | {OUTCOME_WORDS[case.outcome]} | "
                         f"{_cell(case.message)} |")
        lines.append("")
    summary = _summary_lines(report)
    tail = []
    for table in report.checks:
        tail += table_lines(table)
    if report.problems:
        tail += ["", "## Skipped and failed cells", ""]
        for attack, explainer, metric, reason in report.problems:
            tail.append(f"- {_cell(attack)} / {_cell(explainer)} / {_cell(metric)}: {_cell(reason)}")
        if report.problems_total > len(report.problems):
            tail.append(f"- … {report.problems_total - len(report.problems)} more in results.jsonl")
    if report.methods:
        tail += ["", "## Methods", "", "| kind | id | plugin | resolved parameters |", "|---|---|---|---|"]
        for m in report.methods:
            tail.append(f"| {m.section} | {_cell(m.id)} | {_cell(m.plugin)} | {_cell(_params(m.params))} |")
    tail.append("")
    text = "\n".join(lines + summary + tail)
    if len(text.encode()) > MAX_BYTES:  # a huge suite: the summary table gives way (summary.csv has it)
        keep = summary[:6]
        budget = MAX_BYTES - len("\n".join(lines + keep + tail).encode()) - 200
        for line in summary[6:]:
            budget -= len(line.encode()) + 1
            if budget < 0:
                break
            keep.append(line)
        keep.append(f"| … {len(summary) - len(keep)} more rows in summary.csv | | | | | | | | |")
        text = "\n".join(lines + keep + tail)
    return text


def render_markdown(result, manifest: dict) -> str:
    """report.md of a run result (``summary``, ``records``, ``gates``, ``exit_code``) and its manifest."""
    from audit.report.build import build_report

    report = build_report(result.summary, result.records, result.gates, result.exit_code, manifest)
    return render_report_markdown(report)
