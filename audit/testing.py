"""Conformance checks for plugins: ``check_explainer(explainer)`` and ``check_attack(attack)``.

A third-party plugin can run the same suite as the built-in ones::

    from audit.testing import check_attack, check_explainer
    check_explainer(MyExplainer(n_masks=64))
    check_attack(MyAttack(steps=20))

``check_attack``: on the same tiny model, preparing and perturbing leave the input model as it
was (weights, modes, hooks), preparation and perturbation are deterministic under one seed,
perturbed inputs keep the batch's shape, stay finite and do not depend on the batch they are
in, an attack that trains exports its state, and an export/import round trip gives the same
outputs. Attacks with ``needs_training_data`` get :func:`tiny_training_set`.

Checked on a tiny residual CNN (torchvision BasicBlocks, BatchNorm, in-place ReLUs): output
shape (B, H, W) and float dtype, finite values, determinism under a seed, batch-invariance
(a batch explains the same as its images one by one, per ``ctx.sample_ids``), and that the
model is left as it was — parameters, train/eval modes, in-place flags, and no hook left on any
module or globally — also when the model raises in the middle of an explanation.
Explainers that train (``needs_training_data``) are trained on :func:`tiny_training_set` first,
twice: training must leave the model as it was (and no gradients on it) and give the same maps
under one seed. Each failure raises :class:`ConformanceError` naming the property.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torchvision.models.resnet import BasicBlock

from audit.attacks.base import Attack, AttackContext
from audit.data.sources import DataBatch, Dataset
from audit.data.training import TrainingSet
from audit.explainers.base import ExplainContext, Explainer
from audit.spec import InputSpec

TINY_SPEC = InputSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

# Tolerances for one quantity computed two different ways in float32: other batch composition or
# chunk size, the inference copy against the model, another CPU, a GPU. oneDNN and cuDNN choose
# kernels by processor and tensor shape, so such results agree only up to float32 rounding
# (ε = 2⁻²³ ≈ 1.2e-7): a logit Σ wᵢxᵢ over K terms carries an error of order √K·ε·Σ|wᵢxᵢ|, a
# softmax probability at most half the logits' error, a log-probability at most the logits' error.
# The same computation repeated (reruns, resume, backends over identical batches) stays bit-exact
# and is compared with ``torch.equal``.
#: absolute tolerance on probabilities and on metrics built from them (AOPC, deletion, insertion):
#: 1e-5 ≈ 84 ulps of 1.0, far above the 4e-9 seen between CPUs (issue L) and far below what a
#: batching bug moves (a seed or an order that depends on the batch position: ≥ 1e-3)
PROB_ATOL = 1e-5
#: absolute tolerance on log-probabilities and logits of order 1–10 (the crop metric's log p)
LOGIT_ATOL = 1e-4
#: relative tolerance between two float32 computations of the same value
FLOAT32_RTOL = 1e-5
#: metrics computed in float64 from the very same float32 maps: only the reduction order differs
FLOAT64_RTOL, FLOAT64_ATOL = 1e-9, 1e-12

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_module_registration_hooks",
                 "_global_parameter_registration_hooks", "_global_buffer_registration_hooks")


class ConformanceError(AssertionError):
    pass


class TinyResNet(nn.Module):
    """Stem conv + one BasicBlock with downsampling + linear head; in-place ReLUs like torchvision."""

    def __init__(self, num_classes: int = 4, width: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)  # construction only; callers that care pass their own seed
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
        self.layer1 = nn.Sequential(BasicBlock(width, 2 * width, stride=2, downsample=down))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from train
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


def tiny_model(seed: int = 0, num_classes: int = 4) -> TinyResNet:
    state = torch.random.get_rng_state()
    try:
        return TinyResNet(num_classes=num_classes, seed=seed).eval()
    finally:
        torch.random.set_rng_state(state)


def tiny_inputs(batch: int = 3, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return TINY_SPEC.normalize(torch.rand((batch, 3, TINY_SPEC.size, TINY_SPEC.size), generator=gen))


class _RaisesOnCall(nn.Module):
    """Wraps a model; its ``fail_at``-th forward call (counted per copy) raises."""

    explain_audit_inference_copy = False  # a traced copy would drop the counter and never raise

    def __init__(self, inner: nn.Module, fail_at: int):
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("conformance: deliberate failure inside the model")
        return self.inner(x)


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Hooks on every module of ``model`` and the global module hooks, by where they sit."""
    counts = {}
    for name, module in model.named_modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                counts[f"{name or '<root>'}.{attr}"] = len(hooks)
    for attr in _GLOBAL_HOOKS:
        hooks = getattr(module_globals, attr, None)
        if hooks:
            counts[f"global {attr}"] = len(hooks)
    return counts


def model_fingerprint(model: nn.Module) -> dict:
    """What an explainer must not change: tensors, modes, in-place flags, forward overrides."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "forwards": [("forward" in vars(m)) for m in model.modules()],  # canonizers patch forward
        "modules": [type(m).__name__ for m in model.modules()],
        "hooks": hook_counts(model),
    }


def _same_fingerprint(before: dict, after: dict) -> str | None:
    for key in ("modes", "inplace", "forwards", "modules", "hooks"):
        if before[key] != after[key]:
            return f"{key} changed: {before[key]} -> {after[key]}"
    for name, tensor in before["state"].items():
        if name not in after["state"] or not torch.equal(tensor, after["state"][name]):
            return f"tensor {name!r} changed"
    return None


def _fail(explainer: Explainer, what: str) -> None:
    raise ConformanceError(f"explainer {explainer.name or type(explainer).__name__!r}: {what}")


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return bool((a - b).abs().max() <= rtol * scale)


def check_explainer(explainer: Explainer | type[Explainer], *, model: nn.Module | None = None,
                    x: torch.Tensor | None = None, spec: InputSpec = TINY_SPEC, seed: int = 7,
                    batch_rtol: float = 1e-4) -> dict[str, bool]:
    """Run the conformance checks; returns {check: True} or raises :class:`ConformanceError`.

    ``explainer`` may be a class (default parameters) or an instance; pass small parameters
    (e.g. ``n_masks``) to keep it fast. ``batch_rtol`` bounds |batch - one by one| relative
    to the map's largest magnitude (float32 batched kernels differ in the last bits).
    """
    if isinstance(explainer, type):
        explainer = explainer()
    model = model if model is not None else tiny_model()
    x = x if x is not None else tiny_inputs()
    batch = x.shape[0]
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    ids = tuple(100 + 11 * i for i in range(batch))
    results: dict[str, bool] = {}
    trained = None
    if type(explainer).needs_training_data:  # trained as the engine does, on tiny training images
        trained = _check_training(explainer, model, x, target, spec, seed, ids)
        results["train_deterministic"] = results["train_model_untouched"] = True
    ctx = ExplainContext(spec, seed=seed, sample_ids=ids, trained=trained)

    before = model_fingerprint(model)
    maps = explainer(model, x, target, ctx)
    problem = _same_fingerprint(before, model_fingerprint(model))
    if problem:
        _fail(explainer, f"the model was changed by explaining: {problem}")
    results["model_untouched"] = True

    if tuple(maps.shape) != (batch, x.shape[-2], x.shape[-1]):
        _fail(explainer, f"shape {tuple(maps.shape)}, expected {(batch, *x.shape[-2:])}")
    if not maps.is_floating_point():
        _fail(explainer, f"dtype {maps.dtype} is not floating point")
    results["shape_dtype"] = True
    if not torch.isfinite(maps).all():
        _fail(explainer, "non-finite values in the map")
    results["finite"] = True

    again = explainer(model, x, target, ctx)
    if not torch.equal(maps, again):
        _fail(explainer, f"not deterministic under one seed (max diff {(maps - again).abs().max():.3g})")
    results["deterministic"] = True

    for i in range(batch):
        single = explainer(model, x[i:i + 1], target[i:i + 1], ctx.subset(slice(i, i + 1)))
        if not _close(maps[i], single[0], batch_rtol):
            _fail(explainer, f"image {i} explained alone differs from the batch "
                             f"(max diff {(maps[i] - single[0]).abs().max():.3g})")
    results["batch_invariant"] = True

    for fail_at in (1, 2):
        victim = _RaisesOnCall(copy.deepcopy(model), fail_at)
        before = model_fingerprint(victim)
        try:
            explainer(victim, x, target, ctx)
            raised = False
        except RuntimeError:
            raised = True
        if fail_at == 1 and not raised:
            _fail(explainer, "the model raised on its first call but the explainer returned maps; "
                             "a model's error must reach the caller")
        problem = _same_fingerprint(before, model_fingerprint(victim))
        if problem:
            _fail(explainer, f"the model was changed when it raised on call {fail_at}: {problem}")
    results["clean_after_raise"] = True

    if explainer.not_differentiable(explainer.params.model_dump()) is None:  # e.g. lrp only with composite: epsilon
        results.update(_check_differentiable(explainer, model, x, target))
    return results


def _check_training(explainer: Explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                    spec: InputSpec, seed: int, ids: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Train twice under one seed: the model is left as it was, the state is a dict of tensors,
    and both states give the same maps (states may hold timings, so maps are compared)."""
    from audit.data.training import TrainingContext

    training = tiny_training_set(size=spec.size)
    before = model_fingerprint(model)
    states = [explainer.train(model, TrainingContext(spec, seed=seed, training=training)) for _ in range(2)]
    problem = _same_fingerprint(before, model_fingerprint(model))
    if problem:
        _fail(explainer, f"the model was changed by training: {problem}")
    if any(p.grad is not None for p in model.parameters()):
        _fail(explainer, "training left gradients on the model's parameters")
    for state in states:
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            _fail(explainer, "train() must return a dict of tensors")
    maps = [explainer(model, x, target, ExplainContext(spec, seed=seed, sample_ids=ids, trained=s)) for s in states]
    if not torch.equal(maps[0], maps[1]):
        _fail(explainer, f"training is not deterministic under one seed (maps differ by "
                         f"{(maps[0] - maps[1]).abs().max():.3g})")
    return states[0]


def _check_differentiable(explainer: Explainer, model: nn.Module, x: torch.Tensor,
                          target: torch.Tensor) -> dict[str, bool]:
    before = model_fingerprint(model)
    maps = explainer.differentiable_map(model, x, target, create_graph=True)
    if tuple(maps.shape) != (x.shape[0], x.shape[-2], x.shape[-1]):
        _fail(explainer, f"differentiable_map shape {tuple(maps.shape)}")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad((maps**2).sum(), params, allow_unused=True)
    if not any(g is not None and bool(g.abs().sum() > 0) for g in grads):
        _fail(explainer, "a penalty on differentiable_map has no gradient w.r.t. the weights")
    problem = _same_fingerprint(before, model_fingerprint(model))
    if problem:
        _fail(explainer, f"differentiable_map changed the model: {problem}")
    return {"differentiable": True}


# -- attacks ------------------------------------------------------------------------------------
class TensorData(Dataset):
    """An in-memory data set of pixel images (B, 3, S, S) in [0, 1] with labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "tensors"):
        self.images, self.labels = images, labels
        self.description = f"{name} n={images.shape[0]}"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, positions: range) -> DataBatch:
        index = list(positions)
        return DataBatch(self.images[index], self.labels[index], tuple(index))

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.images.numpy().tobytes() + self.labels.numpy().tobytes()).hexdigest()


def tiny_training_set(n: int = 64, seed: int = 3, size: int = TINY_SPEC.size, classes: int = 4) -> TrainingSet:
    """Random pixel images with random labels: enough for an attack's plumbing to train on."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((n, 3, size, size), generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return TrainingSet(TensorData(images, labels, "tiny"))


def _fail_attack(attack: Attack, what: str) -> None:
    raise ConformanceError(f"attack {attack.name or type(attack).__name__!r}: {what}")


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def check_attack(attack: Attack | type[Attack], *, model: nn.Module | None = None,
                 x: torch.Tensor | None = None, spec: InputSpec = TINY_SPEC, seed: int = 7,
                 training: TrainingSet | None = None, batch_rtol: float = 1e-5) -> dict[str, bool]:
    """Run the attack conformance checks; returns {check: True} or raises :class:`ConformanceError`.

    ``attack`` may be a class (default parameters) or an instance; pass small budgets (e.g.
    training steps) to keep it fast. Preparation happens twice (determinism), so an attack
    that trains pays its training twice.
    """
    if isinstance(attack, type):
        attack = attack()
    model = model if model is not None else tiny_model()
    x = x if x is not None else tiny_inputs()
    if type(attack).needs_training_data and training is None:
        training = tiny_training_set(size=x.shape[-1])
    ids = tuple(100 + 11 * i for i in range(x.shape[0]))
    ctx = AttackContext(spec, seed=seed, training=training if type(attack).needs_training_data else None)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    results: dict[str, bool] = {}

    before = model_fingerprint(model)
    prepared = attack.prepare(model, ctx)
    if not isinstance(prepared, nn.Module):
        _fail_attack(attack, f"prepare returned {type(prepared).__name__}, not an nn.Module")
    prepared.eval()  # as the engine does
    x_att = attack.perturb(prepared, x, target, ctx.for_samples(ids))
    problem = _same_fingerprint(before, model_fingerprint(model))
    if problem:
        _fail_attack(attack, f"the input model was changed by preparing or perturbing: {problem}")
    results["model_untouched"] = True

    if tuple(x_att.shape) != tuple(x.shape) or not x_att.is_floating_point():
        _fail_attack(attack, f"perturb returned {tuple(x_att.shape)} {x_att.dtype} for {tuple(x.shape)}")
    if not torch.isfinite(x_att).all():
        _fail_attack(attack, "perturb returned non-finite values")
    out = _outputs(prepared, x_att)
    if out.shape != (x.shape[0], _outputs(model, x).shape[1]) or not torch.isfinite(out).all():
        _fail_attack(attack, f"the prepared model returned {tuple(out.shape)} or non-finite logits")
    results["shapes_finite"] = True

    again = attack.prepare(model, ctx).eval()
    if not torch.equal(_outputs(again, x_att), out):
        _fail_attack(attack, "prepare is not deterministic under one seed (outputs differ)")
    if not torch.equal(attack.perturb(prepared, x, target, ctx.for_samples(ids)), x_att):
        _fail_attack(attack, "perturb is not deterministic under one seed")
    results["deterministic"] = True

    for i in range(x.shape[0]):
        single = attack.perturb(prepared, x[i:i + 1], target[i:i + 1], ctx.for_samples(ids[i:i + 1]))
        if not _close(single[0], x_att[i], batch_rtol):
            _fail_attack(attack, f"image {i} perturbed alone differs from the batch "
                                 f"(max diff {(single[0] - x_att[i]).abs().max():.3g})")
    results["batch_invariant"] = True

    state = attack.export_state(prepared)
    if state is None:
        if type(attack).needs_training_data:
            _fail_attack(attack, "it trains but export_state returned None")
    else:
        copied = {k: v.detach().cpu().clone() for k, v in state.items()}
        before = model_fingerprint(model)
        rebuilt = attack.import_state(model, copied).eval()
        problem = _same_fingerprint(before, model_fingerprint(model))
        if problem:
            _fail_attack(attack, f"import_state changed the input model: {problem}")
        if not torch.equal(_outputs(rebuilt, x_att), out):
            _fail_attack(attack, "import_state(export_state(prepared)) gives other outputs")
        if not torch.equal(_outputs(rebuilt, x), _outputs(prepared, x)):
            _fail_attack(attack, "import_state(export_state(prepared)) gives other outputs on clean inputs")
    results["round_trip"] = True
    return results
