"""junit.xml: one ``<testcase>`` per check verdict (name ``check/explainer/metric``, when the
suite has ``checks:``), one per gate and summary row it checks (name
``attack/explainer/metric``), ``<failure>`` when the gate does not hold, ``<error>`` for an
errored cell, ``<skipped>`` for a cell without a value; errored and skipped cells no gate covers
are cases of their own. The JUnit XML schema as Jenkins, GitLab and GitHub test reporters read it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from audit.report.model import GateCase, Report


def _case(parent: ET.Element, classname: str, case: GateCase) -> None:
    element = ET.SubElement(parent, "testcase", {"classname": classname, "name": case.name, "time": "0"})
    if case.outcome == "failure":
        ET.SubElement(element, "failure", {"message": case.message, "type": "gate"}).text = \
            f"{case.gate}\n{case.message}"
    elif case.outcome == "error":
        ET.SubElement(element, "error", {"message": case.message, "type": "cell-error"}).text = case.message
    elif case.outcome == "skipped":
        ET.SubElement(element, "skipped", {"message": case.message})
    else:
        ET.SubElement(element, "system-out").text = f"{case.gate}: {case.message}" if case.gate else case.message


def verdict_cases(report: Report) -> list[GateCase]:
    """The checks' verdicts as cases (``check/explainer/metric``): fail → failure (warn and
    skipped too under --strict), error → error, skipped → skipped, pass and warn → passed with
    the reason."""
    cases, taken = [], set()
    for v in report.verdicts:
        name, k = f"{v.check}/{v.explainer}/{v.metric}", 2
        while name in taken:
            name, k = f"{v.check}/{v.explainer}/{v.metric} #{k}", k + 1
        taken.add(name)
        outcome = {"fail": "failure", "error": "error", "skipped": "skipped"}.get(v.verdict, "pass")
        if report.strict and v.verdict in ("warn", "skipped"):
            outcome = "failure"
        bound = f"{v.metric} [attack {v.attack}] {'>=' if v.bound == 'min' else '<='} {v.threshold:g}: {v.verdict}"
        cases.append(GateCase(name, bound, outcome, v.reason))
    return cases


def render_junit(report: Report) -> str:
    suite = report.identity.suite
    groups = [(f"explain-audit.{suite}.gates", "gates", report.gates),
              (f"explain-audit.{suite}.cells", "cells", report.cell_outcomes)]
    if report.verdicts:
        groups.insert(0, (f"explain-audit.{suite}.checks", "checks", verdict_cases(report)))
    root = ET.Element("testsuites", {"name": f"explain-audit {suite}"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for classname, label, cases in groups:
        counts = {"tests": len(cases), "failures": sum(c.outcome == "failure" for c in cases),
                  "errors": sum(c.outcome == "error" for c in cases),
                  "skipped": sum(c.outcome == "skipped" for c in cases)}
        for k, v in counts.items():
            totals[k] += v
        element = ET.SubElement(root, "testsuite", {"name": f"{suite} {label}", "time": "0",
                                                     **{k: str(v) for k, v in counts.items()}})
        if label == "gates":
            props = ET.SubElement(element, "properties")
            for name, value in (("seed", report.identity.seed), ("model", report.identity.model_source),
                                ("model_digest", report.identity.model_digest),
                                ("data", report.identity.data_description),
                                ("verdict", report.verdict.headline), ("exit_code", report.verdict.exit_code)):
                ET.SubElement(props, "property", {"name": name, "value": str(value)})
        for case in cases:
            _case(element, classname, case)
    root.attrib.update({k: str(v) for k, v in totals.items()})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
