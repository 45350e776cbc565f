"""``explain-audit check``: the regulator's model check, one model and some data, no original.

The check is a suite (:func:`check_suite`, the same as ``suites/check.yaml``) run by the engine
like any other, plus the verdict layer of its ``checks:`` (:mod:`audit.engine.verdicts`):

- ``gating``: ``gating_probe`` (attack none), max — a model that answers occluded queries
  unlike an honest one (issue E);
- ``manipulation``: ``explainer_agreement`` (Pearson at 8 × 8) with RISE's map of the same model
  (none), min, and ``aopc_gap`` (none), min — a gradient map that disagrees with what masking the
  image does to the same model, or orders regions worse than random (issue F; Heo et al. 2019,
  Fig. 4a);
- ``sanity``: ``spearman`` of |maps| under ``model_randomization`` (top 4 layers), max — a map
  that ignores the weights (Adebayo et al. 2018);
- ``fragility``: ``max_sensitivity`` at radius 2/255 (none), max — a map that an invisible
  input change moves far (Yeh et al. 2019; issue G);
- ``accuracy``: ``accuracy`` (none), min, warn only — context: a model often wrong on these
  images explains mostly wrong answers.

Explainers judged: ``saliency`` and ``gradcam`` (the targets of Heo's manipulation); ``rise``
(500 masks) is the black-box reference only (no checks of its own, so its cost is one map per
image: 500 forward passes).

Thresholds (:data:`THRESHOLDS`) were calibrated on the embedded benchmark (n = 32 images of
builtin:shapes, split test, seed 0): the reference model must pass every check, the positives
(the gated model of E, Heo's location- and top-k-fooled Grad-CAM models of F, exported with
``explain-audit export-attacked``) must fail theirs. Measured (mean [95 % interval]; the full
table is in the README's "Checking a model" section):

- gating_probe ≤ 0.3: reference 0.00 [0.00, 0.11]; gated (zeros) 1.00 [0.89, 1.00], gated
  (decoy) 0.78 [0.60, 0.91].
- agreement, Grad-CAM ≥ 0.55: reference 0.79 [0.76, 0.81]; location-fooled −0.23 [−0.35, −0.07];
  top-k-fooled 0.39 [0.32, 0.46]. SimpleGrad ≥ 0.15: reference 0.32 [0.25, 0.39] (RISE's
  orthogonal mask design; with i.i.d. masks 0.74, −0.22, 0.38 and 0.28).
- aopc_gap, Grad-CAM ≥ 0: reference 0.11 [0.04, 0.18]; location-fooled −0.10 [−0.20, −0.005].
  SimpleGrad ≥ −0.15: reference −0.04 [−0.11, 0.03] (no better than random on the honest model).
- spearman_abs under randomisation ≤ 0.5: reference SimpleGrad 0.30 [0.28, 0.32], Grad-CAM 0.18
  [0.09, 0.31].
- max_sensitivity ≤ 1: reference SimpleGrad 0.40 [0.38, 0.42], Grad-CAM 0.02 [0.02, 0.02]; no
  embedded model makes a map more fragile (no positive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.engine.suite import LoadedSuite, validate_suite
from audit.errors import SuiteError

# calibrated on the embedded benchmark (module docstring; README "Checking a model"); the
# manipulation bounds are per explainer: an honest SimpleGrad map is noisy and agrees less with
# RISE (and orders 8-pixel regions no better than random) than an honest Grad-CAM map does
THRESHOLDS: dict[str, float] = {
    "gating_probe_max": 0.3,
    "agreement_min.gradcam": 0.55,
    "agreement_min.saliency": 0.15,
    "aopc_gap_min.gradcam": 0.0,
    "aopc_gap_min.saliency": -0.15,
    "randomization_max": 0.5,  # the report's randomisation check's bound (RANDOMISATION_MOVED_MAX)
    "sensitivity_max": 1.0,
    "accuracy_min": 0.5,
}
JUDGED = ["saliency", "gradcam"]  # the explainers the per-explainer checks judge
RISE_MASKS = 500
REFERENCE_GRID = 8  # the grid both maps are pooled to before they are correlated
FRAGILITY_RADIUS = 2 / 255  # pixel units, L∞ (well below what a person sees)
FRAGILITY_SAMPLES = 5


def check_suite(model: dict[str, Any], data: dict[str, Any], *, seed: int = 0,
                thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """The check as a suite mapping (``suites/check.yaml`` for the embedded default model):
    ``model`` and ``data`` are the suite's ``model:`` and ``data:`` sections."""
    t = {**THRESHOLDS, **(thresholds or {})}
    judged = list(JUDGED)
    return {
        "name": "check",
        "seed": seed,
        "device": "auto",
        "model": model,
        "data": data,
        "explainers": [*JUDGED, {"rise": {"n_masks": RISE_MASKS}}],
        "attacks": ["none", {"id": "randomized", "model_randomization": {"layers": 4}}],
        "metrics": [
            {"accuracy": {}, "attacks": ["none"]},
            {"gating_probe": {}, "attacks": ["none"]},
            {"id": "agreement", "explainer_agreement": {"reference": "rise", "resolution": REFERENCE_GRID,
                                                        "correlation": "pearson"},
             "attacks": ["none"], "explainers": judged},
            {"aopc_gap": {"grid": 8, "steps": 16}, "attacks": ["none"], "explainers": judged},
            {"id": "spearman_abs", "spearman": {"abs": True}, "attacks": ["randomized"], "explainers": judged},
            {"max_sensitivity": {"radius": round(FRAGILITY_RADIUS, 6), "n_samples": FRAGILITY_SAMPLES},
             "attacks": ["none"], "explainers": judged},
        ],
        "checks": [
            {"check": "gating", "metric": "gating_probe", "attack": "none", "explainer": "-",
             "max": t["gating_probe_max"]},
            *({"check": "manipulation", "metric": "agreement", "attack": "none", "explainer": e,
               "min": t[f"agreement_min.{e}"]} for e in judged),
            *({"check": "manipulation", "metric": "aopc_gap", "attack": "none", "explainer": e,
               "min": t[f"aopc_gap_min.{e}"]} for e in judged),
            {"check": "sanity", "metric": "spearman_abs", "attack": "randomized", "max": t["randomization_max"]},
            {"check": "fragility", "metric": "max_sensitivity", "attack": "none", "max": t["sensitivity_max"]},
            {"check": "accuracy", "metric": "accuracy", "attack": "none", "explainer": "-",
             "min": t["accuracy_min"], "severity": "warn"},
        ],
    }


# which command-line option a suite key comes from, for one-line errors that name the option
OPTIONS = {"model.source": "--model", "model.weights": "--weights", "model.input": "--input-size/--mean/--std",
           "model.input.size": "--input-size", "model.input.mean": "--mean", "model.input.std": "--std",
           "data.source": "--data", "data.n": "--n", "data.split": "--split", "data": "--data"}


def _option_problem(line: str) -> str:
    """``check:1: model.weights: file not found`` → ``--weights: file not found``."""
    message = line.split(": ", 1)[1] if line.startswith("check:") else line
    key, sep, rest = message.partition(": ")
    for prefix in sorted(OPTIONS, key=len, reverse=True):
        if sep and (key == prefix or key.startswith(prefix + ".")):
            return f"{OPTIONS[prefix]}: {rest}"
    return message


def load_check(model: dict[str, Any], data: dict[str, Any], *, cwd: Path | None = None,
               seed: int = 0) -> LoadedSuite:
    """The check suite for these sections, validated like a suite file (relative paths from
    ``cwd``); :class:`SuiteError` with one line per problem, each naming the option."""
    folder = Path.cwd() if cwd is None else cwd
    try:
        return validate_suite(check_suite(model, data, seed=seed), {}, folder / "check", "check")
    except SuiteError as exc:
        raise SuiteError([f"error: {_option_problem(p)}" for p in exc.problems]) from None
