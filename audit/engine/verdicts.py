"""Verdicts: the regulator's reading of a run (``explain-audit check``, a suite's ``checks:``).

A check rule (:class:`audit.engine.suite.CheckRule`) names a metric, an attack, an explainer
(or ``*`` / ``-``) and one bound. Each summary row it matches gets a verdict from its mean and
95 % interval [lo, hi] (the summary's bootstrap or Clopper–Pearson interval):

- ``pass``: the whole interval lies on the good side (``min``: lo ≥ threshold; ``max``: hi ≤
  threshold) — the data rule the problem out at this n;
- ``fail``: the whole interval lies on the bad side (``min``: hi < threshold; ``max``: lo >
  threshold) — the data show the problem; a rule with ``severity: warn`` says ``warn`` instead;
- ``warn``: the interval holds the threshold — these images cannot tell either way;
- ``skipped`` / ``error``: the row has no value (every image skipped, e.g. no labels for
  accuracy, or errored), with the reason.

A row without an interval (every value equal, or one image) is judged on its mean alone.
Exit (``verdict_exit``): 1 when a verdict is ``fail`` — or, with ``strict``, ``warn`` or ``skipped``
(a check that could not be made is not a pass). Errored cells make the run incomplete (exit 3)
as in ``run``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from audit.records import CheckVerdict

# verdicts.csv: the seven columns first, then what a reader needs to tell rows apart
COLUMNS = ("check", "explainer", "verdict", "value", "ci_low", "ci_high", "threshold", "bound", "metric",
           "attack", "reason")

# What a check flags, said when it fails (or warns on the failing side); {explainer} is filled in.
FLAGS = {
    "gating": "the model answers occluded copies of its images unlike an honest classifier (collapsed or "
              "confident answers without the evidence), so black-box explainers such as RISE or occlusion "
              "cannot be trusted on it",
    "manipulation": "{explainer}'s map does not follow what this very model does with the image: it may have "
                    "been manipulated",
    "sanity": "{explainer}'s map barely moves when the model's top layers are re-initialised: it does not "
              "show what the model learned",
    "fragility": "an input change too small to see moves {explainer}'s map far",
    "accuracy": "the model is often wrong on these images, so the other checks explain mostly wrong answers",
}

# The same check read through a given metric plugin (not the suite's id for it, which is the
# user's choice): one sentence for what that metric saw, not every metric's reason at once.
FLAGS_BY_PLUGIN = {
    ("manipulation", "explainer_agreement"): "{explainer}'s map disagrees with what masking the image does to "
                                             "this very model (the black-box reference's map): it may have "
                                             "been manipulated",
    ("manipulation", "aopc_gap"): "{explainer}'s map orders the image's regions no better than random order "
                                  "(Heo et al. 2019, Fig. 4a): it may have been manipulated",
}

def _get(row, key: str):
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def judge(rule, row, plugin: str | None = None) -> CheckVerdict:
    """The verdict of ``rule`` (a :class:`~audit.engine.suite.CheckRule`) on one summary row (a
    dict of summary.csv or a :class:`~audit.report.model.SummaryRow`); ``plugin``, the rule's
    metric plugin, picks the sentence of why (default: the check's own)."""
    mean, lo, hi = _get(row, "mean"), _get(row, "ci_low"), _get(row, "ci_high")
    explainer = str(_get(row, "explainer"))
    t, bound = rule.threshold, rule.bound
    flag = (FLAGS_BY_PLUGIN.get((rule.check, plugin)) or FLAGS.get(rule.check, "the check's bound is crossed")
            ).format(explainer=explainer)

    def verdict(word: str, reason: str) -> CheckVerdict:
        return CheckVerdict(rule.check, explainer, word, mean, lo, hi, t, bound, rule.metric, rule.attack, reason)

    if mean is None:
        status = str(_get(row, "status") or "skipped")
        word = "error" if status == "error" else "skipped"
        return verdict(word, f"{rule.metric} has no value ({status}: every image {status}); the check could "
                             "not be made")
    degenerate = int(_get(row, "degenerate") or 0)
    if degenerate:  # a constant map has no ranking: its value is 0 by convention (METHODS §0)
        flag += (f" ({degenerate} of {_get(row, 'n')} images had a constant map on one side, counted as 0: "
                 "a black-box map a gate blinded, or an explainer that saw nothing)")
    spread = lo is not None and hi is not None
    low, high = (lo, hi) if spread else (mean, mean)
    n = _get(row, "n")
    shown = f"{rule.metric} {_fmt(mean)}" + (f" [{_fmt(lo)}, {_fmt(hi)}]" if spread else " (no interval)")
    sign = ">=" if bound == "min" else "<="
    good = low >= t if bound == "min" else high <= t
    bad = high < t if bound == "min" else low > t
    if good:
        side = "whole interval" if spread else "mean"
        return verdict("pass", f"{shown} {sign} {t:g}: the {side} on the passing side (n = {n})")
    if bad:
        word = "warn" if rule.severity == "warn" else "fail"
        where = "the whole interval" if spread else "the mean"
        return verdict(word, f"{shown}: {where} beyond {bound} {t:g} (n = {n}) — {flag}")
    leaning = (mean < t) if bound == "min" else (mean > t)
    lean = f"; the mean is on the failing side — {flag}" if leaning else "; the mean is on the passing side"
    return verdict("warn", f"{shown} holds {bound} {t:g}: {n} images cannot tell{lean}")


def evaluate_checks(rules: Iterable, summary: Iterable, plugins: dict[str, str] | None = None) -> list[CheckVerdict]:
    """One verdict per (rule, matching summary row), in rule order then row order; a rule that
    matches no row is ``skipped`` (nothing was measured for it). ``plugins``: metric id → plugin."""
    plugins = plugins or {}
    rows = list(summary)
    out = []
    for rule in rules:
        matched = [r for r in rows if _get(r, "metric") == rule.metric and _get(r, "attack") == rule.attack
                   and rule.explainer in ("*", _get(r, "explainer"))]
        for row in matched:
            out.append(judge(rule, row, plugins.get(rule.metric)))
        if not matched:
            out.append(CheckVerdict(rule.check, rule.explainer, "skipped", None, None, None, rule.threshold,
                                    rule.bound, rule.metric, rule.attack, "no summary row matches this check"))
    return out


def verdicts_failed(verdicts: Iterable[CheckVerdict], strict: bool = False) -> bool:
    """Whether the verdicts fail the check: a ``fail``; with ``strict`` also a ``warn`` or ``skipped``."""
    failing = {"fail", "warn", "skipped"} if strict else {"fail"}
    return any(v.verdict in failing for v in verdicts)


def verdicts_csv(verdicts: Iterable[CheckVerdict]) -> str:
    """verdicts.csv: :data:`COLUMNS`, numbers as Python writes them (empty where there is none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for v in verdicts:
        writer.writerow(["" if getattr(v, c) is None else getattr(v, c) for c in COLUMNS])
    return buffer.getvalue()
