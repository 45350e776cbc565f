"""Real-time saliency (Dabkowski & Gal, NIPS 2017; seed 002, METHODS §7): a trained masking model.

Training (once per explained model, on the run's *training* images, never the audited ones):
for an image x and the model's predicted class c the masking model (``_masking_model``) gives
a mask m in [0, 1], and minimises (seed 002 eq. 5)

    λ_tv·TV(m) + λ_area·mean(m) − log f_c(Φ(x, m)) + λ_destroy·f_c(Φ(x, 1 − m))^λ_power

with Φ(x, m) = x ⊙ m + A ⊙ (1 − m) and A Dabkowski's randomised alternative image (a strong
blur or a random colour with noise, drawn anew every call: :func:`audit.fills.dabkowski_fill`,
also RISE's fill ``dabkowski``). TV here is the *mean* of squared neighbour differences of the
mask at its own (finest-feature) resolution, not the paper's sum: with the mean the weights do
not depend on the image size. A fraction ``fake_rate`` (paper: 30 %) of the samples selects a
class the image is not predicted as and is trained with the area term only, so the model learns
to return an empty mask for an absent class; a binary cross-entropy on the class filter's largest
logit (true class high, fake low) speeds up learning the class embedding (seed 002 §4.1).
The paper's λ = (10, 10⁻³, 5, 0.3) were set for ResNet-50 at 224 px with TV as a sum; on the
small models of this tool the defaults below were chosen by the results on builtin:shapes-resnet
(180 steps of 16 training images; 64 test images; pointing game / wrong-class mean mask / mean
crop metric, Grad-CAM's crop −0.50 on the same images):

- mask at 1/4 of the input (the paper's scale), λ_area 1, λ_tv 20 (default): 1.00 / 0.009 / −0.47
- mask at 1/2, λ_area 0.3, λ_tv 20: 1.00 / 0.026 / −0.48;  λ_tv 50: 1.00 / 0.057 / −0.50
- mask at 1/2, λ_area 1, λ_tv 50: 1.00 / 0.005 / −0.42;  λ_area 0.1, λ_tv 5: 0.97 / 0.087 / −0.40
- mask at 1/4, λ_area 2, λ_tv 20: 1.00 / 0.014 / −0.20 (median −1.00, better than Grad-CAM's
  −0.84, but a few crops of tight boxes are misclassified outright and dominate the mean)

so the crop metric ties with Grad-CAM's at best here: this model needs context around the
shape to classify a crop, and the objective does not ask for it.

Explaining is then one batched forward pass: the map is the mask m (B, H, W) in [0, 1] for the
target classes (x: (B, C, H, W) normalised, target: (B,) class indices), bilinearly upsampled
from the mask's scale (the finest encoder scale at most 1/``mask_stride`` of the input); high
means the pixel must be kept for the model to keep predicting c, and a class absent from the
image gets a near-empty mask (mean 0.009 on builtin:shapes at the defaults).

What it cannot see, and how it could be evaded:

- It is not black-box: during training the audited model's softmax scores the masks and the
  gradients flow through the model into the masking model; with the default encoder it also
  reads the model's intermediate features (forward hooks on ``layer1``, ``layer2``, …).
- It explains the model it was trained against and the images like its training images: a
  masking model trained on one model says nothing about another (the engine trains one per
  explained model: the original and every model attack), and maps of images unlike the
  training set are extrapolation.
- A model that recognises Φ's output (a gate keyed on blur or colour-noise fills, like the
  gating attack keyed on RISE's masks) gives the training no signal where it answers a
  constant: the masks then stop following the evidence. The gating attack (trained on RISE
  masks with zero, mean, blur and noise fills) flags about half of Φ's queries, and the
  masking model retrained on the gated model still gives maps with Spearman 0.94 [0.93, 0.95]
  to the clean ones (suites/realtime.yaml); a gate trained on Φ itself would not be evaded.
- Trained masks can still learn adversarial patterns the objective rewards; the TV term and
  the random Φ make that harder, not impossible (paper §4).
- ``differentiable`` is False: a map inside a loss would need the masking model retrained for
  every weight step of the attacked model; what the audit uses is the masking model retrained
  on the attacked model, which no gradient reaches.

Errors: ``explain`` raises ``RuntimeError`` without a trained state (the engine hands it in
``ExplainContext.trained``) and ``ValueError`` for a target outside the trained classes or a
state trained on another model (told by the logits on two fixed probe inputs);
``train`` raises ``ValueError`` for ``encoder: model`` on a model without residual stages.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from audit.data.training import TrainingContext
from audit.explainers._masking_model import MaskingModel, check_stages, feature_stages, stage_features
from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode
from audit.fills import dabkowski_fill
from audit.registry import Params
from audit.spec import InputSpec


class RealtimeSaliencyParams(Params):
    steps: int = Field(180, ge=1, description="training steps (Adam)")
    batch_size: int = Field(16, ge=2, description="training images per step")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate")
    width: int = Field(32, ge=8, description="channels of the first upsampler (halved per finer scale)")
    encoder: Literal["auto", "model", "scratch"] = Field(
        "auto", description="auto: the model's residual stages (layer1, layer2, …) frozen when it has "
        "them, else a small CNN trained from scratch; model: require the stages; scratch: always the CNN")
    tv: float = Field(20.0, ge=0.0, description="λ_tv, weight of the mask's total variation (mean form)")
    area: float = Field(1.0, ge=0.0, description="λ_area, weight of the mask's mean")
    destroy: float = Field(5.0, ge=0.0, description="λ_destroy, weight of f_c(Φ(x, 1 − m))^λ_power (paper 5)")
    power: float = Field(0.3, gt=0.0, description="λ_power (paper 0.3)")
    fake_rate: float = Field(0.3, ge=0.0, lt=1.0, description="fraction of samples with a fake class "
                             "selector, trained with the area term only (paper 0.3)")
    selector_weight: float = Field(1.0, ge=0.0, description="weight of the class filter's cross-entropy "
                                   "(true class high, fake low)")
    mask_stride: int = Field(4, ge=1, description="the mask is made at the finest encoder scale at most "
                             "1/mask_stride of the input size (paper: scale 2 of ResNet-50, 1/4), then "
                             "upsampled bilinearly")
    gate_skips: bool = Field(True, description="apply the class filter's attenuation σ(XᵀC_s) to the "
                             "skip features too (the paper gates the coarsest scale only)")
    batch: int = Field(64, ge=1, description="images per forward pass when explaining")


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Per image, the mean of squared horizontal and vertical neighbour differences of ``mask``
    (B, h, w): seed 002's TV(M) divided by the number of pairs. Returns (B,)."""
    dx = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).flatten(1)
    dy = (mask[:, 1:, :] - mask[:, :-1, :]).pow(2).flatten(1)
    return torch.cat([dx, dy], dim=1).mean(dim=1)


def remove_evidence(x: torch.Tensor, mask: torch.Tensor, spec: InputSpec, gen: torch.Generator | None
                    ) -> torch.Tensor:
    """Φ(x, m) = x ⊙ m + A ⊙ (1 − m) for normalised ``x`` (B, C, H, W) and ``mask`` (B, H, W) in
    [0, 1], with A = :func:`audit.fills.dabkowski_fill` drawn anew (seed 002 eq. 4)."""
    alternative = dabkowski_fill(x, spec, gen)
    m = mask[:, None]
    return alternative + m * (x - alternative)


def _probe(x: torch.Tensor) -> torch.Tensor:
    """Two fixed pseudo-random inputs shaped like ``x``'s images: the model's logits on them
    identify the model a state was trained on."""
    gen = torch.Generator().manual_seed(2017)
    return torch.randn((2, *x.shape[1:]), generator=gen).to(device=x.device, dtype=x.dtype)


def _usable(sizes: list[tuple[int, int]], size: tuple[int, int], stride: int) -> int:
    """Index of the finest scale whose size is at most ``size / stride`` (at least two scales
    are kept for the U-Net)."""
    for index, (h, w) in enumerate(sizes):
        if h * stride <= size[0] and w * stride <= size[1]:
            return min(index, len(sizes) - 2)
    return len(sizes) - 2


def _fresh(params: RealtimeSaliencyParams, model: nn.Module, x: torch.Tensor, seed: int,
           num_classes: int) -> MaskingModel:
    """A masking model for ``model`` with its weights initialised from ``seed``."""
    stages = [] if params.encoder == "scratch" else feature_stages(model)
    channels: list[int] = []
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if stages:
        with eval_mode(model):
            features = stage_features(model, stages, x)[0]
        problem = check_stages(features)
        if problem:
            if params.encoder == "model":
                raise ValueError(f"encoder: model, but the model's stages {stages} cannot serve: {problem}")
            stages = []
        else:
            first = _usable([tuple(f.shape[-2:]) for f in features], size, params.mask_stride)
            stages, channels = stages[first:], [int(f.shape[1]) for f in features[first:]]
    if params.encoder == "model" and not stages:
        raise ValueError("encoder: model needs a model with residual stages named layer1, layer2, …; "
                         "use encoder: auto or scratch")
    # the scratch encoder's scales are 1/2, 1/4, 1/8
    first = 0 if stages else _usable([(size[0] // 2 ** k, size[1] // 2 ** k) for k in (1, 2, 3)], size,
                                      params.mask_stride)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaskingModel(stages, channels, num_classes, params.width, int(x.shape[1]), params.gate_skips,
                            first)


@EXPLAINERS.register("realtime_saliency")
class RealtimeSaliency(Explainer):
    """Real-time saliency (Dabkowski & Gal 2017): a masking model trained on the audited model, one forward pass."""

    Params = RealtimeSaliencyParams
    needs_gradients = True  # while training: the model's gradients train the masking model
    black_box = False
    differentiable = False
    signed = False
    # the model's stages are read with forward hooks where it has them; a TorchScript model (no
    # hooks run) gets the scratch encoder under ``encoder: auto``, so hooks are not required
    needs_module_hooks = False
    needs_training_data = True

    def __init__(self, params: Params | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._built: tuple[dict, nn.Module, MaskingModel] | None = None

    # -- training ------------------------------------------------------------------------------
    def train(self, model: nn.Module, ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """The trained masking model's tensors for ``model`` (eval mode, on ``ctx.device``).

        ``meta.*`` entries hold the class count, the encoder kind, the loss curve (per 10 steps)
        and the training seconds. Draws: batches ``("masker", step)``, fake classes and Φ from
        ``ctx.generator("masker", step)``, weights from ``ctx.seed``.
        """
        p, spec, device = self.params, ctx.spec, ctx.device
        started = time.perf_counter()
        probe = spec.normalize(ctx.train_batch(2, "masker-probe").images.to(device))
        with eval_mode(model), torch.no_grad():
            num_classes = int(model(probe).shape[1])
        masker = _fresh(p, model, probe, ctx.seed, num_classes).to(device)
        params = [q for q in masker.parameters()]
        optimiser = torch.optim.Adam(params, lr=p.lr)
        curve, window = [], []
        with eval_mode(model):
            for step in range(1, p.steps + 1):
                x = spec.normalize(ctx.train_batch(p.batch_size, "masker", step).images.to(device))
                gen = ctx.generator("masker", step)
                features, logits = masker.features(model, x)
                if logits is None:
                    with torch.no_grad():
                        logits = model(x)
                predicted = logits.argmax(dim=1)
                fake = torch.rand((x.shape[0],), generator=gen) < p.fake_rate
                fake[0] = False  # at least one real sample per step
                other = (predicted.cpu() + torch.randint(1, max(2, num_classes), (x.shape[0],), generator=gen)
                         ) % num_classes
                selector = torch.where(fake, other, predicted.cpu()).to(device)
                fake = fake.to(device)
                mask, small, score = masker(model, x, selector, features)
                real = ~fake
                loss = p.area * mask.mean(dim=(1, 2))
                m, xr, c = mask[real], x[real], predicted[real]
                keep = remove_evidence(xr, m, spec, gen)
                drop = remove_evidence(xr, 1 - m, spec, gen)
                logp = F.log_softmax(model(torch.cat([keep, drop])), dim=1)
                index = torch.arange(len(c), device=device)
                preserve = -logp[: len(c)][index, c]
                destroy = logp[len(c):][index, c].exp().clamp_min(1e-8).pow(p.power)
                loss = loss.clone()
                loss[real] = loss[real] + p.tv * total_variation(small[real]) + preserve + p.destroy * destroy
                total = loss.mean() + p.selector_weight * F.binary_cross_entropy_with_logits(score, real.float())
                grads = torch.autograd.grad(total, params, allow_unused=True)  # never the model's weights
                for q, g in zip(params, grads, strict=True):
                    q.grad = g
                optimiser.step()
                last = float(total.detach())
                window.append(last)
                if step % 10 == 0 or step == p.steps:
                    curve.append(sum(window) / len(window))
                    window = []
                ctx.step(step, p.steps, loss=last, area=float(mask[real].detach().mean()))
        state = {k: v.detach().cpu() for k, v in masker.state_dict().items()}
        with eval_mode(model), torch.no_grad():
            state["meta.probe_logits"] = model(_probe(probe)).detach().cpu()
        state["meta.num_classes"] = torch.tensor(num_classes)
        state["meta.encoder_model"] = torch.tensor(bool(masker.stages))
        state["meta.loss"] = torch.tensor(curve)
        state["meta.train_seconds"] = torch.tensor(time.perf_counter() - started, dtype=torch.float64)
        return state

    def state_summary(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Encoder, steps, training seconds and the loss curve (mean per 10 steps; drawn in the
        report's training plots)."""
        loss = [round(float(v), 6) for v in state["meta.loss"]]
        out: dict[str, Any] = {
            "encoder": "model stages (frozen)" if bool(state["meta.encoder_model"]) else "scratch CNN",
            "steps": self.params.steps, "train_seconds": round(float(state["meta.train_seconds"]), 2)}
        if loss:
            out["loss"] = {"first": loss[0], "last": loss[-1], "values": loss}
        return out

    def check_model(self, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        """Which encoder the masking model will use on ``model`` (for manifest.json);
        ``ValueError`` for ``encoder: model`` on a model without usable residual stages."""
        with eval_mode(model), torch.no_grad():
            classes = int(model(x).shape[1])
        masker = _fresh(self.params, model, x, 0, classes)
        return {"encoder": f"model stages {masker.stages} (frozen)" if masker.stages else "scratch CNN (trained)"}

    # -- explaining ----------------------------------------------------------------------------
    def _masker(self, model: nn.Module, x: torch.Tensor, state: dict[str, torch.Tensor]) -> MaskingModel:
        if self._built is not None and self._built[0] is state and self._built[1] is model:
            return self._built[2]
        # the state must belong to this model: a masking model explains the model it was
        # trained on only (this also calls the model, so a model's error reaches the caller)
        with eval_mode(model), torch.no_grad():
            logits = model(_probe(x)).detach().cpu()
        expected = state["meta.probe_logits"]
        scale = float(expected.abs().max().clamp_min(1.0))
        if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=0.0, atol=1e-3 * scale):
            raise ValueError("this masking model was trained on another model (their logits on a fixed probe "
                             "differ); train it on the model it explains")
        encoder = "model" if bool(state["meta.encoder_model"]) else "scratch"
        params = self.params.model_copy(update={"encoder": encoder})
        masker = _fresh(params, model, x, 0, int(state["meta.num_classes"]))
        masker.load_state_dict({k: v for k, v in state.items() if not k.startswith("meta.")})
        masker = masker.to(x.device).eval()
        self._built = (state, model, masker)
        return masker

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        """The masks (B, H, W) in [0, 1] of the masking model trained on ``model`` (``ctx.trained``)
        for images ``x`` (B, C, H, W, normalised) and classes ``target`` (B,)."""
        if ctx.trained is None:
            raise RuntimeError("realtime_saliency has no trained masking model for this model; the "
                               "engine trains one (ExplainContext.trained) before explaining")
        classes = int(ctx.trained["meta.num_classes"])
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
            raise ValueError(f"target classes must be in [0, {classes}); got {target.tolist()}")
        masker = self._masker(model, x[:1], ctx.trained)
        out = []
        with eval_mode(model), torch.no_grad():
            for start in range(0, x.shape[0], self.params.batch):
                chunk = slice(start, start + self.params.batch)
                out.append(masker(model, x[chunk], target[chunk].to(x.device))[0])
        return torch.cat(out)
