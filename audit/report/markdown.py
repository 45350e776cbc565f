"""report.md: verdict, gate results and the summary table."""

from __future__ import annotations

from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK

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


# Above this mean Spearman between the clean map and the map of the randomised model, the map
# has not moved: the explainer does not depend on the re-initialised layers (Adebayo et al. 2018).
RANDOMISATION_MOVED_MAX = 0.5


def _randomisation_section(result, suite: dict) -> list[str]:
    """Which explainers' maps move when the model's top layers are re-initialised."""
    attacks = [a["id"] for a in suite["attacks"] if a["plugin"] == "model_randomization"]
    rank_metrics = [m["id"] for m in suite["metrics"] if m["plugin"] == "spearman"]
    rows = [r for r in result.summary if r["attack"] in attacks and r["metric"] in rank_metrics]
    if not rows:
        return []
    lines = ["", "## Randomisation check", "",
             f"Mean Spearman between each explainer's map on the original model and on the model with "
             f"its top layers re-initialised; above {RANDOMISATION_MOVED_MAX} the map has not moved, "
             "so it does not explain what those layers learned.", "",
             "| attack | explainer | mean Spearman | verdict |", "|---|---|---:|---|"]
    for row in rows:
        if row["mean"] is None:
            verdict = "no value"
        elif row["mean"] > RANDOMISATION_MOVED_MAX:
            verdict = "**does not move**"
        else:
            verdict = "moves"
        lines.append(f"| {_cell(row['attack'])} | {_cell(row['explainer'])} | {_fmt(row['mean'])} | {verdict} |")
    valued = [r for r in rows if r["mean"] is not None]
    still = [r["explainer"] for r in valued if r["mean"] > RANDOMISATION_MOVED_MAX]
    if still:
        lines += ["", f"Explainers that do not move: {', '.join(still)}."]
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
             f"wall time {manifest['timings_s'].get('total', 0):.1f} s", ""]
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
              "Mean over images with its 95 % bootstrap interval; ↑ higher is better, ↓ lower is better.",
              "",
              "| attack | explainer | metric | n | mean | 95 % CI | dir | status | degenerate |",
              "|---|---|---|---:|---:|---|---|---|---:|"]
    for row in result.summary:
        ci = "–" if row["ci_low"] is None else f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        lines.append(f"| {_cell(row['attack'])} | {_cell(row['explainer'])} | {_cell(row['metric'])} | "
                     f"{row['n']} | {_fmt(row['mean'])} | {ci} | {'↑' if row['higher_is_better'] else '↓'} "
                     f"| {row['status']} | {row['degenerate']} |")
    lines += _randomisation_section(result, suite)
    lines += _input_invariance_section(result, suite)
    reasons = sorted({(r["attack"], r["explainer"], r["metric"], r.get("reason", ""))
                      for r in result.records if r["status"] in ("error", "skipped")})
    if reasons:
        lines += ["", "## Skipped and failed cells", ""]
        for attack, explainer, metric, reason in reasons[:50]:
            lines.append(f"- {_cell(attack)} / {_cell(explainer)} / {_cell(metric)}: {_cell(reason)}")
    lines.append("")
    return "\n".join(lines)
