"""The training recipe of ``builtin:shapes-resnet``; ``explain-audit train-reference`` runs it.

Why occlusion augmentation: RISE, deletion/insertion, AOPC and the crop metric all feed the model
partly-occluded images. A model that never saw occlusion reacts to the fill itself (seed 002's
"introduced evidence": a prototype trained without it scored a pointing game of 0.50 under RISE
with a black fill). Training on RISE-style masked images with every fill the tool offers keeps
the model's response on masked inputs about the evidence that is left, which is what makes each
explainer meaningful on the reference model.

Everything random derives from ``Recipe.seed``; on one machine and torch build the run is
reproducible bit for bit (single process, deterministic algorithms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from audit.builtin import shapes
from audit.builtin.shapes_resnet import INPUT_SPEC, ShapesResNet
from audit.fills import fill
from audit.rise_masks import generate_masks
from audit.seeding import derive_seed, generator

# the fills the shipped weights were trained with (audit.fills grew ``dabkowski`` later; pinned
# so that `explain-audit train-reference` still rebuilds the same weights)
REFERENCE_FILLS = ("zero", "black", "mean", "blur", "noise", "random_color")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 20
    n_train: int = 12000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    occlusion_prob: float = 0.5
    noise_sigma: float = 0.03  # pixel-space Gaussian noise, half of the time
    width: int = 24
    warmup: float = 0.1  # fraction of steps the one-cycle schedule warms up
    seed: int = 0


def occlude(x: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """RISE-style masking of a random subset of the batch, in four groups of random s, p, fill."""
    chosen = torch.rand(x.shape[0], generator=gen) < prob
    idx = chosen.nonzero().flatten()
    if idx.numel() == 0:
        return x
    out = x.clone()
    for group in idx.chunk(4):
        if group.numel() == 0:
            continue
        grid = int(torch.randint(3, 11, (1,), generator=gen))
        p = float(0.25 + 0.65 * torch.rand(1, generator=gen))
        kind = REFERENCE_FILLS[int(torch.randint(len(REFERENCE_FILLS), (1,), generator=gen))]
        masks = generate_masks(group.numel(), x.shape[-1], grid, p, gen)
        part = x[group]
        out[group] = masks * part + (1 - masks) * fill(kind, part, INPUT_SPEC, gen)
    return out


def augment(pixels: torch.Tensor, gen: torch.Generator, recipe: Recipe) -> torch.Tensor:
    """Flip, light noise, normalise, occlude. Input in pixel space, output normalised."""
    flip = torch.rand(pixels.shape[0], generator=gen) < 0.5
    pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    noisy = torch.rand(pixels.shape[0], generator=gen) < 0.5
    noise = torch.randn(pixels.shape, generator=gen) * recipe.noise_sigma
    pixels = (pixels + noise * noisy.view(-1, 1, 1, 1)).clamp(0, 1)
    return occlude(INPUT_SPEC.normalize(pixels), gen, recipe.occlusion_prob)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: str = "test", n: int | None = None, seed: int = 0,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on the first ``n`` samples of a shapes split."""
    n = shapes.SPLIT_SIZES[split] if n is None else n
    model.eval()
    correct = 0
    for start in range(0, n, batch_size):
        batch = shapes.render(range(start, min(n, start + batch_size)), split, seed)
        logits = model(INPUT_SPEC.normalize(batch.images))
        correct += int((logits.argmax(1) == batch.labels).sum())
    return correct / n


def train(recipe: Recipe = Recipe(), log: Callable[[str], None] = print) -> tuple[ShapesResNet, dict]:
    """Train the reference model from scratch; returns (model in eval mode, history)."""
    torch.manual_seed(derive_seed(recipe.seed, "init"))
    model = ShapesResNet(width=recipe.width)
    started = time.perf_counter()
    data = shapes.render(range(recipe.n_train), "train", seed=recipe.seed)
    log(f"rendered {recipe.n_train} training images in {time.perf_counter() - started:.1f}s")

    steps_per_epoch = math.ceil(recipe.n_train / recipe.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=recipe.warmup)
    history: dict = {"recipe": asdict(recipe), "epochs": []}
    for epoch in range(recipe.epochs):
        gen = generator(recipe.seed, "train-epoch", epoch)
        order = torch.randperm(recipe.n_train, generator=gen)
        model.train()
        total_loss, seen = 0.0, 0
        for step in range(steps_per_epoch):
            batch_idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = augment(data.images[batch_idx], gen, recipe)
            loss = F.cross_entropy(model(x), data.labels[batch_idx], label_smoothing=0.05)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += float(loss.detach()) * batch_idx.numel()
            seen += batch_idx.numel()
        val_acc = evaluate(model, "val", n=1000, seed=recipe.seed)
        history["epochs"].append({"epoch": epoch + 1, "loss": total_loss / seen, "val_acc": val_acc})
        log(f"epoch {epoch + 1}/{recipe.epochs}  loss {total_loss / seen:.4f}  val acc {val_acc:.4f}"
            f"  ({time.perf_counter() - started:.0f}s)")
    model.eval()
    history["seconds"] = time.perf_counter() - started
    return model, history
