"""report.md: verdict, gate results and the summary table."""

from __future__ import annotations

from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK
from audit.report.transfer import transfer_section

VERDICTS = {
    EXIT_OK: "PASS — every gate holds",
    EXIT_GATE_FAILED: "FAIL — at least one gate failed",
    EXIT_INCOMPLETE: "INCOMPLETE — some cells errored; their numbers are missing",
}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _cell(text: object) -> str:
    """Markdown table cells: user-controlled text must not break the table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# Above this Spearman between the clean map and the map of the randomised model, the map has not
# moved: the explainer does not depend on the re-initialised layers (Adebayo et al. 2018).
RANDOMISATION_MOVED_MAX = 0.5


def _randomisation_verdict(row: dict) -> str:
    """"moves" only when the interval's upper end is at or below the bound (the data rule out a
    map that stayed); "does not move" when the mean is above it; in between the check is open."""
    if row["mean"] is None:
        return "no value"
    high = row["ci_high"] if row.get("ci_high") is not None else row["mean"]
    if high <= RANDOMISATION_MOVED_MAX:
        return "moves"
    if row["mean"] > RANDOMISATION_MOVED_MAX:
        return "**does not move**"
    return "not shown to move"


def _randomisation_section(result, suite: dict) -> list[str]:
    """Which explainers' maps move when the model's top layers are re-initialised.

    METHODS §6 compares |maps|: a Spearman with ``abs: true`` is used when the suite has one.
    """
    attacks = [a["id"] for a in suite["attacks"] if a["plugin"] == "model_randomization"]
    spearmans = [m for m in suite["metrics"] if m["plugin"] == "spearman"]
    absolute = [m["id"] for m in spearmans if (m.get("params") or {}).get("abs")]
    rank_metrics = absolute or [m["id"] for m in spearmans]
    rows = [r for r in result.summary if r["attack"] in attacks and r["metric"] in rank_metrics]
    if not rows:
        return []
    of = "|maps|" if absolute else "the signed maps (METHODS §6 asks for |maps|: add spearman with abs: true)"
    lines = ["", "## Randomisation check", "",
             f"Spearman of {of} between each explainer's map on the original model and on the model with "
             f"its top layers re-initialised. A map has moved when the whole 95 % interval lies at or "
             f"below {RANDOMISATION_MOVED_MAX}; with the mean above it the map has not moved, so it does "
             "not explain what those layers learned.", "",
             "| attack | explainer | metric | mean Spearman | 95 % CI | verdict |", "|---|---|---|---:|---|---|"]
    verdicts = []
    for row in rows:
        verdict = _randomisation_verdict(row)
        verdicts.append((row, verdict))
        ci = "–" if row.get("ci_high") is None else f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        lines.append(f"| {_cell(row['attack'])} | {_cell(row['explainer'])} | {_cell(row['metric'])} | "
                     f"{_fmt(row['mean'])} | {ci} | {verdict} |")
    valued = [r for r, v in verdicts if v != "no value"]
    still = [r["explainer"] for r, v in verdicts if v != "moves" and v != "no value"]
    if still:
        lines += ["", f"Explainers not shown to move: {', '.join(still)}."]
    elif valued:
        lines += ["", "Every explainer's map moves." if len(valued) == len(rows)
                  else "Every explainer with a value moves; the others produced none."]
    else:
        lines += ["", "No randomisation row produced a value: the check could not be made."]
    return lines


# Below this mean Spearman between the clean map and the map of the shifted input on the
# compensated model (functionally the same network), the explainer is not input invariant
# (Kindermans et al. 2019): its map depends on a constant the model ignores.
INPUT_INVARIANT_MIN = 0.99


def _input_invariance_section(result, suite: dict) -> list[str]:
    """Which explainers' maps change under constant_shift (Kindermans et al.'s input invariance)."""
    attacks = [a["id"] for a in suite["attacks"] if a["plugin"] == "constant_shift"]
    rank_metrics = [m["id"] for m in suite["metrics"] if m["plugin"] == "spearman"]
    rows = [r for r in result.summary if r["attack"] in attacks and r["metric"] in rank_metrics]
    if not rows:
        return []
    lines = ["", "## Input invariance", "",
             "Mean Spearman between each explainer's map of the clean image and of the image shifted by a "
             "constant, explained on the model compensated for the shift (the same function); below "
             f"{INPUT_INVARIANT_MIN} the explainer is **not input invariant** (Kindermans et al. 2019).", "",
             "| attack | explainer | mean Spearman | verdict |", "|---|---|---:|---|"]
    for row in rows:
        if row["mean"] is None:
            verdict = "no value"
        elif row["mean"] < INPUT_INVARIANT_MIN:
            verdict = "**not input invariant**"
        else:
            verdict = f"invariant on these {row['n']} images"
        lines.append(f"| {_cell(row['attack'])} | {_cell(row['explainer'])} | {_fmt(row['mean'])} | {verdict} |")
    valued = [r for r in rows if r["mean"] is not None]
    failing = sorted({r["explainer"] for r in valued if r["mean"] < INPUT_INVARIANT_MIN})
    if failing:
        lines += ["", f"Explainers that are not input invariant: {', '.join(failing)}."]
    elif valued:
        lines += ["", "Every explainer with a value is input invariant on these images."]
    else:
        lines += ["", "No input-invariance row produced a value: the check could not be made."]
    return lines


def render_markdown(result, manifest: dict) -> str:
    suite = manifest["suite"]
    lines = [f"# explain-audit report: {_cell(suite['name'])}", "",
             f"**{VERDICTS.get(result.exit_code, result.exit_code)}**", "",
             f"- model: `{_cell(manifest['model']['source'])}` (digest {manifest['model']['digest'][:12]})",
             f"- data: {_cell(manifest['data']['description'])}",
             f"- seed: {manifest['seed']}; device: {manifest['device']}; "
             f"wall time {manifest['timings_s'].get('total', 0):.1f} s"]
    for explainer_id, details in (manifest.get("explainers") or {}).items():
        if details:  # e.g. Grad-CAM's target layer, chosen from a traced forward pass
            shown = "; ".join(f"{k.replace('_', ' ')} {_cell(v)}" for k, v in details.items())
            lines.append(f"- explainer {_cell(explainer_id)}: {shown}")
    lines.append("")
    lines += ["## Gates", ""]
    if not result.gates:
        lines += ["No gates in this suite.", ""]
    else:
        lines += ["| gate | result | detail |", "|---|---|---|"]
        for gate in result.gates:
            lines.append(f"| {_cell(gate.label)} | {'pass' if gate.passed else '**FAIL**'} | "
                         f"{_cell(gate.message)} |")
        lines.append("")
    lines += ["## Summary", "",
              "Mean over images with its 95 % interval: exact binomial (Clopper–Pearson) for metrics whose "
              "per-image values are 0/1 (marked ᵇ), bootstrap otherwise; \"no spread\" where every value is "
              "equal, which a bootstrap cannot turn into an interval. ↑ higher is better, ↓ lower is better.",
              "",
              "| attack | explainer | metric | n | mean | 95 % CI | dir | status | degenerate |",
              "|---|---|---|---:|---:|---|---|---|---:|"]
    for row in result.summary:
        if row["ci_low"] is not None:
            ci = f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
            ci += "ᵇ" if row.get("ci_method") == "clopper-pearson" else ""
        else:
            ci = "no spread" if row["n"] else "–"
        lines.append(f"| {_cell(row['attack'])} | {_cell(row['explainer'])} | {_cell(row['metric'])} | "
                     f"{row['n']} | {_fmt(row['mean'])} | {ci} | {'↑' if row['higher_is_better'] else '↓'} "
                     f"| {row['status']} | {row['degenerate']} |")
    lines += _randomisation_section(result, suite)
    lines += transfer_section(result, suite)
    lines += _input_invariance_section(result, suite)
    reasons = sorted({(r["attack"], r["explainer"], r["metric"], r.get("reason", ""))
                      for r in result.records if r["status"] in ("error", "skipped")})
    if reasons:
        lines += ["", "## Skipped and failed cells", ""]
        for attack, explainer, metric, reason in reasons[:50]:
            lines.append(f"- {_cell(attack)} / {_cell(explainer)} / {_cell(metric)}: {_cell(reason)}")
    lines.append("")
    return "\n".join(lines)
