"""RISE with a logistic control variate: fewer masks for the same map on saturating models.

The orthogonal mask design (:class:`audit.rise_masks.OrthogonalMasks`) and the linear control
variate (:mod:`audit.explainers.rise_cv`) both remove the part of the score f(M) that is of low
degree in the mask. A trained classifier's probability is a saturating function of which object
regions are kept, and that high-order part is what is left. A logistic surrogate

    h(M) = sigmoid(a + w . Z(M)),  Z(M) = the mask averaged over an s' x s' grid of image blocks,

fitted to the (Z_i, f_i) pairs the run computed anyway, follows the saturation. Its own map
E[h M(u)] / E[M(u)] has no closed form but needs no model call: it is estimated from K extra
masks M'_k (``cv_samples`` x N, an independent stream of the same design) through h alone:

    S(u) = sum_i (f_i - h(M_i)) M_i(u) / sum_i M_i(u)  +  sum_k h(M'_k) M'_k(u) / sum_k M'_k(u).

For any fixed h the first term tends to E[(f - h) M(u)] / E[M(u)] and the second to
E[h M(u)] / E[M(u)], so S tends to RISE's limit E[f M(u)] / E[M(u)] (control variates: Owen,
*Monte Carlo theory, methods and examples*, 2013, §8.9); fitting h on the same samples adds an
O(1/N) bias, as for the linear control variate, and the K extra masks an error of order
sqrt(Var[h M] / K) that more model calls do not reduce (hence K a multiple of N).

The fit: cross-entropy of h against the soft targets f in [0, 1] (f is a probability), features
standardised, ridge penalty ``ridge`` * ||w||^2, L-BFGS in float64 per image.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from audit.explainers.rise_cv import features


class LogisticControlVariate:
    """Collects Z_i and f_i during a RISE pass; fits h per image; corrects the map after.

    Use: :meth:`add_masks` per chunk of masks, :meth:`add_scores` per image and chunk, then
    :meth:`correction` with the run's masks streamed again and a stream of extra masks.
    """

    def __init__(self, batch: int, feature_grid: int, ridge: float):
        self.feature_grid, self.ridge = feature_grid, ridge
        self.z: list[torch.Tensor] = []
        self.f: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        self.coef: torch.Tensor | None = None  # (B, F + 1): w, then a (standardised features)
        self.centre: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None

    def add_masks(self, masks: torch.Tensor) -> None:
        self.z.append(features(masks, self.feature_grid).to("cpu", torch.float64))

    def add_scores(self, image: int, scores: torch.Tensor) -> None:
        self.f[image].append(scores.detach().to("cpu", torch.float64))

    def fit(self) -> torch.Tensor:
        """(B, F + 1) coefficients, one logistic fit per image (also kept for :meth:`surrogate`)."""
        # RISE runs under inference_mode; the fit needs autograd, and ordinary (cloned) tensors
        with torch.inference_mode(False), torch.enable_grad():
            z = torch.cat(self.z).clone()
            self.centre = z.mean(0)
            self.scale = z.std(0).clamp_min(1e-12) if z.shape[0] > 1 else torch.ones_like(self.centre)
            design = torch.cat([(z - self.centre) / self.scale, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
            self.coef = torch.stack([self._fit_one(design, torch.cat(f).clone().clamp(0.0, 1.0))
                                     for f in self.f])
        return self.coef

    def _fit_one(self, design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean = float(target.mean())
        coef = torch.zeros(design.shape[1], dtype=torch.float64)
        # start at the constant fit (the logit of the mean score): the loss is convex, L-BFGS
        # converges from anywhere, and a constant score is already at its optimum
        coef[-1] = float(torch.logit(torch.tensor(min(max(mean, 1e-6), 1 - 1e-6), dtype=torch.float64)))
        coef.requires_grad_(True)
        optimiser = torch.optim.LBFGS([coef], max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-14,
                                      line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimiser.zero_grad()
            value = (F.binary_cross_entropy_with_logits(design @ coef, target)
                     + self.ridge * coef[:-1].pow(2).sum())
            value.backward()
            return value

        optimiser.step(loss)
        return coef.detach()

    def surrogate(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, m) h_b(M) for every image b and mask of ``masks`` (m, 1, H, W), float64."""
        z = features(masks, self.feature_grid).to(torch.float64)
        coef = self.coef.to(z.device)
        standard = (z - self.centre.to(z.device)) / self.scale.to(z.device)
        return torch.sigmoid(standard @ coef[:, :-1].T + coef[:, -1]).T

    def correction(self, run_masks: Iterable[torch.Tensor], extra_masks: Iterable[torch.Tensor],
                   mask_total: torch.Tensor) -> torch.Tensor:
        """(B, H*W): sum_k h M'_k / sum_k M'_k - sum_i h M_i / sum_i M_i (0 where no mask kept u).

        ``run_masks`` must be the run's own masks again (same order not needed), ``mask_total``
        their per-pixel sum; ``extra_masks`` independent masks of the same design.
        """
        if self.coef is None:
            self.fit()
        in_sample = _weighted_sums(self, run_masks)[0]
        extra, extra_total = _weighted_sums(self, extra_masks)
        total = mask_total.to(in_sample.device, torch.float64)[None, :]
        kept = (total > 0) & (extra_total[None, :] > 0)
        return torch.where(kept, extra / extra_total.clamp_min(1e-300)[None, :]
                           - in_sample / total.clamp_min(1e-300), torch.zeros_like(in_sample))


def _weighted_sums(cv: LogisticControlVariate, stream: Iterable[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i h(M_i) M_i as (B, H*W), sum_i M_i as (H*W,)) over a stream of masks, float64."""
    sums = total = None
    for masks in stream:
        flat = masks[:, 0].flatten(1)
        h = cv.surrogate(masks).to(flat.dtype)
        part, count = (h @ flat).to(torch.float64), flat.sum(0).to(torch.float64)
        sums = part if sums is None else sums + part
        total = count if total is None else total + count
    if sums is None:
        raise ValueError("the logistic control variate needs at least one mask in each stream")
    return sums, total
