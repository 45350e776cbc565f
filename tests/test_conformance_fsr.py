"""FSR under the identity attack: nothing attacked, nothing fooled (issue O, item 4; issue M).

Every fooling type × every registered explainer on the shipped model and data sets, attack
``none``: each image is 0 (not fooled) or ``skipped`` with a reason — and the calibration, not
the declining, does the work: the fooling types that judge the attacked map against the clean
one (top-k, centre of mass) score nearly every image, and location scores most.
"""

from collections import defaultdict

import pytest

from audit.engine.cache import Cache
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.explainers.base import EXPLAINERS
from audit.metrics.fsr import SINGLE_OBJECT_REASON

TYPES = ("location", "topk", "center_mass", "active")
# RISE-type explainers with fewer masks than their defaults, to keep the test lean; fewer masks
# mean noisier maps, the harder case for a statistic calibrated on clean maps
LEAN = {"rise": {"n_masks": 250}, "mc_rise": {"n_masks": 250}, "smoothgrad": {"n_samples": 10}}


def suite_text(data: str, n: int) -> str:
    explainers = [{name: LEAN[name]} if name in LEAN else name for name in EXPLAINERS.names()]
    metrics = [{"fsr": {"fooling": kind}, "id": kind} for kind in TYPES]
    return (f"name: fsr-none\nseed: 0\ndevice: cpu\nmodel: {{source: builtin:shapes-resnet}}\n"
            f"data: {{source: builtin:{data}, n: {n}, batch_size: {n}}}\nexplainers: {explainers}\n"
            f"attacks: [none]\nmetrics: {metrics}\n")


@pytest.mark.slow
@pytest.mark.parametrize("data", ["shapes", "shapes-pairs"])
def test_fsr_under_none_is_zero_or_skipped_for_every_type_and_explainer(tmp_path, data):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(data, 8))
    run = Runner(load_suite(path), Cache(None))
    records = [r for unit in run.units() for r in run.run_unit(unit)]
    cells = defaultdict(list)
    for r in records:
        cells[(r["explainer"], r["metric"])].append(r)
    assert set(cells) == {(e, k) for e in EXPLAINERS.names() for k in TYPES}
    for (explainer, kind), rows in cells.items():
        for r in rows:
            assert r["status"] in ("ok", "degenerate", "skipped"), (explainer, kind, r)
            if r["status"] == "skipped":
                assert r["reason"], (explainer, kind, r)
            else:
                assert r["value"] == 0.0, (explainer, kind, r)
        scored = sum(r["status"] != "skipped" for r in rows)
        if kind in ("topk", "center_mass"):
            assert scored == len(rows), (explainer, kind)
        elif kind == "location":
            assert scored >= len(rows) - 2, (explainer, kind)
        elif data == "shapes":  # active on single-object data: declined, with the reason
            assert all(r["reason"] == SINGLE_OBJECT_REASON for r in rows)
