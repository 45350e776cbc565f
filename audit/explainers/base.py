"""The explainer interface: a batch of normalised images in, a batch of (B, H, W) maps out."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import ValidationError
from torch import nn

from audit.registry import Plugin, Registry
from audit.seeding import generator
from audit.spec import InputSpec

if TYPE_CHECKING:
    from audit.data.training import TrainingContext


@dataclass(frozen=True)
class ExplainContext:
    """What an explainer may use besides the model and the images.

    ``seed`` derives from the suite seed and the explainer's id only, so the original and the
    attacked model of one cell are explained with the same random numbers (e.g. RISE masks).
    ``sample_ids`` identify the images (dataset indices): per-image randomness such as
    SmoothGrad's noise derives from them, so a batch explains the same as its images one by one.
    ``trained`` is, for an explainer that trains (``needs_training_data``), what its
    :meth:`Explainer.train` returned for the very model being explained (the engine trains it
    once per model, caches it and ships it to workers); None for the others.
    """

    spec: InputSpec
    seed: int = 0
    sample_ids: tuple[int, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    trained: dict[str, torch.Tensor] | None = None

    def sample_generator(self, position: int, *identity: object) -> torch.Generator:
        """A generator for the image at ``position`` in the batch, independent of the batch."""
        sample = self.sample_ids[position] if self.sample_ids else position
        return generator(self.seed, "sample", sample, *identity)

    def subset(self, positions: slice) -> ExplainContext:
        ids = tuple(self.sample_ids[positions]) if self.sample_ids else ()
        return ExplainContext(self.spec, self.seed, ids, self.device, self.trained)


class Unsupported(ValueError):
    """The explainer cannot explain this model correctly (e.g. LRP meets an operation it has no rule
    for): a refusal, not a failure. The engine records the cells ``skipped`` with this reason."""


def check_attackable(name: str, params: dict, key: str) -> None:
    """``ValueError`` (one line, naming ``key``) unless explainer ``name`` with ``params`` is valid and
    has a differentiable map equal to the map it scores: what an attack that puts the map in its
    loss (manipulation, targeted_map, fragility) needs, so the map attacked is the map audited."""
    plugin = EXPLAINERS.get(name)
    try:
        plugin.Params.model_validate(params)
    except ValidationError as exc:  # the first problem, with its key (the message's last line is a URL)
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        what = ("unknown parameter" if error["type"] == "extra_forbidden"
                else error["msg"].removeprefix("Value error, "))
        raise ValueError(f"{key} are not valid {name} parameters: {f'{where}: ' if where else ''}{what}") from None
    if (reason := plugin.not_differentiable(dict(params))) is not None:
        raise ValueError(reason)


class Explainer(Plugin):
    """Base class. Subclasses implement :meth:`explain` and declare their capabilities."""

    needs_gradients: ClassVar[bool] = True  # calls backward on the model
    black_box: ClassVar[bool] = False  # uses only the model's outputs
    differentiable: ClassVar[bool] = False  # supports create_graph=True (map inside a loss)
    signed: ClassVar[bool] = False  # map keeps the attribution's sign (channels summed)
    # hooks on the model's modules (Grad-CAM's layer, LRP's rules): TorchScript runs none, so a
    # torchscript: model is refused at validate (gradients themselves flow through TorchScript)
    needs_module_hooks: ClassVar[bool] = False

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"needs_gradients": cls.needs_gradients, "black_box": cls.black_box,
                "differentiable": cls.differentiable, "signed": cls.signed,
                "needs_module_hooks": cls.needs_module_hooks, "needs_training_data": cls.needs_training_data}

    def check_model(self, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        """Checked once before a run, on the model in eval mode and a real batch ``x`` (B, C, H, W).

        Raises ``ValueError`` (one line: the problem and the fix) where this explainer cannot
        explain the model correctly, so the run stops with exit 2 before any map exists; returns
        what it decided about the model (e.g. Grad-CAM's layer) for manifest.json and the report.
        """
        return {}

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        """Maps (B, H, W) float for images ``x`` (B, C, H, W) and classes ``target`` (B,)."""
        raise NotImplementedError

    def train(self, model: nn.Module, ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """For explainers with ``needs_training_data``: learn what explaining ``model`` needs from
        the seeded training batches of ``ctx`` (never the audited images) and return it as
        tensors. The engine calls it once per explained model (the original and every attacked
        model), caches the result under the explainer's parameters, the model, the training
        data's digest and the code, ships it to workers, and hands it back in
        ``ExplainContext.trained``. ``model`` must not be modified."""
        raise NotImplementedError(f"explainer {self.name!r} does not train")

    def state_summary(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """What manifest.json records about a trained state (JSON values, e.g. the training
        curve); empty by default."""
        return {}

    def map_problems(self, maps: torch.Tensor) -> list[str | None]:
        """Per image of ``maps`` (B, H, W), why the map must not be scored, or None.

        A check the method's own theory provides (e.g. LRP's relevance conservation). The engine
        refuses to score a flagged image (status ``skipped`` with this reason) in every metric
        that reads the map. A pure function of the maps, so a cached map gets the same verdict.
        """
        return [None] * int(maps.shape[0])

    @classmethod
    def not_differentiable(cls, params: dict) -> str | None:
        """Why this explainer with ``params`` has no :meth:`differentiable_map` that equals its
        scored map (an attack would attack another map than the audit scores), or None."""
        return None if cls.differentiable else f"explainer {cls.name!r} has no differentiable map"

    def differentiable_map(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           create_graph: bool = True) -> torch.Tensor:
        """Maps (B, H, W) that keep their autograd graph to ``model``'s parameters (and ``x``).

        Only explainers with ``differentiable = True`` implement it (issue F puts maps in a loss).
        """
        raise NotImplementedError(f"explainer {self.name!r} has no differentiable path")

    def __call__(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 ctx: ExplainContext) -> torch.Tensor:
        maps = self.explain(model, x, target, ctx)
        expected = (x.shape[0], x.shape[-2], x.shape[-1])
        if tuple(maps.shape) != expected:
            raise RuntimeError(f"explainer {self.name!r} returned shape {tuple(maps.shape)}, "
                               f"expected {expected}")
        return maps.detach().float()


def without_inplace(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose in-place activations are not in place.

    torchvision's ``ReLU(inplace=True)`` breaks backward hooks and double backprop (METHODS §2);
    the user's model is never changed. A TorchScript model is returned as it is: its in-place
    flags are compiled constants, and plain gradients flow through it correctly (hooks, which
    need the flags off, do not run in it at all; hook-based explainers refuse it).
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    clone = copy.deepcopy(model)
    scripted = [m for m in clone.modules() if isinstance(m, torch.jit.ScriptModule)]
    inside = {id(sub) for m in scripted for sub in m.modules()}
    for module in clone.modules():
        if id(module) not in inside and hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False
    return clone


EXPLAINERS: Registry[Explainer] = Registry("explainer", Explainer, "audit.explainers")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every submodule's own mode is restored afterwards.

    Restoring per module (not ``model.train(was_training)``) keeps e.g. BatchNorm layers a caller
    froze in eval mode inside a training model frozen.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
