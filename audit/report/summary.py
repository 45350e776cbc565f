"""Per-cell summary: mean over images with n and a seeded 95 % bootstrap interval."""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np

from audit.records import Cell
from audit.seeding import derive_seed

COLUMNS = ("attack", "explainer", "metric", "n", "mean", "ci_low", "ci_high", "higher_is_better",
           "status", "degenerate", "skipped", "errors")
N_RESAMPLES = 2000


def bootstrap_ci(values: np.ndarray, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy), percentile if BCa is undefined; never NaN."""
    from scipy.stats import bootstrap

    mean = float(values.mean())
    if values.size < 2 or float(values.max() - values.min()) == 0.0:
        return mean, mean
    rng = np.random.default_rng(seed)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((values,), np.mean, n_resamples=N_RESAMPLES, confidence_level=confidence,
                            method=method, random_state=rng, vectorized=True)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return min(low, mean), max(high, mean)
    return mean, mean


def summarize(records: list[dict], cells: list[Cell], higher_is_better: dict[str, bool],
              seed: int) -> list[dict]:
    """One row per planned cell, in plan order."""
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
            low, high = bootstrap_ci(values, derive_seed(seed, "bootstrap", *cell.key))
        else:
            mean = low = high = None
        rows.append({"attack": cell.attack, "explainer": cell.explainer, "metric": cell.metric,
                     "n": int(values.size), "mean": mean, "ci_low": low, "ci_high": high,
                     "higher_is_better": bool(higher_is_better[cell.metric]), "status": status,
                     "degenerate": statuses.count("degenerate"), "skipped": statuses.count("skipped"),
                     "errors": errors})
    return rows
