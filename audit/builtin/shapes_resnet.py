"""``builtin:shapes-resnet``: the small residual CNN the embedded default audits.

Stem conv + three torchvision ``BasicBlock`` stages (64 -> 32 -> 16 -> 8 pixels), global average
pooling and a linear classifier. The last conv block (``layer3``) is Grad-CAM's target layer.
Its trained weights ship inside the package; ``explain-audit train-reference`` rebuilds them.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from audit.builtin import shapes
from audit.spec import InputSpec

WEIGHTS_FILE = "shapes_resnet.pt"
INPUT_SPEC = InputSpec(size=shapes.IMAGE_SIZE, mean=shapes.MEAN, std=shapes.STD)


def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_ch))
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample))


class ShapesResNet(nn.Module):
    def __init__(self, num_classes: int = len(shapes.CLASSES), width: int = 24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = _stage(width, width, stride=2)
        self.layer2 = _stage(width, 2 * width, stride=2)
        self.layer3 = _stage(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def weights_path():
    return resources.files("audit.builtin.weights").joinpath(WEIGHTS_FILE)


def load_reference(pretrained: bool = True) -> ShapesResNet:
    """The reference model in eval mode, with the shipped weights unless ``pretrained=False``."""
    model = ShapesResNet()
    if pretrained:
        with resources.as_file(weights_path()) as path:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()
