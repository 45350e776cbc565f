import torch
from torchvision.models.resnet import BasicBlock

from audit.builtin.shapes_resnet import ShapesResNet, load_reference, weights_path
from audit.builtin.train_reference import evaluate


def test_architecture_is_residual_with_batchnorm():
    model = ShapesResNet()
    assert any(isinstance(m, BasicBlock) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 6)


def test_shipped_weights_load_as_plain_tensors():
    with torch.serialization.safe_globals([]):
        state = torch.load(str(weights_path()), map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not load_reference().training


def test_shipped_weights_reach_95_percent_on_the_test_split():
    accuracy = evaluate(load_reference(), "test")  # all 2000 test images
    assert accuracy >= 0.95, accuracy
