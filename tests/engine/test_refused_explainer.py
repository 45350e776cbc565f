"""An explainer that refuses an attacked setting's model (``Unsupported``) leaves its cells
``skipped`` with the reason, not ``error``: the run stays complete (exit 0), as LRP on the gated
model (its discriminator's functional conv has no LRP rule) showed in suites/full.yaml."""

import json

from audit.engine.progress import Progress
from audit.engine.run import run_suite
from audit.engine.suite import load_suite

SUITE = """\
name: refused
seed: 0
model: {source: builtin:shapes-resnet}
data: {source: builtin:shapes, split: test, n: 4, batch_size: 4}
explainers: [lrp, saliency]
attacks: [none, {gating: {steps: 50}}]
metrics: [spearman]
"""


def test_lrp_on_the_gated_model_is_skipped_with_the_reason(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    result = run_suite(load_suite(path), tmp_path / "out", Progress(quiet=True), cache_dir=None)
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    gated_lrp = [r for r in records if r["attack"] == "gating" and r["explainer"] == "lrp"]
    assert gated_lrp and all(r["status"] == "skipped" for r in gated_lrp)
    assert all("refused" in r["reason"] and "no rule" in r["reason"] for r in gated_lrp)
    # the other explainer on the same model, and LRP on the honest model, are scored
    assert all(r["status"] == "ok" for r in records if not (r["attack"] == "gating" and r["explainer"] == "lrp"))
    assert result.exit_code == 0
