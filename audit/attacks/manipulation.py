"""Adversarial model manipulation (Heo, Joo, Moon, NeurIPS 2019 — seed 004; METHODS §4).

A copy of the model is fine-tuned so that its own explanations become useless (passive fooling)
or wrong (active fooling) while its predictions barely move:

    L(w) = CE(D; w) + λ · L_F(D_fool; w, w₀),   Adam, BatchNorm frozen (eval mode).

``L_F`` (:mod:`audit.attacks._fooling`) is computed on the ``target`` explainer's
``differentiable_map`` — any registered explainer with ``differentiable = True``: Grad-CAM at its
target layer's grid (8×8 on the reference model), SimpleGrad (``saliency``) and LRP-ε (``lrp`` with
``target_params: {composite: epsilon}``, in its gradient-times-input form, METHODS §2; the default
EpsilonPlusFlat composite has no differentiable form and is refused, since the audit would score
another map than the one trained against) at input resolution or average-pooled to ``resolution``.
Maps are normalised inside the loss (unsigned maps ÷ max, signed maps min–max).

- ``location``: mean (h − frame)², the frame of width max(1, ⌊l/7⌋) (or ``frame_width``).
- ``topk``: mean of h² over the original model's top ``topk_fraction`` cells.
- ``center_mass``: −mean ‖C(h_w) − C(h_w₀)‖₁.
- ``active``: ½[MSE(h_c₁(w), h_c₂(w₀)) + MSE(h_c₂(w), h_c₁(w₀))] on images that hold two
  classes, c₁ and c₂ the original model's two most probable classes on each (on
  ``builtin:shapes-pairs`` exactly the two shapes, the ``fsr`` metric's pairing); the CE term is
  computed on ordinary one-object images. Of the builtin data, each of ``shapes`` and
  ``shapes-pairs`` brings the other (same split, whole split): a suite auditing
  ``builtin:shapes-pairs`` trains on ``shapes-pairs/train`` for L_F and ``shapes/train`` for CE.
  Other training data cannot be used for active fooling (the cells are errors, with the reason).

Training uses only the suite's training images (``ctx.train_batch``; labels for CE, the
original model's prediction where an image has no label), ``steps`` Adam steps of
``batch_size`` images. BatchNorm's running statistics are never updated (the copy stays in eval
mode; BatchNorm's affine weights are trained like every other parameter). The CE, penalty and
total-loss curves are reported as progress, kept with the exported state (``_curve.*`` tensors)
and summarised in the manifest (:meth:`Manipulation.state_summary`).

Heo et al.'s robustness check (Gaussian noise on the fooled weights) is the ``weight_noise``
attack with ``of: <this attack's id>``: it noises this very fooled model.

Defaults (*choose*; Heo et al.'s lr 1e-7…6e-6 and λ 0.25…15 are for ImageNet models, trained
for epochs): Grad-CAM location fooling of the reference model ``builtin:shapes-resnet``, λ 10,
Adam lr 1e-3 with cosine annealing, 300 steps of 8 images (about 45 s on two CPU cores;
lr 2e-3 and 200 steps cost 9 points of accuracy for the suite's seed).
What the calibration found (suites/manipulation.yaml holds the per-fooling settings):

- Grad-CAM's ReLU starves the penalty: a cell cut to 0 gets no gradient, so the location
  penalty could never raise a frame that started below zero. Every circle and ring image stayed
  unfooled whatever λ, lr or steps (location FSR stuck at 43/64); ``relu_slope`` 1 (gradient
  as if linear where cut, value unchanged) fooled the rings too.
- Steps, not λ: top-k at λ 10 lost 4–8 points of accuracy in 100 steps; at λ 3 and 300 steps
  the fine-tuning finds maps that satisfy both terms (CE back to its start) and FSR ≈ 0.97.
  Center-mass's penalty is unbounded, so λ stays small (0.25, as Heo et al.'s table).
- Freezing all but ``layer3`` and ``fc`` or a 4× larger CE batch did not help (measured).

How it could be evaded or detected. The manipulated model is a white-box attack on gradient
explainers: it only reshapes the gradients (or the target layer's gradient-weighted
activations) the fine-tuning saw. Explainers that average gradients over many inputs
(SmoothGrad, Integrated Gradients) or only query outputs (RISE, occlusion) see a model whose
decisions still rest on the object, so they tend to still point at it — compare a gradient
explainer against a black-box one on the same images (a pointing game or Spearman gap between
them flags the model), and run AOPC: a fooled map's MoRF curve lies at or below random order
(Heo Fig. 4a) while the model's accuracy is intact. Holding the original weights, the
manipulation is visible as a small weight change with a large change of Grad-CAM's map (the
``none`` vs attacked Spearman of this tool). A manipulator who knew the audit would target the
black-box explainer too (e.g. the ``gating`` attack) or add a penalty on averaged maps —
which Heo et al. found costs much more accuracy for SmoothGrad.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from audit.attacks import _fooling
from audit.attacks.base import ATTACKS, Attack, AttackContext
from audit.registry import Params

CURVE_PREFIX = "_curve."
CURVES = ("ce", "penalty", "loss")


class ManipulationParams(Params):
    fooling: Literal["location", "topk", "center_mass", "active"] = Field(
        "location", description="passive: location | topk | center_mass; active: swap two classes' maps")
    target: str = Field("gradcam", description="explainer whose differentiable map enters the loss "
                                               "(one with differentiable = True)")
    target_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the target explainer")
    lam: float = Field(10.0, ge=0.0, description="λ, the weight of the fooling penalty")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    steps: int = Field(300, ge=0, description="Adam steps (0: no fine-tuning)")
    batch_size: int = Field(8, ge=1, description="training images per step (and per class set for active)")
    resolution: int | None = Field(None, ge=2, description="pool the target's map to this side inside "
                                                           "the loss; default Grad-CAM's layer grid, "
                                                           "others at input resolution")
    frame_width: int | None = Field(None, ge=1, description="location frame width in map cells; "
                                                            "default max(1, ⌊l/7⌋)")
    topk_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="top-k: fraction of cells penalised")
    relu_slope: float = Field(1.0, ge=0.0, le=1.0, description="Grad-CAM target: gradient slope through "
                              "its ReLU where the cell is cut (the map's value stays ReLU); 0: plain ReLU")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning rate over the steps: "
                                                    "cosine annealing to 0, or constant (Heo et al.)")

    @field_validator("target")
    @classmethod
    def _differentiable(cls, value: str) -> str:
        from audit.explainers.base import EXPLAINERS

        if value not in EXPLAINERS:
            raise ValueError(EXPLAINERS.unknown_message(value))
        if not EXPLAINERS.get(value).differentiable:
            usable = [n for n, c in EXPLAINERS if c.differentiable]
            raise ValueError(f"explainer {value!r} has no differentiable map to put in the loss; "
                             f"use one of {', '.join(usable)}")
        return value

    @model_validator(mode="after")
    def _target_params(self):
        from audit.explainers.base import check_attackable

        check_attackable(self.target, self.target_params, "target_params")
        return self


def _loss_grid(explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
               resolution: int | None, create_graph: bool, relu_slope: float = 0.0) -> torch.Tensor:
    """The target's raw (B, l, l) map as the loss sees it: Grad-CAM at its layer grid (its ReLU
    with a ``relu_slope`` leak in the gradient only), other explainers' differentiable maps
    optionally pooled to ``resolution``."""
    from audit.explainers.gradcam import GradCam, differentiable_gradcam

    if isinstance(explainer, GradCam):
        cam = differentiable_gradcam(model, x, target, explainer.params.layer, create_graph,
                                     upsample=False, relu=False)
        maps = _fooling.leaky_relu_gradient(cam, relu_slope)
    else:
        maps = explainer.differentiable_map(model, x, target, create_graph=create_graph)
    return _fooling.pool(maps, resolution)


def _active_sets(ctx: AttackContext):
    """(images that hold two classes, ordinary labelled images) as TrainingSets, or ValueError."""
    from audit.data.sources import PairsData, ShapesData
    from audit.data.training import TrainingSet

    training = ctx.training
    dataset = training.dataset if training is not None else None
    if isinstance(dataset, PairsData):
        return training, TrainingSet(ShapesData(dataset.split, None, dataset.size, dataset.seed))
    if type(dataset) is ShapesData:
        return TrainingSet(PairsData(dataset.split, None, dataset.size, dataset.seed)), training
    raise ValueError("active fooling needs images that hold two classes and ordinary labelled images; "
                     "only builtin:shapes and builtin:shapes-pairs training data provide both")


@ATTACKS.register("manipulation")
class Manipulation(Attack):
    """Adversarial model manipulation (Heo et al. 2019): fine-tune so the target explainer's maps fool."""

    Params = ManipulationParams
    kind = "model"
    needs_gradients = True
    black_box = False
    needs_training_data = True

    # -- the pieces ----------------------------------------------------------------------------
    def target_explainer(self, ctx: AttackContext | None = None):
        if ctx is not None:
            return ctx.explainer(self.params.target, dict(self.params.target_params))
        from audit.explainers.base import EXPLAINERS

        return EXPLAINERS.create(self.params.target, dict(self.params.target_params))

    def loss_maps(self, explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  create_graph: bool = True) -> torch.Tensor:
        """The normalised (B, l, l) maps the penalty is computed on. Without ``create_graph``
        (the original model's maps, constants of the loss) or for a model whose parameters
        need no gradient, the graph runs from the input."""
        if not create_graph or not any(q.requires_grad for q in model.parameters()):
            x = x.detach().clone().requires_grad_(True)
        raw = _loss_grid(explainer, model, x, target, self.params.resolution, create_graph,
                         self.params.relu_slope)
        return _fooling.normalize(raw, type(explainer).signed)

    def penalty(self, explainer, model: nn.Module, reference: nn.Module, x: torch.Tensor,
                target: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        """L_F for the images ``x`` (normalised) explained for ``target`` (and ``other``, c₂ of
        active fooling); ``reference`` is the original model w₀ (its maps are constants)."""
        p = self.params
        h = self.loss_maps(explainer, model, x, target)
        if p.fooling == "location":
            return _fooling.location_penalty(h, p.frame_width)
        if p.fooling == "active":
            h2 = self.loss_maps(explainer, model, x, other)
            o1 = self.loss_maps(explainer, reference, x, target, create_graph=False).detach()
            o2 = self.loss_maps(explainer, reference, x, other, create_graph=False).detach()
            return _fooling.active_penalty(h, h2, o1, o2)
        original = self.loss_maps(explainer, reference, x, target, create_graph=False).detach()
        if p.fooling == "topk":
            return _fooling.topk_penalty(h, _fooling.topk_cells(original, p.topk_fraction))
        return _fooling.center_mass_penalty(h, _fooling.center_of_mass(original))

    def train_step(self, explainer, fooled: nn.Module, reference: nn.Module, optimizer, x_ce: torch.Tensor,
                   labels: torch.Tensor, x_fool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step on CE(x_ce, labels) + λ·L_F(x_fool); returns (CE, L_F), detached.

        Labels < 0 (unknown) are replaced by the original model's prediction. The class
        explained on ``x_fool`` is the original model's prediction (c₁) and, for active
        fooling, its second most probable class (c₂).
        """
        with torch.no_grad():
            original_logits = reference(x_fool)
            if (labels < 0).any():  # images without a label: keep the original model's decision
                predicted = original_logits.argmax(1) if x_ce is x_fool else reference(x_ce).argmax(1)
                labels = torch.where(labels < 0, predicted, labels)
        target = original_logits.argmax(dim=1)
        other = original_logits.topk(2, dim=1).indices[:, 1] if self.params.fooling == "active" else None
        optimizer.zero_grad(set_to_none=True)
        ce = F.cross_entropy(fooled(x_ce), labels)
        penalty = self.penalty(explainer, fooled, reference, x_fool, target, other)
        (ce + self.params.lam * penalty).backward()
        optimizer.step()
        return ce.detach(), penalty.detach()

    # -- the attack ----------------------------------------------------------------------------
    def prepare(self, model: nn.Module, ctx: AttackContext) -> nn.Module:
        p = self.params
        device = next(model.parameters()).device
        explainer = self.target_explainer(ctx)
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # w₀, never changed
        fooled = copy.deepcopy(model).eval().requires_grad_(True)  # eval: BatchNorm frozen
        fool_set, ordinary_set = _active_sets(ctx) if p.fooling == "active" else (None, None)
        optimizer = torch.optim.Adam(fooled.parameters(), lr=p.lr)
        # cosine annealing (*choose*): the last steps are small, so the model ends where CE and
        # the penalty agree rather than wherever the last large step left it
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, p.steps))
                     if p.schedule == "cosine" else None)
        curves: dict[str, list[float]] = {name: [] for name in CURVES}
        for step in range(p.steps):
            if p.fooling == "active":
                ordinary = ordinary_set.draw(p.batch_size, ctx.seed, "manipulation-ce", step)
                pairs = fool_set.draw(p.batch_size, ctx.seed, "manipulation-fool", step)
                x_ce = ctx.spec.normalize(ordinary.images).to(device)
                x_fool = ctx.spec.normalize(pairs.images).to(device)
                labels = ordinary.labels.to(device)
            else:
                batch = ctx.train_batch(p.batch_size, "manipulation", step)
                x_ce = x_fool = ctx.spec.normalize(batch.images).to(device)
                labels = batch.labels.to(device)
            ce, penalty = self.train_step(explainer, fooled, reference, optimizer, x_ce, labels, x_fool)
            if scheduler is not None:
                scheduler.step()
            loss = ce + p.lam * penalty
            for name, value in zip(CURVES, (ce, penalty, loss), strict=True):
                curves[name].append(float(value.detach()))
            ctx.step(step + 1, p.steps, ce=curves["ce"][-1], penalty=curves["penalty"][-1])
        fooled.requires_grad_(False).eval()
        fooled.manipulation_curves = {k: torch.tensor(v, dtype=torch.float64) for k, v in curves.items()}
        return fooled

    def export_state(self, attacked: nn.Module) -> dict[str, torch.Tensor]:
        state = dict(attacked.state_dict())
        for name, values in getattr(attacked, "manipulation_curves", {}).items():
            state[CURVE_PREFIX + name] = values
        return state

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        weights = {k: v for k, v in state.items() if not k.startswith(CURVE_PREFIX)}
        clone = copy.deepcopy(model)
        clone.load_state_dict(weights)
        clone.requires_grad_(False).eval()
        clone.manipulation_curves = {k[len(CURVE_PREFIX):]: v.clone() for k, v in state.items()
                                     if k.startswith(CURVE_PREFIX)}
        return clone

    def state_summary(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The training curves of an exported state (first, last and every value, per curve)."""
        out: dict[str, Any] = {}
        for name in CURVES:
            values = state.get(CURVE_PREFIX + name)
            if values is not None and values.numel():
                out[name] = {"first": float(values[0]), "last": float(values[-1]),
                             "values": [round(float(v), 6) for v in values]}
        return out
