"""Per-cell summary: mean over images with n and a 95 % interval of the mean.

Which interval (column ``ci_method``):

- ``clopper-pearson``: metrics that declare ``binary`` (per-image values 0 or 1: pointing game,
  FSR, accuracy, agreement). The exact binomial interval (Clopper & Pearson 1934, via
  ``scipy.stats.binomtest``). A bootstrap of 0/1 values collapses to a point whenever every
  value agrees: 32 hits out of 32 would read "1.0 [1.0, 1.0]", certainty the data does not
  hold; Clopper–Pearson gives [0.891, 1.0].
- ``bootstrap``: every other metric. Seeded BCa bootstrap (scipy), percentile where BCa is
  undefined (METHODS §6: "every reported mean carries n and a 95 % bootstrap interval").
- ``none``: no interval is reported (``ci_low``/``ci_high`` empty) when a non-binary metric's
  values are all equal or there is only one. A bootstrap sees no spread in n equal values and
  would answer [m, m]; for a continuous metric that claims the mean of every other image is
  exactly m too, which n images cannot show (without known bounds on the metric there is no
  honest finite interval). Gates on the interval (``check: interval``) fail on such rows.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np

from audit.records import Cell
from audit.seeding import derive_seed

COLUMNS = ("attack", "explainer", "metric", "n", "mean", "ci_low", "ci_high", "higher_is_better",
           "status", "degenerate", "skipped", "errors", "ci_method")
N_RESAMPLES = 2000
CONFIDENCE = 0.95


def bootstrap_ci(values: np.ndarray, seed: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """BCa bootstrap interval of the mean (scipy), percentile if BCa is undefined.

    ``None`` when the values carry no spread (fewer than two, or all equal): see the module
    docstring for why that is not [m, m].
    """
    from scipy.stats import bootstrap

    mean = float(values.mean())
    if values.size < 2 or float(values.max() - values.min()) == 0.0:
        return None
    rng = np.random.default_rng(seed)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((values,), np.mean, n_resamples=N_RESAMPLES, confidence_level=confidence,
                            method=method, random_state=rng, vectorized=True)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return min(low, mean), max(high, mean)
    return None


def binomial_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson (exact) interval of a proportion ``successes / n`` (n ≥ 1), in [0, 1]."""
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def interval(values: np.ndarray, binary: bool, seed: int) -> tuple[float | None, float | None, str]:
    """(low, high, method) for the mean of ``values`` (non-empty)."""
    if binary and bool(np.isin(values, (0.0, 1.0)).all()):
        low, high = binomial_ci(int(values.sum()), int(values.size))
        return low, high, "clopper-pearson"
    ci = bootstrap_ci(values, seed)
    return (None, None, "none") if ci is None else (*ci, "bootstrap")


def summarize(records: list[dict], cells: list[Cell], higher_is_better: dict[str, bool],
              seed: int, binary: dict[str, bool] | None = None) -> list[dict]:
    """One row per planned cell, in plan order. ``binary``: metric id -> values are 0/1."""
    binary = binary or {}
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        grouped[(record["attack"], record["explainer"], record["metric"])].append(record)
    rows = []
    for cell in cells:
        group = grouped.get(cell.key, [])
        values = np.array([r["value"] for r in group if r["status"] in ("ok", "degenerate")], dtype=float)
        statuses = [r["status"] for r in group]
        errors = statuses.count("error")
        if errors:
            status = "error"
        elif values.size == 0:
            status = "skipped"
        else:
            status = "ok"
        if values.size:
            mean = float(values.mean())
            low, high, method = interval(values, binary.get(cell.metric, False),
                                         derive_seed(seed, "bootstrap", *cell.key))
        else:
            mean = low = high = None
            method = "none"
        rows.append({"attack": cell.attack, "explainer": cell.explainer, "metric": cell.metric,
                     "n": int(values.size), "mean": mean, "ci_low": low, "ci_high": high,
                     "higher_is_better": bool(higher_is_better[cell.metric]), "status": status,
                     "degenerate": statuses.count("degenerate"), "skipped": statuses.count("skipped"),
                     "errors": errors, "ci_method": method})
    return rows
