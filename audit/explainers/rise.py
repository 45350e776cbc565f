"""RISE (Petsiuk et al., BMVC 2018): saliency from randomly masked copies of the image.

Own implementation (METHODS §1). Masks come from :func:`rise_mask_stream` (i.i.d. or in
orthogonal blocks, :mod:`audit.rise_masks`) in chunks of at least ``MASK_CHUNK`` on the model's
device; the masked images go through the model's inference copy (BatchNorm folded,
channels-last) in forward calls of ``batch_size`` images (default: the device's, see
:mod:`audit.models.inference`); each chunk is used for every image of the batch and then
dropped, so at most one chunk of masks is held at a time. The masks are drawn from generators
seeded with ``ctx.seed`` alone: the original and the attacked model of a cell, and every image,
see the same masks (common random numbers), so differences between two maps come from the
models, not from sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from audit.explainers.base import EXPLAINERS, ExplainContext, Explainer, eval_mode
from audit.explainers.rise_cv import ControlVariate
from audit.explainers.rise_logistic import LogisticControlVariate
from audit.fills import RANDOM_FILLS, FillName, fill
from audit.models.inference import forward_chunk, inference_model, model_device
from audit.registry import Params
from audit.rise_masks import OrthogonalMasks, generate_masks, orthogonal_runs
from audit.seeding import derive_seed, generator
from audit.spec import InputSpec


class RiseParams(Params):
    n_masks: int = Field(2000, ge=1, description="number of random masks N")
    grid: int = Field(8, ge=1, description="grid size s (cells per side)")
    p: float = Field(0.5, gt=0.0, le=1.0, description="probability that a cell is kept")
    fill: FillName = Field("zero", description="what occluded pixels become (audit.fills)")
    normalize: Literal["mask_sum", "expectation"] = Field(
        "mask_sum", description="divide by each pixel's total mask weight, or by N p (the paper)")
    batch_size: int | None = Field(None, ge=1, description="masked images per forward pass; default 32 "
                                   "on a CPU, 512 on a GPU")
    # control_variate: plain RISE plus a linear control variate on coarse mask features, which
    # converges with fewer masks to the same limit (audit.explainers.rise_cv); needs mask_sum
    # logistic_control_variate: a logistic surrogate of the score on the same features, its own
    # map estimated from cv_samples x N extra masks without model calls (audit.explainers.rise_logistic)
    estimator: Literal["plain", "control_variate", "logistic_control_variate"] = Field(
        "plain", description="plain RISE, or with a linear or a logistic control variate (fewer "
        "masks, same limit)")
    cv_grid: int = Field(8, ge=1, description="control variates: feature grid (cv_grid^2 features)")
    cv_ridge: float = Field(1e-3, ge=0.0, description="control variates: ridge strength (linear: relative "
                            "to the features' mean variance; logistic: on standardised features)")
    cv_samples: int = Field(16, ge=1, description="logistic control variate: extra masks per mask, "
                            "seen by the surrogate only (no model call)")
    # orthogonal: every mask is still a RISE mask, but blocks of masks are balanced (an orthogonal
    # array of the cells, stratified shifts), so the map converges with fewer masks to the same
    # limit (audit.rise_masks.OrthogonalMasks); it needs p = 1/2, hence 'auto'
    design: Literal["auto", "orthogonal", "iid"] = Field(
        "auto", description="how the N masks depend on each other: orthogonal (balanced blocks, "
        "fewer masks for the same accuracy; p = 0.5 only), iid (the paper's), or auto: "
        "orthogonal when p = 0.5 and normalize is mask_sum, else iid")

    @model_validator(mode="after")
    def _check_combinations(self) -> RiseParams:
        if self.estimator != "plain" and self.normalize != "mask_sum":
            raise ValueError(f"estimator: {self.estimator} works with normalize: mask_sum only")
        if self.design == "orthogonal" and self.p != 0.5:
            raise ValueError(f"design: orthogonal needs p: 0.5 (its cells are balanced fair coins), "
                             f"got p: {self.p}; use design: iid for another p")
        runs = orthogonal_runs(self.grid)
        if self.design == "orthogonal" and self.normalize == "expectation" and self.n_masks % runs:
            # whole blocks make sum_i M_i flat, a partial one does not: the paper's normalisation
            # would show the partial block's density field, and results would jump with N mod runs
            lower, upper = self.n_masks // runs * runs, (self.n_masks // runs + 1) * runs
            near = f"{lower} or {upper}" if lower else f"{upper}"
            raise ValueError(f"design: orthogonal with normalize: expectation needs n_masks a multiple "
                             f"of {runs} (whole blocks), got {self.n_masks}; use n_masks: {near}, "
                             f"or design: iid")
        return self

    @property
    def mask_design(self) -> str:
        """The design in use: ``orthogonal`` or ``iid``; ``auto`` is orthogonal for p = 0.5 with
        ``normalize: mask_sum`` and iid otherwise (the paper's normalisation keeps its masks)."""
        if self.design == "auto":
            return "orthogonal" if self.p == 0.5 and self.normalize == "mask_sum" else "iid"
        return self.design


class MaskedScores:
    """Accumulates sum_i (f_i - r) * W_i per pixel for one batch of images (W: a mask channel).

    Scores are centred on a per-image reference r (the first masked score) before accumulating:
    this removes the cancellation error of large sums, and a model whose outputs are all equal
    gives exactly r everywhere — a constant (degenerate) map rather than rounding noise.
    """

    def __init__(self, batch: int, channels: int, height: int, width: int, device: torch.device):
        self.sums = torch.zeros(batch, channels, height * width, dtype=torch.float64, device=device)
        self.reference: list[torch.Tensor | None] = [None] * batch

    def add(self, image: int, scores: torch.Tensor, weights: torch.Tensor) -> None:
        """``scores`` (m,) for masked images of ``image``; ``weights`` (m, channels, H, W)."""
        if self.reference[image] is None:
            self.reference[image] = scores[0].detach().to(torch.float64)
        centred = scores.to(weights.dtype) - self.reference[image].to(weights.dtype)
        self.sums[image] += torch.einsum("m,mcp->cp", centred, weights.flatten(2)).to(torch.float64)

    def references(self) -> torch.Tensor:
        return torch.stack([r if r is not None else torch.zeros((), dtype=torch.float64,
                                                                device=self.sums.device)
                            for r in self.reference])


def class_probability(model: nn.Module, chunk: int | None = None
                      ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``score(x, c)``: the softmax probability of class ``c`` for each image of ``x``, through
    the model's inference copy in forward calls of ``chunk`` images.

    The metrics' :func:`audit.models.inference.target_probs` would do, but its float64
    log-probabilities and per-image targets cost a few per cent of RISE's time on the reference
    model (RISE's loop calls this once per image and mask chunk), and RISE needs neither.
    """
    fast = inference_model(model)  # resolved once, not on every call of the hot loop

    def score(x: torch.Tensor, target: int) -> torch.Tensor:
        size = x.shape[0] if chunk is None else chunk
        return torch.cat([fast(x[i:i + size]).softmax(dim=1)[:, target] for i in range(0, x.shape[0], size)])
    return score


MASK_CHUNK = 256  # masks made, applied and accumulated at a time (the model sees smaller chunks
# on a CPU): fewer, larger mask operations keep RISE's own cost small next to the forwards


def chunks(device: torch.device, requested: int | None) -> tuple[int, int]:
    """(masks per chunk, images per forward call) for RISE-like explainers on ``device``."""
    forward = forward_chunk(device, requested)
    return max(forward, MASK_CHUNK), forward


MASK_BLOCK = 50  # masks per generator: the masks do not depend on the forward batch size


def mask_stream(n: int, make: Callable[[int, torch.Generator, int], torch.Tensor], seed: int,
                batch_size: int, *identity: object, reuse: bool = False,
                block_size: int = MASK_BLOCK) -> Iterator[torch.Tensor]:
    """``n`` masks from ``make(m, gen, k)`` in chunks of ``batch_size``, identical whatever the size.

    Block k of ``block_size`` masks (the last may be shorter) comes from ``make`` with its own
    CPU generator (seed, identity, k), so regrouping blocks into forward batches, or another
    device, never changes a mask (``make`` draws on the generator's device and moves the
    result), and a run of n masks is the start of a run of more; at most one batch plus one
    block is held. With ``reuse`` every chunk is a view of one buffer, overwritten by the next chunk
    (no allocation per chunk); the consumer must be done with a chunk before asking for the next.
    """
    buffer: torch.Tensor | None = None
    held = block = made = 0
    while made < n:
        m = min(block_size, n - made)
        masks = make(m, generator(seed, *identity, block), block)
        if buffer is None:
            buffer = masks.new_empty((batch_size + block_size, *masks.shape[1:]))
        buffer[held:held + m] = masks
        made, held, block = made + m, held + m, block + 1
        while held >= batch_size or (made == n and held):
            take = min(batch_size, held)
            yield buffer[:take] if reuse else buffer[:take].clone()
            rest = held - take
            if rest:  # at most one block's worth carries over to the next chunk
                buffer[:rest] = buffer[take:held].clone()
            held = rest


def rise_mask_stream(params: RiseParams, size: tuple[int, int], seed: int, batch_size: int,
                     device: torch.device | str = "cpu", reuse: bool = True) -> Iterator[torch.Tensor]:
    """RISE's ``params.n_masks`` masks (n, 1, H, W) for ``seed`` in chunks of ``batch_size``, by
    ``params.mask_design``; the same masks whatever the chunk size or device."""
    if params.mask_design == "orthogonal":
        make = OrthogonalMasks(params.n_masks, size, params.grid, seed, device=device)
        return mask_stream(params.n_masks, make, seed, batch_size, "rise-oa-masks", params.grid,
                           reuse=reuse, block_size=make.part)

    def make_iid(m: int, gen: torch.Generator, _block: int) -> torch.Tensor:
        return generate_masks(m, size, params.grid, params.p, gen, device=device)

    return mask_stream(params.n_masks, make_iid, seed, batch_size, "rise-masks", params.grid,
                       params.p, reuse=reuse)


def logistic_correction(cv: LogisticControlVariate, params: RiseParams, size: tuple[int, int], seed: int,
                        batch_size: int, device: torch.device | str, mask_total: torch.Tensor) -> torch.Tensor:
    """(B, H*W) the logistic control variate's correction of a run of ``params`` with ``seed``:
    the run's masks streamed again, and ``cv_samples`` x N extra masks from their own seed."""
    extra = params.model_copy(update={"n_masks": params.cv_samples * params.n_masks})
    return cv.correction(rise_mask_stream(params, size, seed, batch_size, device),
                         rise_mask_stream(extra, size, derive_seed(seed, "rise-surrogate-masks"),
                                          batch_size, device),
                         mask_total)


def rise_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: InputSpec,
              params: RiseParams, seed: int, fill_generators: list[torch.Generator] | None = None
              ) -> torch.Tensor:
    """RISE maps (B, H, W) float64 of ``model`` for images ``x`` (normalised) and ``target``.

    ``fill_generators`` (one per image) feed the random fills (``noise``, ``random_color``), drawn
    anew for every chunk of masks. Exposed without the explainer wrapper for benchmarks.
    """
    device = model_device(model, x.device)
    x = x.detach().to(device)
    batch, _, height, width = x.shape
    acc = MaskedScores(batch, 1, height, width, device)
    mask_total = torch.zeros(height * width, dtype=torch.float64, device=device)
    n_total = 0
    random_fill = params.fill in RANDOM_FILLS
    fixed = None if random_fill else fill(params.fill, x, spec)
    mask_chunk, forward = chunks(device, params.batch_size)
    score = class_probability(model, forward)
    cv = None
    if params.estimator == "control_variate":
        cv = ControlVariate(batch, height, width, params.grid, params.p, params.cv_grid, params.cv_ridge,
                            device)
    elif params.estimator == "logistic_control_variate":
        cv = LogisticControlVariate(batch, params.cv_grid, params.cv_ridge)

    stream = rise_mask_stream(params, (height, width), seed, mask_chunk, device)
    buffer: torch.Tensor | None = None
    with torch.inference_mode():
        for masks in stream:
            m = masks.shape[0]
            mask_total += masks.flatten(1).sum(dim=0)  # float32 over one chunk, float64 across
            n_total += m
            if cv is not None:
                cv.add_masks(masks)
            for b in range(batch):
                image = x[b:b + 1]
                if random_fill:
                    gen = fill_generators[b] if fill_generators else None
                    base = fill(params.fill, image.expand(m, -1, -1, -1), spec, gen)
                else:
                    base = fixed[b:b + 1]
                # x_i = A + M_i (x - A): one fused multiply-add, written into a reused buffer
                # (a fresh 10+ MB tensor per chunk costs page faults comparable to the masking)
                if buffer is None or buffer.shape[0] < m:
                    buffer = torch.empty((m, *x.shape[1:]), dtype=x.dtype, device=device)
                masked = torch.addcmul(base, masks, image - base, out=buffer[:m])
                scores = score(masked, int(target[b]))
                acc.add(b, scores, masks)
                if cv is not None:
                    cv.add_scores(b, scores)
    sums = acc.sums[:, 0]
    reference = acc.references()[:, None]
    if params.normalize == "mask_sum":
        # sum_i f_i M_i / sum_i M_i = r + sum_i (f_i - r) M_i / sum_i M_i; a pixel no mask kept
        # (possible only for tiny N) has no evidence: it gets r, the uninformative value.
        total = mask_total[None, :]
        out = reference + torch.where(total > 0, sums / total.clamp_min(1e-300), torch.zeros_like(sums))
        if isinstance(cv, ControlVariate):
            out = out + cv.correction(mask_total)
        elif cv is not None:
            out = out + logistic_correction(cv, params, (height, width), seed, mask_chunk, device, mask_total)
    else:  # the paper's 1/(N p) sum_i f_i M_i, with f_i = r + (f_i - r)
        out = (sums + reference * mask_total[None, :]) / (n_total * params.p)
    return out.view(batch, height, width)


@EXPLAINERS.register("rise")
class Rise(Explainer):
    """RISE: softmax probability of the target under random masks, averaged per pixel (black box).

    Defaults for the 64x64 reference data: N = 2000 masks, an 8 x 8 grid, keep probability
    p = 0.5 (METHODS §1's prototype setting; 2000 masks bring two independent mask sets of one
    model to a Spearman of about 0.9 there), fill ``zero`` (the normalised 0, i.e. the data set's
    mean colour — what eclique's reference code does), and ``normalize: mask_sum`` (each pixel's
    score divided by the total mask weight it received, so a model that ignores the masks yields a
    constant, degenerate map). Maps are unsigned-probability scale, (B, H, W).

    Mask design (``design``): with p = 0.5 the masks come in balanced blocks
    (:class:`audit.rise_masks.OrthogonalMasks`: a randomised strength-3 orthogonal array of the
    cells, one scrambled-Sobol' shift per block). Each mask is still a RISE mask, so the map has
    the paper's limit; on the reference model it gets there with about a third of the masks
    i.i.d. masks need (``benchmarks/rise.py --convergence``). ``design: iid`` gives the paper's
    independent masks; ``auto`` (the default) is ``orthogonal`` when p = 0.5 with
    ``normalize: mask_sum``, else ``iid``.
    """

    Params = RiseParams
    needs_gradients = False
    black_box = True
    differentiable = False
    signed = False

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                ctx: ExplainContext) -> torch.Tensor:
        gens = None
        if self.params.fill in RANDOM_FILLS:
            gens = [ctx.sample_generator(i, "rise-fill") for i in range(x.shape[0])]
        with eval_mode(model):
            return rise_maps(model, x, target, ctx.spec, self.params, ctx.seed, gens).float()
