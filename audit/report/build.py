"""Build the :class:`Report` of a run from its typed records: summary rows, per-image records,
gate results and the manifest. Nothing is recomputed: every number is one the run stored.

What each section says follows from the plugins' declared capabilities (a metric's
``higher_is_better`` and ``compares``, an attack's ``kind``), looked up in the registries by the
plugin name the manifest records; only the named checks (:mod:`audit.report.checks`,
:mod:`audit.report.transfer`) read cells of particular plugins.
"""

from __future__ import annotations

from collections.abc import Iterable

from audit.errors import EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_OK
from audit.records import NO_EXPLAINER, CheckVerdict
from audit.report.checks import CHECK_PLUGINS, invariance_check, randomisation_check
from audit.report.model import Cell, Figure, Finding, GateCase, HeatTable, Identity, Method, Report, SummaryRow, Verdict
from audit.report.transfer import transfer_tables

VERDICTS = {
    EXIT_OK: "PASS — every gate holds",
    EXIT_GATE_FAILED: "FAIL — at least one gate failed",
    EXIT_INCOMPLETE: "INCOMPLETE — some cells errored; their numbers are missing",
}
MAX_PROBLEMS = 50  # skipped/errored cells listed by reason; the count says how many there were

# A map-similarity metric (clean vs attacked map, higher is better) whose whole 95 % interval
# lies below BLINDED_MAX says the attacked map has nothing left of the clean one; one whose
# interval lies at or above KEPT_MIN says the map survived the attack.
BLINDED_MAX = 0.2
KEPT_MIN = 0.9
# ... and one whose interval lies below CHANGED_MAX (but not below BLINDED_MAX) says the attack
# changed the map substantially without wiping it out
CHANGED_MAX = 0.5


def _registry(section: str):
    from audit.attacks.base import ATTACKS
    from audit.explainers.base import EXPLAINERS
    from audit.metrics.base import METRICS

    return {"explainers": EXPLAINERS, "attacks": ATTACKS, "metrics": METRICS}[section]


def plugin_class(section: str, plugin: str):
    """The registered class of ``plugin``, or None where it is not installed here."""
    try:
        return _registry(section).get(plugin)
    except Exception:  # an unknown third-party plugin: the report says less, never fails
        return None


def resolve_methods(suite: dict) -> list[Method]:
    """Every plugin of the suite with its resolved parameters (defaults filled in)."""
    out = []
    for section, word in (("explainers", "explainer"), ("attacks", "attack"), ("metrics", "metric")):
        for item in suite.get(section, []):
            cls = plugin_class(section, item.get("plugin", ""))
            params = dict(item.get("params") or {})
            summary, capabilities = "", {}
            if cls is not None:
                try:
                    params = cls.Params(**params).model_dump(mode="json")
                except Exception:  # parameters of another version: shown as given
                    pass
                summary, capabilities = cls.summary(), dict(cls.capabilities())
            out.append(Method(word, item["id"], item.get("plugin", ""), summary, params, capabilities))
    return out


def methods_from_manifest(manifest: dict) -> list[Method]:
    stored = manifest.get("plugins")
    if stored:
        return [Method(m["section"], m["id"], m["plugin"], m.get("summary", ""), m.get("params", {}),
                       m.get("capabilities", {})) for m in stored]
    return resolve_methods(manifest.get("suite", {}))


def identity_from_manifest(manifest: dict) -> Identity:
    suite = manifest.get("suite", {})
    model = manifest.get("model", {})
    data = manifest.get("data", {})
    return Identity(suite=str(suite.get("name", "")), suite_file=str(manifest.get("suite_file", "")),
                    created=str(manifest.get("created", "")), seed=int(manifest.get("seed", suite.get("seed", 0))),
                    device=str(manifest.get("device", "")), model_source=str(model.get("source", "")),
                    model_digest=str(model.get("digest", "")), data_description=str(data.get("description", "")),
                    data_digest=str(data.get("digest", "")), versions=dict(manifest.get("versions", {})),
                    git_commit=manifest.get("git_commit"), wall_s=float(manifest.get("timings_s", {}).get("total", 0)),
                    class_names=[str(c) for c in data.get("class_names", [])],
                    explainer_details={str(k): {str(n): str(v) for n, v in (d or {}).items()}
                                       for k, d in (manifest.get("explainers") or {}).items() if d})


# -- gates ----------------------------------------------------------------------------------------
def _gate_parts(gate) -> dict:
    get = gate.get if isinstance(gate, dict) else (lambda k, d=None: getattr(gate, k, d))
    return {"metric": get("metric"), "attack": get("attack", "*"), "explainer": get("explainer", "*"),
            "min": get("min"), "max": get("max"), "check": get("check", "mean") or "mean"}


def gate_text(parts: dict) -> str:
    bounds = []
    subject = "95 % interval " if parts["check"] == "interval" else ""
    if parts["min"] is not None:
        bounds.append(f"{subject}>= {parts['min']:g}")
    if parts["max"] is not None:
        bounds.append(f"{subject}<= {parts['max']:g}")
    return f"{parts['metric']} [attack {parts['attack']}, explainer {parts['explainer']}] {' and '.join(bounds)}"


def _ci(row: SummaryRow) -> str:
    return "no interval" if row.interval is None else f"CI {row.ci_low:.2f}, {row.ci_high:.2f}"


def gate_row_message(parts: dict, row: SummaryRow, passed: bool) -> str:
    """e.g. ``spearman 0.41 < min 0.50 [CI 0.35, 0.47]``: what was compared with which bound."""
    metric = row.metric
    if row.mean is None:
        return f"{metric} has no value (n = 0: every image skipped or errored)"
    if parts["check"] == "interval" and row.interval is None:
        return f"{metric} {row.mean:.2f} with no interval (every value equal) cannot hold an interval bound"
    lo, hi = (row.mean, row.mean) if parts["check"] == "mean" else row.interval
    what = "" if parts["check"] == "mean" else "CI "
    shown_lo = f"{metric} {what}{'low ' if what else ''}{lo:.2f}"
    shown_hi = f"{metric} {what}{'high ' if what else ''}{hi:.2f}"
    if not passed:
        if parts["min"] is not None and lo < parts["min"]:
            return f"{shown_lo} < min {parts['min']:.2f} [{_ci(row)}] (mean {row.mean:.2f}, n = {row.n})"
        if parts["max"] is not None and hi > parts["max"]:
            return f"{shown_hi} > max {parts['max']:.2f} [{_ci(row)}] (mean {row.mean:.2f}, n = {row.n})"
    held = []
    if parts["min"] is not None:
        held.append(f"{shown_lo} >= min {parts['min']:.2f}")
    if parts["max"] is not None:
        held.append(f"{shown_hi} <= max {parts['max']:.2f}")
    return f"{' and '.join(held)} [{_ci(row)}] (n = {row.n})"


def _unique(name: str, parts: dict, taken: set[str]) -> str:
    if name not in taken:
        return name
    bounds = ", ".join(f"{k} {parts[k]:g}" for k in ("min", "max") if parts[k] is not None)
    candidate = f"{name} ({parts['check']} {bounds})"
    k = 2
    while candidate in taken:
        candidate = f"{name} ({parts['check']} {bounds}) #{k}"
        k += 1
    return candidate


def gate_cases(gates: Iterable, rows: dict[tuple, SummaryRow], reasons: dict[tuple, str]) -> list[GateCase]:
    """One case per (gate, summary row it checked); a gate that matched no row is one failing case."""
    cases: list[GateCase] = []
    taken: set[str] = set()
    for result in gates:
        parts = _gate_parts(result.gate)
        label = gate_text(parts)
        checked = list(getattr(result, "checked", []) or [])
        if not checked:
            name = _unique(f"{parts['attack']}/{parts['explainer']}/{parts['metric']}", parts, taken)
            message = getattr(result, "message", "") or "matches no summary row"
            cases.append(GateCase(name, label, "pass" if result.passed else "failure", message))
            taken.add(name)
            continue
        for checked_row in checked:
            key = (checked_row["attack"], checked_row["explainer"], checked_row["metric"])
            row = rows.get(key) or SummaryRow.from_dict(checked_row)
            passed = bool(checked_row.get("passed", result.passed))
            name = _unique(row.name, parts, taken)
            taken.add(name)
            if passed:
                outcome = "pass"
            elif row.status == "error":
                outcome = "error"
            else:
                outcome = "failure"
            message = gate_row_message(parts, row, passed)
            if outcome == "error":
                message += f"; cell errored: {reasons.get(key, 'see results.jsonl')}"
            cases.append(GateCase(name, label, outcome, message))
    return cases


# -- heat tables ----------------------------------------------------------------------------------
# attacks whose cells are a sanity check, where a moved map is the wanted outcome: the shading by
# the metric's direction reads the other way round for them
SANITY_ATTACKS = (CHECK_PLUGINS["randomisation_attack"],)
SANITY_NOTE = ("a sanity check: here a map that changes is the expected outcome, so the metric's direction (and "
               "the shading) reads the other way round; see the randomisation check")


def _scale(values: list[float]) -> tuple[float, float]:
    """The range the colour ramp spans: [0, 1] or [-1, 1] when every value lies there (the
    metric's natural range, so a table of good values is not painted red), else the values'."""
    if not values:
        return (0.0, 1.0)
    lo, hi = min(values), max(values)
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    if lo >= -1.0 and hi <= 1.0:
        return (-1.0, 1.0)
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def badness(value: float, scale: tuple[float, float], higher_is_better: bool) -> float:
    lo, hi = scale
    position = (value - lo) / (hi - lo)
    position = min(1.0, max(0.0, position))
    return 1.0 - position if higher_is_better else position


def heat_tables(summary: list[SummaryRow], suite: dict) -> list[HeatTable]:
    attacks = [a["id"] for a in suite.get("attacks", [])] or list(dict.fromkeys(r.attack for r in summary))
    plugins = {m["id"]: m.get("plugin", m["id"]) for m in suite.get("metrics", [])}
    attack_plugins = {a["id"]: a.get("plugin", a["id"]) for a in suite.get("attacks", [])}
    metrics = [m["id"] for m in suite.get("metrics", [])] or list(dict.fromkeys(r.metric for r in summary))
    tables = []
    for metric in metrics:
        rows = [r for r in summary if r.metric == metric]
        if not rows:
            continue
        explainers = list(dict.fromkeys(r.explainer for r in rows))
        row_attacks = [a for a in attacks if any(r.attack == a for r in rows)]
        scale = _scale([r.mean for r in rows if r.mean is not None])
        higher = rows[0].higher_is_better
        cells = {}
        for r in rows:
            if r.mean is None:
                text = f"no value ({r.status})"
                cells[(r.attack, r.explainer)] = Cell(text, numeric=True)
            else:
                text = f"{r.mean:.2f}" + ("" if r.interval is None else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]")
                cells[(r.attack, r.explainer)] = Cell(text, numeric=True, badness=badness(r.mean, scale, higher))
        notes = {a: SANITY_NOTE for a in row_attacks if attack_plugins.get(a) in SANITY_ATTACKS}
        tables.append(HeatTable(metric, plugins.get(metric, metric), higher, scale, row_attacks, explainers, cells,
                                notes))
    return tables


# -- findings -------------------------------------------------------------------------------------
def _value(row: SummaryRow) -> str:
    if row.interval is None:
        return f"{row.mean:.2f} (no spread over {row.n} images)"
    return f"{row.mean:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"


def _map_similarity(item: dict) -> bool:
    """Whether a suite metric compares the clean with the attacked map, higher meaning more alike."""
    cls = plugin_class("metrics", item.get("plugin", ""))
    if cls is None or not cls.higher_is_better or cls.compares != "maps":
        return False
    try:
        return bool(cls(**(item.get("params") or {})).compares_clean_to_attacked())
    except Exception:
        return False


def attack_findings(summary: list[SummaryRow], suite: dict) -> list[Finding]:
    """Explainers an attack blinds, and explainers whose maps survive it, from every map-similarity
    metric of the suite (clean vs attacked map, higher is better: e.g. Spearman, top-k
    intersection). Sanity-check attacks (the randomisation check), where a moved map is the
    wanted outcome, are left to their check."""
    attack_plugins = {a["id"]: a.get("plugin", a["id"]) for a in suite.get("attacks", [])}
    similarity = {m["id"] for m in suite.get("metrics", []) if _map_similarity(m)}
    blinded, changed, kept = [], [], []
    for row in summary:
        if row.explainer == NO_EXPLAINER or row.mean is None:
            continue
        attack_cls = plugin_class("attacks", attack_plugins.get(row.attack, ""))
        if attack_cls is None or attack_cls.kind == "identity" or row.metric not in similarity:
            continue
        if attack_plugins.get(row.attack) in (CHECK_PLUGINS["randomisation_attack"],
                                              CHECK_PLUGINS["invariance_attack"]):
            continue
        high = row.ci_high if row.interval is not None else row.mean
        low = row.ci_low if row.interval is not None else row.mean
        if high < BLINDED_MAX and row.n >= 2:
            blinded.append(Finding(f"{row.explainer} is blinded by the {row.attack} attack: {row.metric} "
                                   f"{_value(row)} between its clean and attacked maps.", "bad"))
        elif high < CHANGED_MAX and row.n >= 2:
            changed.append(Finding(f"{row.explainer}'s map changes substantially under the {row.attack} attack: "
                                   f"{row.metric} {_value(row)}.", "bad"))
        elif low >= KEPT_MIN and row.n >= 2:
            kept.append(Finding(f"{row.explainer} keeps its map under the {row.attack} attack: {row.metric} "
                                f"{_value(row)}.", "good"))
    return blinded + changed + kept


def _headline(exit_code: int, gates: list, verdicts: list[CheckVerdict], strict: bool) -> str:
    """The verdict line; with checks, what decided it (a failed check, a failed gate)."""
    if not verdicts or exit_code not in (EXIT_OK, EXIT_GATE_FAILED):
        return VERDICTS.get(exit_code, f"exit {exit_code}")
    counts = {w: sum(v.verdict == w for v in verdicts) for w in ("pass", "warn", "fail", "skipped")}
    tally = ", ".join(f"{n} {w}" for w, n in counts.items() if n)
    if exit_code == EXIT_OK:
        return f"PASS — no check fails ({tally})"
    if counts["fail"] or (strict and (counts["warn"] or counts["skipped"])):
        why = "a check fails" if counts["fail"] else "a check is not shown to pass (--strict)"
        return f"FAIL — {why} ({tally})"
    return f"FAIL — at least one gate failed (checks: {tally})"


def build_report(summary: list, records: list[dict], gates: Iterable, exit_code: int, manifest: dict,
                 figures: list[Figure] | None = None, *, verdicts: list[CheckVerdict] | None = None,
                 strict: bool = False) -> Report:
    """The report of one run. ``summary``: summary rows (dicts or :class:`SummaryRow`);
    ``records``: results.jsonl's lines; ``gates``: the gate results of the engine (each with
    ``gate``, ``passed``, ``checked`` rows and ``message``); ``manifest``: manifest.json;
    ``verdicts``: the suite's checks judged by :mod:`audit.engine.verdicts` (``strict``: warn and
    skipped verdicts fail)."""
    verdicts = list(verdicts or [])
    rows = [r if isinstance(r, SummaryRow) else SummaryRow.from_dict(r) for r in summary]
    by_key = {r.key: r for r in rows}
    suite = manifest.get("suite", {})
    reasons: dict[tuple, str] = {}
    problems = set()
    for record in records:
        if record.get("status") in ("error", "skipped"):
            key = (record["attack"], record["explainer"], record["metric"])
            reason = record.get("reason", "")
            reasons.setdefault(key, reason)
            problems.add((*key, reason))
    gates = list(gates)
    cases = gate_cases(gates, by_key, reasons)
    covered = {c.name.split(" (")[0] for c in cases}
    outcomes = []
    for row in rows:
        if row.status in ("error", "skipped") and row.name not in covered:
            outcome = "error" if row.status == "error" else "skipped"
            outcomes.append(GateCase(row.name, "", outcome, reasons.get(row.key, f"cell {row.status}")))
    passed = sum(1 for g in gates if g.passed)
    verdict = Verdict(exit_code, _headline(exit_code, gates, verdicts, strict), passed, len(gates), len(rows),
                      sum(1 for r in rows if r.status == "error"), sum(1 for r in rows if r.status == "skipped"))
    findings = [Finding(f"Gate failed: {c.name}: {c.message}.", "bad") for c in cases if c.outcome != "pass"]
    checks = []
    for make in (randomisation_check, transfer_tables, invariance_check):
        tables, found = make(rows, suite)
        checks += tables
        findings += found
    findings += attack_findings(rows, suite)
    if verdict.cells_errored:
        findings.append(Finding(f"{verdict.cells_errored} of {len(rows)} cells errored: their numbers are "
                                "missing, and nothing here speaks for them.", "bad"))
    return Report(identity=identity_from_manifest(manifest), verdict=verdict, gates=cases, findings=findings,
                  summary=rows, heat=heat_tables(rows, suite), checks=checks,
                  problems=sorted(problems)[:MAX_PROBLEMS], problems_total=len(problems),
                  methods=methods_from_manifest(manifest), figures=list(figures or []), cell_outcomes=outcomes,
                  verdicts=verdicts, strict=strict)
