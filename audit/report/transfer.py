"""report.md's transfer matrix of adversarial model manipulation (Heo et al. 2019, Table 1).

Rows: each ``manipulation`` attack of the suite (its target explainer and fooling type);
columns: every explainer the suite evaluates. A cell holds the fooling success rate measured
with the suite's ``fsr`` metric of the attack's own fooling type, with its 95 % bootstrap
interval; a second table holds the mean Spearman between the clean and the manipulated
model's maps. A row also shows the manipulated model's accuracy and agreement where the suite
computes them. Nothing is shown for a fooling type the suite does not measure.
"""

from __future__ import annotations

FSR_DEFAULT_FOOLING = "location"  # the fsr metric's default fooling type


def _fmt_ci(row: dict | None) -> str:
    if row is None or row["mean"] is None:
        return "–"
    if row["ci_low"] is None:
        return f"{row['mean']:.2f}"
    return f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def _escape(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def transfer_section(result, suite: dict) -> list[str]:
    """Markdown lines of the transfer matrix, or none where the suite has no manipulation."""
    manipulations = {a["id"]: a for a in suite["attacks"] if a["plugin"] == "manipulation"}
    if not manipulations:
        return []
    # Heo's robustness check: weight noise on a manipulated model is a row of that model's kind
    attacks = [a for a in suite["attacks"] if a["id"] in manipulations
               or (a["plugin"] == "weight_noise" and (a.get("params") or {}).get("of") in manipulations)]
    fsr_by_fooling: dict[str, str] = {}
    for metric in suite["metrics"]:
        if metric["plugin"] == "fsr":
            fsr_by_fooling.setdefault((metric.get("params") or {}).get("fooling", FSR_DEFAULT_FOOLING),
                                      metric["id"])
    spearman = next((m["id"] for m in suite["metrics"] if m["plugin"] == "spearman"), None)
    model_metrics = [m["id"] for m in suite["metrics"] if m["plugin"] in ("accuracy", "agreement")]
    explainers = [e["id"] for e in suite["explainers"]]
    rows = {(r["attack"], r["explainer"], r["metric"]): r for r in result.summary}

    def label(attack: dict) -> tuple[str, str]:
        params = attack.get("params") or {}
        if attack["plugin"] == "weight_noise":  # its fooling is that of the model it noises
            return label(manipulations[params["of"]])
        return params.get("target", "gradcam"), params.get("fooling", "location")

    lines = ["", "## Manipulation transfer matrix", "",
             "Fooling success rate (FSR, mean [95 % CI]) of each manipulated model, rows by the "
             "explainer the fine-tuning targeted, columns by the explainer evaluated; each row is "
             "scored with the suite's FSR of that row's fooling type (Heo et al. 2019, Table 1). "
             "Higher means the evaluated explainer was fooled.", ""]
    header = ["attack", "target", "fooling", *explainers, *model_metrics]
    lines += ["| " + " | ".join(_escape(h) for h in header) + " |",
              "|" + "---|" * 3 + "---:|" * (len(explainers) + len(model_metrics))]
    unmeasured = []
    for attack in attacks:
        target, fooling = label(attack)
        metric = fsr_by_fooling.get(fooling)
        if metric is None:
            unmeasured.append(attack["id"])
        cells = [_fmt_ci(rows.get((attack["id"], e, metric))) if metric else "–" for e in explainers]
        cells += [_fmt_ci(rows.get((attack["id"], "-", m))) for m in model_metrics]
        lines.append("| " + " | ".join(_escape(c) for c in (attack["id"], target, fooling, *cells)) + " |")
    if unmeasured:
        lines += ["", f"No FSR of the right fooling type in this suite for: {', '.join(unmeasured)} "
                      "(add an fsr metric with that fooling)."]
    if spearman is not None:
        lines += ["", "Mean Spearman between the original and the manipulated model's maps "
                      "(1 = unchanged ranking).", "",
                  "| attack | " + " | ".join(_escape(e) for e in explainers) + " |",
                  "|---|" + "---:|" * len(explainers)]
        for attack in attacks:
            cells = [_fmt_ci(rows.get((attack["id"], e, spearman))) for e in explainers]
            lines.append("| " + " | ".join(_escape(c) for c in (attack["id"], *cells)) + " |")
    return lines
