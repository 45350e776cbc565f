"""The report's pictures (audit.engine.samples) show what the cells scored, computed once."""

from __future__ import annotations

import json

import numpy as np
import torch

from audit.engine.run import run_suite
from audit.engine.suite import load_suite
from audit.explainers.base import EXPLAINERS

SUITE = """\
name: pictures
seed: 0
device: cpu
model:
  source: builtin:shapes-resnet
data:
  source: builtin:shapes
  split: test
  n: 8
  batch_size: 8
explainers: [saliency]
attacks: [none, {fgsm: {eps: 0.03}}]
metrics: [spearman, accuracy]
"""


def test_pictures_are_the_cells_maps_and_inputs_not_a_second_computation(tmp_path, monkeypatch):
    cls = EXPLAINERS.get("saliency")
    original = cls.__call__
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def recording(self, model, x, target, ctx):
        maps = original(self, model, x, target, ctx)
        calls.append((len(ctx.sample_ids), x.detach().clone(), maps.detach().clone()))
        return maps

    monkeypatch.setattr(cls, "__call__", recording)
    (tmp_path / "suite.yaml").write_text(SUITE)
    run_suite(load_suite(tmp_path / "suite.yaml"), tmp_path / "out", cache_dir=None)

    # the cells explain the batch twice (clean, fgsm); the pictures add no call of their own
    assert [n for n, _, _ in calls] == [8, 8]
    with np.load(tmp_path / "out" / "samples.npz", allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    index = json.loads(str(arrays.pop("index")))
    maps = {e["attack"]: arrays[e["array"]].astype(np.float32) * e["scale"]
            for e in index if e["kind"] == "map" and e["explainer"] == "saliency"}
    attacked_input = next(arrays[e["array"]] for e in index if e["kind"] == "input" and e["attack"] == "fgsm")
    clean_call, fgsm_call = calls
    for attack, (_, _, cell_maps) in ((None, clean_call), ("fgsm", fgsm_call)):
        pictured = maps[attack]
        reference = cell_maps[:pictured.shape[0]].numpy()
        # stored as float16 of map / max|map|: equal to that rounding
        assert np.allclose(pictured, reference, atol=2e-3 * np.abs(reference).max()), attack
    assert attacked_input.shape[0] == 4  # the fgsm images pictured are the ones the cell explained
    spec_mean, spec_std = 0.5, 0.25  # builtin:shapes-resnet's normalisation
    pixels = (fgsm_call[1][:4] * spec_std + spec_mean).clamp(0, 1).mul(255).round().numpy()
    assert np.array_equal(attacked_input.astype(np.float32), pixels.astype(np.float32))
