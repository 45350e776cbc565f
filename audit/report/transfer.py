"""The transfer matrix of adversarial model manipulation (Heo et al. 2019, Table 1).

Rows: each ``manipulation`` attack of the suite (its target explainer and fooling type);
columns: every explainer the suite evaluates. A cell holds the fooling success rate measured
with the suite's ``fsr`` metric of the attack's own fooling type, with its 95 % interval; a
second table holds the mean Spearman between the clean and the manipulated model's maps. A row
also shows the manipulated model's accuracy and agreement where the suite computes them.
Nothing is shown for a fooling type the suite does not measure.
"""

from __future__ import annotations

from audit.report.model import Cell, Finding, SummaryRow, Table

MANIPULATION_PLUGIN = "manipulation"
WEIGHT_NOISE_PLUGIN = "weight_noise"
FSR_PLUGIN = "fsr"
FSR_DEFAULT_FOOLING = "location"  # the fsr metric's default fooling type
MANIPULATION_DEFAULTS = ("gradcam", "location")  # the manipulation attack's default target and fooling
# Heo et al. call a manipulation successful on an explainer when the FSR exceeds one half.
FOOLED_FSR = 0.5


def _fmt_ci(row: SummaryRow | None) -> str:
    if row is None or row.mean is None:
        return "–"
    if row.interval is None:
        return f"{row.mean:.2f}"
    return f"{row.mean:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"


def _badness(row: SummaryRow | None, higher_is_worse: bool) -> float | None:
    if row is None or row.mean is None:
        return None
    value = min(1.0, max(0.0, row.mean))
    return value if higher_is_worse else 1.0 - value


def transfer_tables(summary: list, suite: dict) -> tuple[list[Table], list[Finding]]:
    """The FSR table and the Spearman table, or nothing where the suite has no manipulation."""
    summary = [r if isinstance(r, SummaryRow) else SummaryRow.from_dict(r) for r in summary]
    manipulations = {a["id"]: a for a in suite.get("attacks", []) if a.get("plugin") == MANIPULATION_PLUGIN}
    if not manipulations:
        return [], []
    # Heo's robustness check: weight noise on a manipulated model is a row of that model's kind
    attacks = [a for a in suite.get("attacks", []) if a["id"] in manipulations
               or (a.get("plugin") == WEIGHT_NOISE_PLUGIN and (a.get("params") or {}).get("of") in manipulations)]
    fsr_by_fooling: dict[str, str] = {}
    for metric in suite.get("metrics", []):
        if metric.get("plugin") == FSR_PLUGIN:
            fsr_by_fooling.setdefault((metric.get("params") or {}).get("fooling", FSR_DEFAULT_FOOLING),
                                      metric["id"])
    spearman = next((m["id"] for m in suite.get("metrics", []) if m.get("plugin") == "spearman"), None)
    model_metrics = [m["id"] for m in suite.get("metrics", []) if m.get("plugin") in ("accuracy", "agreement")]
    explainers = [e["id"] for e in suite.get("explainers", [])]
    rows = {r.key: r for r in summary}

    def label(attack: dict) -> tuple[str, str]:
        params = attack.get("params") or {}
        if attack.get("plugin") == WEIGHT_NOISE_PLUGIN:  # its fooling is that of the model it noises
            return label(manipulations[params["of"]])
        return params.get("target", MANIPULATION_DEFAULTS[0]), params.get("fooling", MANIPULATION_DEFAULTS[1])

    intro = ("Fooling success rate (FSR, mean [95 % CI]) of each manipulated model, rows by the "
             "explainer the fine-tuning targeted, columns by the explainer evaluated; each row is "
             "scored with the suite's FSR of that row's fooling type (Heo et al. 2019, Table 1). "
             "Higher means the evaluated explainer was fooled.")
    header = ["attack", "target", "fooling", *explainers, *model_metrics]
    unmeasured, body, findings = [], [], []
    for attack in attacks:
        target, fooling = label(attack)
        metric = fsr_by_fooling.get(fooling)
        if metric is None:
            unmeasured.append(attack["id"])
        cells = [Cell(attack["id"]), Cell(target), Cell(fooling)]
        for explainer in explainers:
            row = rows.get((attack["id"], explainer, metric)) if metric else None
            cells.append(Cell(_fmt_ci(row), numeric=True, badness=_badness(row, True)))
            if row is None or row.mean is None or row.ci_low is None:
                continue
            what = (f"the manipulated model {attack['id']} ({fooling} fooling, fine-tuned against {target}): "
                    f"FSR {_fmt_ci(row)}")
            if row.ci_low > FOOLED_FSR:
                findings.append(Finding(f"{explainer} is fooled by {what}.", "bad"))
            elif row.mean >= FOOLED_FSR:
                findings.append(Finding(f"{explainer} is fooled on {row.mean:.0%} of the images by {what}; the "
                                        f"interval does not rule out {FOOLED_FSR:.0%} or fewer.", "bad"))
        for m in model_metrics:
            row = rows.get((attack["id"], "-", m))
            cells.append(Cell(_fmt_ci(row), numeric=True, badness=_badness(row, False)))
        body.append(cells)
    notes = []
    if unmeasured:
        notes.append(f"No FSR of the right fooling type in this suite for: {', '.join(unmeasured)} "
                     "(add an fsr metric with that fooling).")
    tables = [Table("Manipulation transfer matrix", intro, header, body,
                    align="lll" + "r" * (len(explainers) + len(model_metrics)), notes=notes, anchor="transfer")]
    if spearman is not None:
        body = []
        for attack in attacks:
            body.append([Cell(attack["id"])] + [
                Cell(_fmt_ci(row := rows.get((attack["id"], e, spearman))), numeric=True,
                     badness=None if row is None or row.mean is None else min(1.0, max(0.0, 1.0 - row.mean)))
                for e in explainers])
        tables.append(Table("", "Mean Spearman between the original and the manipulated model's maps "
                                "(1 = unchanged ranking).", ["attack", *explainers], body,
                            align="l" + "r" * len(explainers), anchor="transfer-spearman"))
    return tables, findings


def transfer_section(result, suite: dict) -> list[str]:
    """Markdown lines of the transfer matrix, or none where the suite has no manipulation."""
    from audit.report.markdown import table_lines

    tables, _ = transfer_tables(result.summary, suite)
    return [line for table in tables for line in table_lines(table)]
