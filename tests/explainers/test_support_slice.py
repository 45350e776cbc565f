"""The support matrix's representative slice (benchmarks/support_matrix.py; issue P): every
explainer on each architecture family runs correctly or refuses with a reason — never crashes."""

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
support = importlib.import_module("support_matrix")

SLICE = ["torchvision:resnet18", "torchvision:densenet121", "torchvision:mobilenet_v3_small",
         "torchvision:googlenet", "torchvision:squeezenet1_1", "torchvision:efficientnet_b0",
         "torchvision:regnet_x_400mf", "torchvision:convnext_tiny", "torchvision:swin_t"]
if importlib.util.find_spec("timm") is not None:
    SLICE.append("timm:vit_tiny_patch16_224")
EXPLAINERS = ["gradcam", "lrp", "saliency", "rise"]


@pytest.fixture(scope="module")
def rows():
    return support.matrix(SLICE, EXPLAINERS, log=lambda _line: None)


def test_no_crash_on_the_slice(rows):
    crashes = {(s, e): v for s, row in rows.items() for e, v in row.items() if v.startswith("✗")}
    assert not crashes, crashes


def test_the_outcomes_the_architectures_call_for(rows):
    assert rows["torchvision:squeezenet1_1"]["gradcam"] == "✓"  # its class-map layer, not the pooled 1x1
    assert rows["torchvision:googlenet"]["gradcam"] == "✓"  # inception5b, not the eval-idle aux head
    assert rows["torchvision:densenet121"]["lrp"] == "✓"
    assert rows["torchvision:resnet18"]["lrp"] == "✓"
    assert rows["torchvision:convnext_tiny"]["lrp"].startswith("refused: LRP has no rule for")
    if "timm:vit_tiny_patch16_224" in rows:
        assert rows["timm:vit_tiny_patch16_224"]["gradcam"].startswith("refused: the model's last spatial layer")
    for row in rows.values():  # model-agnostic and plain-gradient explainers run everywhere
        assert row["saliency"] == "✓" and row["rise"] == "✓"
