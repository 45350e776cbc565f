"""LRP's view of a model: its whole computation as modules that Zennit's rules can target.

Zennit assigns rules to *modules*. An operation written in ``forward`` — a residual ``x + f(x)``,
global pooling as ``x.mean([2, 3])`` or ``F.adaptive_avg_pool2d``, an ``F.relu`` — is invisible to
it: autograd's plain gradient runs there instead, and relevance is created (both branches of a sum
pass on all of it) or lost (a mean divides it by h·w). Its canonizers also merge BatchNorm into
the convolution *declared* before it, which is not always the one computed before it (DenseNet's
pre-activation blocks; a BatchNorm after a functional ReLU).

:func:`lrp_graph` traces the model with ``torch.fx`` and rewrites the traced graph so that every
operation on a tensor is one of:

- a module with an LRP rule (Zennit ``EpsilonPlusFlat``): ``Conv2d``, ``Linear`` (a BatchNorm
  *computed* right after a convolution, and used nowhere else, folded into it first); the sum
  of two tensors as Zennit's ``Sum`` (proportional rule, Bach et al. 2015 eq. 60-like);
  average pooling, functional or not, as ``AvgPool2d``/``AdaptiveAvgPool2d`` (proportional rule);
  activations, functional or not, as modules (pass rule); a standalone BatchNorm (pass rule);
- pure routing, which conserves relevance under the plain gradient: reshapes, concatenation,
  splitting, indexing, max pooling (winner takes all), dropout and identity in eval mode;
- a gating product ``x * s`` where ``s`` broadcasts over ``x`` (squeeze-and-excitation): the gate
  is treated as a constant, all relevance goes to ``x`` (the signal-take-all rule, Arras et al.
  2017).

Anything else — attention, LayerNorm, a product or sum with a constant, a functional convolution,
a module called more than once that carries a rule, an untraceable forward — raises
``ValueError`` naming it: the LRP explainer refuses the model rather than return a map whose
relevance went where the rules never looked.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.utils.fusion import fuse_conv_bn_eval

from audit.explainers.base import Unsupported, without_inplace


class _Gate(torch.autograd.Function):
    """``x * s`` forward; backward passes the incoming relevance to ``x`` unchanged, none to ``s``."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.scale = s.detach()
        return x * s

    @staticmethod
    def backward(ctx, grad):
        # zeros, not None: Zennit's hooks in the gate's branch expect a gradient to transform
        return grad, torch.zeros_like(ctx.scale)


def gate(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Signal-take-all product (``s`` the gate, broadcast over ``x``)."""
    return _Gate.apply(x, s)


def stack_broadcast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` and ``b`` broadcast to one shape and stacked on a new last axis (for Zennit's Sum)."""
    return torch.stack(torch.broadcast_tensors(a, b), dim=-1)


# Leaf modules LRP has a rule for or that only route values (in eval mode).
_RULED = (nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Mish, nn.PReLU, nn.SELU, nn.CELU)
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_ROUTING_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)

# Functions and methods on tensors that only route values: relevance passes through them intact.
_ROUTING = {torch.flatten, torch.cat, torch.concat, torch.stack, torch.chunk, torch.split, torch.reshape, torch.squeeze,
            torch.unsqueeze, torch.transpose, torch.permute, operator.getitem, F.dropout, F.dropout2d,
            torch.narrow, getattr}
_ROUTING_METHODS = {"flatten", "view", "reshape", "permute", "transpose", "contiguous", "chunk", "split",
                    "squeeze", "unsqueeze", "clone", "narrow", "size", "dim", "expand_as"}
# Functional activations and pools, and the modules that replace them.
_ACTIVATION_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, torch.relu_: nn.ReLU, F.relu6: nn.ReLU6,
                         F.silu: nn.SiLU, F.gelu: nn.GELU, F.hardswish: nn.Hardswish, torch.sigmoid: nn.Sigmoid,
                         F.sigmoid: nn.Sigmoid, F.hardsigmoid: nn.Hardsigmoid, torch.tanh: nn.Tanh,
                         F.leaky_relu: nn.LeakyReLU, F.elu: nn.ELU}
_ACTIVATION_METHODS = {"relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
_ADDS = {operator.add, operator.iadd, torch.add}
_MULS = {operator.mul, operator.imul, torch.mul}


@dataclass
class LrpGraph:
    """The rewritten copy and what the rewriting did (for manifest.json)."""

    module: fx.GraphModule
    counts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        done = ", ".join(f"{n} {what}" for what, n in self.counts.items() if n)
        return "torch.fx graph" + (f" ({done})" if done else "")


def _is_tensor(node) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _numel(node: fx.Node) -> int:
    shape = node.meta["tensor_meta"].shape
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _is_eval_stochastic_depth(node: fx.Node) -> bool:
    if node.op != "call_function" or getattr(node.target, "__name__", "") != "stochastic_depth":
        return False
    training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
    return training is False


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} module {node.target!r}"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{'method' if node.op == 'call_method' else 'function'} {target}()"


def _refuse(what: str) -> Unsupported:
    return Unsupported(f"LRP has no rule for the {what} in this model's forward; its relevance would not be "
                      "conserved there: use an explainer that needs no rules (saliency, smoothgrad, "
                      "integrated_gradients, gradcam, rise)")


def lrp_graph(model: nn.Module, example: torch.Tensor) -> LrpGraph:
    """A ``torch.fx`` copy of ``model`` (eval mode, no in-place ops) whose every tensor operation
    LRP's rules see, traced and checked on ``example`` (B, C, H, W); see the module docstring.
    The copy computes the same logits as ``model`` up to float rounding (BatchNorm folding).
    Raises ``ValueError`` naming the first operation it cannot give a rule."""
    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise Unsupported("LRP hooks every layer, and TorchScript modules run no hooks; give the model's "
                         "Python code (source: import:pkg.module:callable) or use a gradient explainer")
    clone = without_inplace(model).eval()
    from zennit.layer import Sum

    class Tracer(fx.Tracer):  # Zennit's own Sum (a model written for LRP) is kept as a module
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, Sum) or super().is_leaf_module(m, qualname)

    try:
        gm = fx.GraphModule(clone, Tracer().trace(clone), type(clone).__name__)
    except RuntimeError:
        raise  # the model's own error (fx's tracing problems are TraceError, a ValueError, or TypeError)
    except Exception as exc:
        raise Unsupported(f"LRP needs the model's whole computation as modules and torch.fx cannot trace its "
                         f"forward ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:150]}); use an "
                         "explainer that needs no rules (saliency, smoothgrad, integrated_gradients, rise)") from None
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example[:1].detach())
    modules = dict(gm.named_modules())
    graph = gm.graph
    counts = {"BatchNorm folded": 0, "sums as Sum": 0, "functional ops as modules": 0, "gates": 0}
    fresh = iter(range(10**9))

    def add_module(module: nn.Module) -> str:
        name = f"lrp_{next(fresh)}"
        gm.add_submodule(name, module)
        modules[name] = module
        return name

    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    for node in list(graph.nodes):
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        tensor_args = [a for a in node.args if _is_tensor(a)]
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.BatchNorm2d):
                source = node.args[0]
                computed = isinstance(source, fx.Node) and source.op == "call_module"
                conv = modules.get(source.target) if computed else None
                if (isinstance(conv, nn.Conv2d) and len(source.users) == 1 and calls[source.target] == 1
                        and calls[node.target] == 1):
                    fused = fuse_conv_bn_eval(conv, module)
                    parent, _, leaf = source.target.rpartition(".")
                    setattr(gm.get_submodule(parent) if parent else gm, leaf, fused)
                    modules[source.target] = fused
                    node.replace_all_uses_with(source)
                    graph.erase_node(node)
                    counts["BatchNorm folded"] += 1
                    continue
                # not computed right after a convolution (pre-activation): Zennit's pass rule
            elif isinstance(module, _RULED):
                if calls[node.target] > 1:
                    raise _refuse(f"{_describe(node, modules)}, called {calls[node.target]} times (shared "
                                  "weights; a rule keeps one input per module)")
                continue
            elif not isinstance(module, (*_ACTIVATIONS, *_POOLS, *_ROUTING_MODULES, Sum)):
                raise _refuse(_describe(node, modules))
            if calls[node.target] > 1:  # a reused activation or pool: one module per call
                node.target = add_module(copy.deepcopy(module))
            continue
        if not _is_tensor(node) and not tensor_args:
            continue  # arithmetic on sizes, assertions: no relevance flows there
        target = node.target
        if _is_eval_stochastic_depth(node):
            continue  # torchvision's stochastic depth with training=False: the identity
        if node.op == "call_function" and target in _ROUTING or node.op == "call_method" and target in _ROUTING_METHODS:
            if target in (F.dropout, F.dropout2d) and node.kwargs.get("training", len(node.args) > 2 and node.args[2]):
                raise _refuse("dropout called with training=True")
            continue
        replacement: nn.Module | None = None
        if node.op == "call_function" and target in _ACTIVATION_FUNCTIONS:
            replacement = _ACTIVATION_FUNCTIONS[target]()
        elif node.op == "call_method" and target in _ACTIVATION_METHODS:
            replacement = _ACTIVATION_METHODS[target]()
        elif node.op == "call_function" and target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            replacement = (nn.AdaptiveAvgPool2d if target is F.adaptive_avg_pool2d else nn.AdaptiveMaxPool2d)(size)
        elif node.op == "call_function" and target in (F.avg_pool2d, F.max_pool2d):
            names = ("kernel_size", "stride", "padding") + (("ceil_mode", "count_include_pad")
                                                            if target is F.avg_pool2d else ("dilation", "ceil_mode"))
            kwargs = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
            kwargs.pop("return_indices", None)
            replacement = (nn.AvgPool2d if target is F.avg_pool2d else nn.MaxPool2d)(**kwargs)
        elif ((node.op == "call_method" and target == "mean") or (node.op == "call_function" and target is torch.mean)):
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            rank = len(node.args[0].meta["tensor_meta"].shape)
            dims = sorted(d % rank for d in ((dims,) if isinstance(dims, int) else (dims or ())))
            if rank != 4 or dims != [2, 3]:
                raise _refuse(f"mean over dims {dims} (only global average pooling over (h, w) has a rule)")
            keep = node.kwargs.get("keepdim", len(node.args) > 2 and node.args[2])
            with graph.inserting_before(node):
                pooled = graph.call_module(add_module(nn.AdaptiveAvgPool2d(1)), (node.args[0],))
                new = pooled if keep else graph.call_function(torch.flatten, (pooled, 1))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            counts["functional ops as modules"] += 1
            continue
        elif node.op in ("call_function", "call_method") and target in _ADDS | {"add", "add_", "__add__"}:
            if len(tensor_args) != 2 or len(node.args) != 2 or node.kwargs:
                raise _refuse(f"{_describe(node, modules)} with a constant or scaled operand")
            with graph.inserting_before(node):
                stacked = graph.call_function(stack_broadcast, tuple(node.args))
                from zennit.layer import Sum

                new = graph.call_module(add_module(Sum()), (stacked,))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            counts["sums as Sum"] += 1
            continue
        elif node.op in ("call_function", "call_method") and target in _MULS | {"mul", "mul_", "__mul__"}:
            if len(tensor_args) != 2 or len(node.args) != 2:
                raise _refuse(f"{_describe(node, modules)} with a constant operand")
            a, b = node.args
            if _numel(a) == _numel(b):
                raise _refuse(f"{_describe(node, modules)} of two same-shaped tensors (not a broadcast gate)")
            signal, scale = (a, b) if _numel(a) > _numel(b) else (b, a)
            with graph.inserting_before(node):
                new = graph.call_function(gate, (signal, scale))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            counts["gates"] += 1
            continue
        else:
            raise _refuse(_describe(node, modules))
        tensor_in = node.args[0]
        with graph.inserting_before(node):
            new = graph.call_module(add_module(replacement), (tensor_in,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        counts["functional ops as modules"] += 1
    graph.lint()
    gm.recompile()
    gm.eval()
    return LrpGraph(gm, counts)
