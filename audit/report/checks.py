"""The report's named checks: sections that read a suite's cells of one kind of attack and say
what they show, each as a :class:`Table` with the :class:`Finding` s its numbers support.

- randomisation check (Adebayo et al. 2018): does the map move when the model's top layers are
  re-initialised?
- input invariance (Kindermans et al. 2019): does the map stay when the input is shifted by a
  constant the model compensates?
- the manipulation transfer matrix (Heo et al. 2019, Table 1): :mod:`audit.report.transfer`.

Which plugins a check reads is declared here, in :data:`CHECK_PLUGINS`, and nowhere else in
the report: every other section works from the plugins' declared capabilities.
"""

from __future__ import annotations

from audit.report.model import Cell, Finding, SummaryRow, Table

# The plugins whose cells a named check reads (registry names).
CHECK_PLUGINS = {
    "randomisation_attack": "model_randomization",
    "invariance_attack": "constant_shift",
    "rank_metric": "spearman",
}

# Above this Spearman between the clean map and the map of the randomised model, the map has not
# moved: the explainer does not depend on the re-initialised layers (Adebayo et al. 2018).
RANDOMISATION_MOVED_MAX = 0.5

# Below this mean Spearman between the clean map and the map of the shifted input on the
# compensated model (functionally the same network), the explainer is not input invariant
# (Kindermans et al. 2019): its map depends on a constant the model ignores.
INPUT_INVARIANT_MIN = 0.99


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _ids(items: list[dict], plugin: str) -> list[str]:
    return [i["id"] for i in items if i.get("plugin") == plugin]


def _with_ci(row: SummaryRow, digits: int = 2) -> str:
    if row.mean is None:
        return "no value"
    if row.interval is None:
        return f"{row.mean:.{digits}f} (no spread)"
    return f"{row.mean:.{digits}f} [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"


def randomisation_verdict(row: SummaryRow) -> str:
    """"moves" only when the interval's upper end is at or below the bound (the data rule out a
    map that stayed); "does not move" when the mean is above it; in between the check is open."""
    if row.mean is None:
        return "no value"
    high = row.ci_high if row.ci_high is not None else row.mean
    if high <= RANDOMISATION_MOVED_MAX:
        return "moves"
    if row.mean > RANDOMISATION_MOVED_MAX:
        return "does not move"
    return "not shown to move"


def randomisation_check(summary: list[SummaryRow], suite: dict) -> tuple[list[Table], list[Finding]]:
    """Which explainers' maps move when the model's top layers are re-initialised.

    METHODS §6 compares |maps|: a Spearman with ``abs: true`` is used when the suite has one.
    """
    attacks = _ids(suite.get("attacks", []), CHECK_PLUGINS["randomisation_attack"])
    spearmans = [m for m in suite.get("metrics", []) if m.get("plugin") == CHECK_PLUGINS["rank_metric"]]
    absolute = [m["id"] for m in spearmans if (m.get("params") or {}).get("abs")]
    rank_metrics = absolute or [m["id"] for m in spearmans]
    rows = [r for r in summary if r.attack in attacks and r.metric in rank_metrics]
    if not rows:
        return [], []
    of = "|maps|" if absolute else "the signed maps (METHODS §6 asks for |maps|: add spearman with abs: true)"
    intro = (f"Spearman of {of} between each explainer's map on the original model and on the model with "
             f"its top layers re-initialised. A map has moved when the whole 95 % interval lies at or "
             f"below {RANDOMISATION_MOVED_MAX}; with the mean above it the map has not moved, so it does "
             "not explain what those layers learned.")
    cells, findings, verdicts = [], [], []
    for row in rows:
        verdict = randomisation_verdict(row)
        verdicts.append((row, verdict))
        ci = "–" if row.interval is None else f"[{row.ci_low:.4f}, {row.ci_high:.4f}]"
        bad = verdict in ("does not move", "not shown to move")
        cells.append([Cell(row.attack), Cell(row.explainer), Cell(row.metric), Cell(_fmt(row.mean), numeric=True),
                      Cell(ci), Cell(verdict, emphasis=verdict == "does not move",
                                     badness=1.0 if verdict == "does not move" else (0.5 if bad else None))])
        what = f"{'|maps| ' if absolute else ''}Spearman {_with_ci(row)}"
        if verdict == "does not move":
            findings.append(Finding(f"{row.explainer} fails the randomisation check: its map stays when the "
                                    f"model's top layers are re-initialised ({row.attack}: {what}).", "bad"))
        elif verdict == "not shown to move":
            findings.append(Finding(f"{row.explainer} is not shown to pass the randomisation check: the interval "
                                    f"reaches above {RANDOMISATION_MOVED_MAX} ({row.attack}: {what}).", "note"))
        elif verdict == "moves":
            findings.append(Finding(f"{row.explainer} passes the randomisation check: its map moves when the "
                                    f"top layers are re-initialised ({row.attack}: {what}).", "good"))
    valued = [r for r, v in verdicts if v != "no value"]
    still = [r.explainer for r, v in verdicts if v not in ("moves", "no value")]
    if still:
        note = f"Explainers not shown to move: {', '.join(still)}."
    elif valued:
        note = ("Every explainer's map moves." if len(valued) == len(rows)
                else "Every explainer with a value moves; the others produced none.")
    else:
        note = "No randomisation row produced a value: the check could not be made."
    table = Table("Randomisation check", intro,
                  ["attack", "explainer", "metric", "mean Spearman", "95 % CI", "verdict"], cells,
                  align="lllrll", notes=[note], anchor="randomisation")
    return [table], findings


def invariance_check(summary: list[SummaryRow], suite: dict) -> tuple[list[Table], list[Finding]]:
    """Which explainers' maps change under constant_shift (Kindermans et al.'s input invariance)."""
    attacks = _ids(suite.get("attacks", []), CHECK_PLUGINS["invariance_attack"])
    rank_metrics = _ids(suite.get("metrics", []), CHECK_PLUGINS["rank_metric"])
    rows = [r for r in summary if r.attack in attacks and r.metric in rank_metrics]
    if not rows:
        return [], []
    intro = ("Mean Spearman between each explainer's map of the clean image and of the image shifted by a "
             "constant, explained on the model compensated for the shift (the same function); below "
             f"{INPUT_INVARIANT_MIN} the explainer is **not input invariant** (Kindermans et al. 2019).")
    cells, findings = [], []
    for row in rows:
        if row.mean is None:
            verdict, bad = "no value", None
        elif row.mean < INPUT_INVARIANT_MIN:
            verdict, bad = "not input invariant", 1.0
            findings.append(Finding(f"{row.explainer} is not input invariant: a constant shift the model "
                                    f"compensates changes its map ({row.attack}: {row.metric} {_with_ci(row, 3)}).",
                                    "bad"))
        else:
            verdict, bad = f"invariant on these {row.n} images", 0.0
        cells.append([Cell(row.attack), Cell(row.explainer), Cell(_fmt(row.mean), numeric=True),
                      Cell(verdict, emphasis=bad == 1.0, badness=bad)])
    valued = [r for r in rows if r.mean is not None]
    failing = sorted({r.explainer for r in valued if r.mean < INPUT_INVARIANT_MIN})
    if failing:
        note = f"Explainers that are not input invariant: {', '.join(failing)}."
    elif valued:
        note = "Every explainer with a value is input invariant on these images."
    else:
        note = "No input-invariance row produced a value: the check could not be made."
    table = Table("Input invariance", intro, ["attack", "explainer", "mean Spearman", "verdict"], cells,
                  align="llrl", notes=[note], anchor="invariance")
    return [table], findings
