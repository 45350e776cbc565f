"""Input invariance (Kindermans et al. 2019): shift the input by a constant, compensate the model.

The attacked setting is the pair (x + c, g) with c = ``shift`` in pixel units, added to every
pixel of every channel, and g a copy of the model whose first layer L is compensated so that
g(x + c) = f(x) for every x: g's first layer computes L(x') − (L(c·1) − L(0)), a fixed
per-output-position offset. The network is functionally the same, so an explainer that is
*input invariant* gives the same map; Kindermans et al. show that e.g. gradient × input,
Integrated Gradients with a zero baseline, LRP and Deep Taylor are not.

Why per position and not a bias change: with zero padding a convolution's border outputs see
padded zeros, not the shifted value, so L(x + c) − L(x) differs at the border from the interior;
subtracting one bias per channel (Kindermans' construction for their unpadded/linear first
layer) leaves errors at the border. The offset map L(c·1) − L(0) is exact for any padding mode,
stride or dilation, for the input size of the suite (other sizes are refused at forward).

Refused (preparation error with the reason): a model whose first called module is not a Conv2d
or Linear, whose first layer does not receive the model's input itself, or whose outputs the
compensation does not preserve within 1e-4 on a seeded probe (e.g. the raw input also reaches a
later layer through a skip). The shifted input is *not* clipped: leaving [0, 1] is the point.

Evasion / detection: nothing to evade — the model is functionally the original. An auditor
detects the shift from the input statistics; the audit uses it to ask whether an explainer
depends on something the model ignores.

Source: Kindermans, Hooker, Adebayo, Alber, Schütt, Dähne, Erhan, Kim, "The (un)reliability of
saliency methods", 2019 (arXiv:1711.00867), §2.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params
from audit.spec import InputSpec

_TOLERANCE = 1e-4  # max |Δlogit| the compensated model may show on the probe


class ConstantShiftParams(Params):
    shift: float = Field(-1.0, description="constant c added to every pixel, pixel units (Kindermans: -1)")


class Compensated(nn.Module):
    """``layer(x) − offset``: the first layer of a model fed x + c, undoing the shift exactly.

    ``offset`` (C_out, …) is ``layer(c) − layer(0)`` for the constant image c of the expected
    input shape ``input_shape`` (C, H, W) or (features,); another shape raises ValueError.
    """

    def __init__(self, layer: nn.Module, offset: torch.Tensor, input_shape: tuple[int, ...]):
        super().__init__()
        self.layer = layer
        self.register_buffer("offset", offset)
        self.input_shape = tuple(int(s) for s in input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the shift-compensated first layer expects inputs {self.input_shape}, got "
                             f"{tuple(x.shape[1:])}")
        return self.layer(x) - self.offset


def first_layer(model: nn.Module, probe: torch.Tensor) -> tuple[str, nn.Module]:
    """The name and module of the first leaf module called, checked to receive ``probe`` itself.

    Raises ValueError when the first layer is not a Conv2d or Linear or is fed something else."""
    seen: list[tuple[str, nn.Module, bool]] = []
    handles = []
    for name, module in model.named_modules():
        if not list(module.children()):
            def hook(mod, args, name=name):
                if not seen:
                    seen.append((name, mod, bool(args) and args[0] is probe))
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError("the model calls no module on its input; constant_shift cannot find a first layer")
    name, module, direct = seen[0]
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"the model's first layer {name!r} is a {type(module).__name__}, not a Conv2d or "
                         "Linear; constant_shift can only compensate an affine first layer")
    if not direct:
        raise ValueError(f"the model's first layer {name!r} does not receive the model's input itself "
                         "(something transforms it first); constant_shift cannot compensate it")
    return name, module


def compensate(model: nn.Module, shift: torch.Tensor, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` whose first layer subtracts the effect of adding ``shift`` (per channel,
    normalised units) to the input of shape ``input_shape`` (C, H, W)."""
    clone = copy.deepcopy(model).eval()
    param = next(clone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    probe = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    name, layer = first_layer(clone, probe)
    shape = (1, -1) + (1,) * (len(input_shape) - 1)
    constant = torch.ones_like(probe) * shift.to(device=device, dtype=dtype).view(shape)
    with torch.no_grad():
        # float64 for the offset: the difference of two near-equal outputs loses no digits
        wide = copy.deepcopy(layer).double()
        offset = (wide(constant.double()) - wide(probe.double()))[0].to(dtype)
    parent_name, _, child = name.rpartition(".")
    parent = clone.get_submodule(parent_name) if parent_name else clone
    setattr(parent, child, Compensated(layer, offset, input_shape))
    return clone


def normalised_shift(spec: InputSpec, shift: float) -> torch.Tensor:
    """The pixel shift c in normalised units per channel: c / std."""
    return torch.tensor([shift / s for s in spec.std], dtype=torch.float64)


@ATTACKS.register("constant_shift")
class ConstantShift(Attack):
    """Kindermans input invariance: x + c (pixels, unclipped) into a model compensated at its first layer."""

    Params = ConstantShiftParams
    kind = "both"
    needs_gradients = False
    black_box = False

    def _input_shape(self, model: nn.Module, spec: InputSpec) -> tuple[int, int, int]:
        return (len(spec.mean), spec.size, spec.size)

    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        shape = self._input_shape(model, ctx.spec)
        shift = normalised_shift(ctx.spec, self.params.shift)
        try:
            clone = compensate(model, shift, shape)
        except ValueError as exc:
            raise ValueError(f"constant_shift refused: {exc}") from None
        self._verify(model, clone, shift, shape, ctx)
        return clone

    @staticmethod
    def _verify(model: nn.Module, clone: nn.Module, shift: torch.Tensor, shape, ctx: AttackContext) -> None:
        """Refuse a compensation that does not preserve the outputs on a seeded probe batch."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        pixels = torch.rand((4, *shape), generator=ctx.generator("constant_shift", "probe"))
        x = ctx.spec.normalize(pixels).to(device)
        moved = x + shift.to(device=device, dtype=x.dtype).view(1, -1, 1, 1)
        with torch.no_grad():
            was = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                error = (clone.eval()(moved) - model(x)).abs().max().item()
            finally:
                for m, training in was:
                    m.training = training
        if not error <= _TOLERANCE:
            raise ValueError(f"constant_shift refused: the compensated model's logits differ by {error:.3g} "
                             f"(> {_TOLERANCE}) from the original's; the raw input probably reaches a later "
                             "layer too, or the first layer is not affine")

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor]:
        comp = next(m for m in attacked.modules() if isinstance(m, Compensated))
        return {"offset": comp.offset, "input_shape": torch.tensor(comp.input_shape),
                "shift": torch.tensor(self.params.shift, dtype=torch.float64)}

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        clone = copy.deepcopy(model).eval()
        shape = tuple(int(s) for s in state["input_shape"].tolist())
        param = next(clone.parameters(), None)
        probe = torch.zeros((1, *shape), device=param.device if param is not None else "cpu",
                            dtype=param.dtype if param is not None else torch.float32)
        name, layer = first_layer(clone, probe)
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, Compensated(layer, state["offset"].to(probe.device), shape))
        return clone

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: AttackContext) -> torch.Tensor:
        shift = normalised_shift(ctx.spec, self.params.shift).to(device=x.device, dtype=x.dtype)
        return x.detach() + shift.view(1, -1, 1, 1)
