"""Memory-layout properties: non-contiguous inputs and empty batches.

A kernel that indexes its input as if it were a packed row-major array (``data_ptr + row * C + col``)
computes garbage on a transposed, sliced or channels_last tensor; many shipped fused norms did exactly
that (TransformerEngine#1017, pytorch#62594, #147303, apex#411, flashinfer#634). Empty batches crash
kernels that launch a grid of zero blocks or reduce over nothing (flash-attention#1620).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import doubled
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import compare
from normbench.implementation import ImplementationError
from normbench.inputs import Case, case_strategy, input_shape, random_like
from normbench.spec import Layout

# -- non-contiguous inputs ------------------------------------------------------------------------------

#: How the same logical values can sit in memory. Every kind is a layout real callers hand to a norm:
#: "transposed"    all dims stored in reverse order (x = buf.T): no dim has unit stride but the first;
#: "strided"       every dim taken with step 2 from a larger NaN-filled buffer, at a storage offset: a
#:                 kernel that reads the gaps turns the output NaN;
#: "row_padded"    the last dim sliced out of a wider NaN-filled row at an offset (q = qkv[..., :C]): unit
#:                 inner stride, but rows are not packed (TransformerEngine#1017);
#: "batch_minor"   dims 0 and 1 swapped in memory: time-major (T, B, C) storage for tokens (fairseq);
#: "channels_last" the features axis stored last: torch.channels_last for rank 4 (pytorch#62594), the
#:                 (N, L, C) -> (N, C, L) transpose for rank 3;
#: "expanded"      one sample broadcast over the batch with stride 0 (what expand() and y.sum().backward()
#:                 hand a kernel).
VIEW_KINDS: tuple[str, ...] = ("transposed", "strided", "row_padded", "batch_minor", "channels_last", "expanded")


def applicable_views(layout: Layout, rank: int) -> tuple[str, ...]:
    """The view kinds that give a layout distinct from the contiguous one for this layout and rank."""
    out = ["transposed", "strided", "row_padded"]
    if rank >= 3:
        out.append("batch_minor")
    if layout.features_axis % rank != rank - 1 and rank >= 3:
        out.append("channels_last")
    # Batch statistics over identical samples are degenerate (zero variance for (N, C)); per-sample
    # statistics are unaffected by broadcasting samples.
    if layout.reduce != "channel":
        out.append("expanded")
    return tuple(out)


def _nan_buffer(values: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return torch.full(shape, math.nan, dtype=values.dtype, device=values.device)


def strided_view(values: torch.Tensor, kind: str, features_axis: int) -> torch.Tensor:
    """A tensor equal to `values` (contiguous) elementwise but laid out in memory as `kind` says; for
    "expanded", every sample equals sample 0 of `values`."""
    dims = values.dim()
    if kind == "transposed":
        order = list(reversed(range(dims)))  # a reversal is its own inverse
        return values.permute(order).contiguous().permute(order)
    if kind == "strided":
        big = _nan_buffer(values, [2 * s + 1 for s in values.shape])
        view = big[tuple(slice(1, None, 2) for _ in values.shape)]
        view.copy_(values)
        return view
    if kind == "row_padded":
        shape = list(values.shape)
        big = _nan_buffer(values, [*shape[:-1], shape[-1] + 3])
        view = big.narrow(-1, 1, shape[-1])
        view.copy_(values)
        return view
    if kind == "batch_minor":
        return values.transpose(0, 1).contiguous().transpose(0, 1)
    if kind == "channels_last":
        if dims == 4:
            return values.contiguous(memory_format=torch.channels_last)
        axis = features_axis % dims
        return values.movedim(axis, -1).contiguous().movedim(-1, axis)
    if kind == "expanded":
        return values.narrow(0, 0, 1).expand(values.shape)
    raise ValueError(f"unknown view kind {kind!r}; known: {VIEW_KINDS}")


@dataclass(frozen=True)
class ViewCase:
    """A reproducible input, the memory layout it is handed over in, and the constructor parameters."""

    case: Case
    view: str
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "view": self.view, "params": dict(self.params)}


def _view_cases(ctx: CheckContext) -> list[ViewCase]:
    """Every feature count of the spec (769, 37, 60: not powers of two; 12 with 4 groups: C/G = 3) in
    every rank of the layout and every applicable view."""
    layout = ctx.spec.layout
    params = tuple(ctx.params().items())
    out = []
    for i, c in enumerate(ctx.spec.features):
        for rank in layout.ranks:
            shape = input_shape(layout, batch=4, features=c, rank=rank, length=3)
            for kind in applicable_views(layout, rank):
                out.append(ViewCase(Case(shape, "normal", seed=ctx.seed + i), kind, params))
    return out


def _view_strategy(ctx: CheckContext) -> st.SearchStrategy[ViewCase]:
    layout = ctx.spec.layout
    params = tuple(ctx.params().items())

    @st.composite
    def build(draw: st.DrawFn) -> ViewCase:
        case = draw(case_strategy(layout, ctx.spec.features))
        kind = draw(st.sampled_from(applicable_views(layout, len(case.shape))))
        return ViewCase(case, kind, params)

    return build()


def _describe_view(x: torch.Tensor) -> dict[str, Any]:
    return {"strides": list(x.stride()), "storage_offset": int(x.storage_offset()),
            "is_contiguous": bool(x.is_contiguous())}


@dataclass
class _Run:
    """What one forward + backward of the module left: output, gradients, state buffers."""

    output: torch.Tensor
    grad_input: torch.Tensor | None
    grads: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]


def _forward_backward(ctx: CheckContext, module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> _Run:
    x = x.detach().requires_grad_(True)
    y = ctx.forward(module, x)
    y.backward(dy)
    grads = {}
    for label, param in zip(("grad_weight", "grad_bias"), ctx.impl.affine_tensors(module)):
        if param is not None:
            grads[label] = param.grad if param.grad is not None else torch.zeros_like(param)
    state = {name: buf.detach().clone() for name in ctx.spec.state
             if isinstance(buf := ctx.impl.state_tensor(module, name), torch.Tensor)}
    return _Run(y.detach(), x.grad, grads, state)


#: a contiguous control's run, by what determines it: the case, the parameters, and whether the view broadcasts sample
#: 0 ("expanded" hands the module other values)
_Controls = dict[tuple[Case, tuple[tuple[str, Any], ...], bool], _Run]


def _layout_trial(ctx: CheckContext, vc: ViewCase, controls: _Controls) -> Trial:
    """Forward and backward on the view against the same module's forward and backward on a contiguous copy
    of the same values (same parameters and state): the property is about the layout, so a deviation that the
    contiguous input shows too is forward_equivalence's to report, not this check's. The views of one case share
    their control (`controls`): a fresh module, seeded alike, run on the same contiguous values, gives it again, so
    the explicit cases run it once per case instead of once per view."""
    params = dict(vc.params)
    values = ctx.input(vc.case)
    axis = ctx.spec.layout.features_axis
    x = strided_view(values, vc.view, axis)
    c = ctx.num_features_of(x)
    # The upstream gradient in the same layout: backward kernels index grad_output too (apex#411).
    dy = strided_view(random_like(values, stable_seed("grad_output", vc.case.seed)), vc.view, axis)
    example = {**vc.as_dict(), "layout": _describe_view(x), "dtype": ctx.dtype_name, "mode": ctx.mode}
    # The control's copies first: a candidate that writes into x or dy must not corrupt its own yardstick.
    x_control, dy_control = x.detach().clone().contiguous(), dy.detach().clone().contiguous()
    try:
        got = _forward_backward(ctx, ctx.build(c, params), x, dy)
    except ImplementationError:
        raise
    except Skip:
        raise
    except Exception as exc:  # raising on a valid strided tensor violates the property
        return Trial(ok=False, summary=f"raised {type(exc).__name__} on a {vc.view} input: {exc}",
                     metrics={"tol_ratio": math.inf, "view": vc.view}, counterexample=example)
    key = (vc.case, vc.params, vc.view == "expanded")
    control = controls.get(key)
    if control is None:
        control = controls[key] = _forward_backward(ctx, ctx.build(c, params), x_control, dy_control)
    if got.grad_input is None:
        return Trial(ok=False, summary=f"no gradient reached a {vc.view} input",
                     metrics={"tol_ratio": math.inf, "view": vc.view}, counterexample=example)
    n = reduction_length(ctx.spec, tuple(x.shape), params.get("num_groups"))
    m = weight_reduction_length(ctx.spec, tuple(x.shape))
    # Two results of the same module, each within tolerance of the truth when correct, may differ by twice
    # the tolerance (a kernel may pick another, equally correct, reduction order for another layout).
    forward, backward = doubled(ctx.tolerance("forward")), doubled(ctx.tolerance("backward"))
    comparisons = {"output": compare(got.output, control.output, ctx.dtype, forward, n)}
    assert control.grad_input is not None  # the control input is a leaf that requires grad
    comparisons["grad_input"] = compare(got.grad_input, control.grad_input, ctx.dtype, backward, n)
    for label, grad in got.grads.items():
        if label in control.grads:
            comparisons[label] = compare(grad, control.grads[label], ctx.dtype, backward, m)
    for name, buf in got.state.items():
        if name in control.state:
            a, b = buf.to(torch.float64), control.state[name].to(torch.float64)
            comparisons[name] = compare(a, b, ctx.dtype, forward, n if buf.is_floating_point() else 1)
    name, worst = max(comparisons.items(), key=lambda kv: kv[1].tol_ratio)
    failing = [k for k, comp in comparisons.items() if not comp.ok]
    text = "; ".join(comparisons[k].describe(k) for k in failing) or worst.describe(name)
    metrics: dict[str, Any] = {"tol_ratio": worst.tol_ratio, "worst_tensor": name, "view": vc.view}
    for key, comp in comparisons.items():
        metrics[f"{key}.max_abs"] = comp.max_abs
        metrics[f"{key}.max_ulp"] = comp.max_ulp
        metrics[f"{key}.tol_ratio"] = comp.tol_ratio
    return Trial(ok=not failing, summary=f"{vc.view} {list(x.shape)} vs the contiguous copy: {text}",
                 metrics=metrics, counterexample={**example, "failing": failing} if failing else example)


@register_check("noncontiguous_input", dtypes=("float32", "bfloat16"))
def noncontiguous_input(ctx: CheckContext) -> Observation:
    """Transposed, strided, row-padded, channels_last and expanded inputs give what the same module gives on a
    contiguous copy of the same values, forward and backward (within twice the tolerance: another reduction
    order is allowed)."""
    controls: _Controls = {}
    result = find_counterexample(ctx, lambda vc: _layout_trial(ctx, vc, controls), _view_cases(ctx),
                                 _view_strategy(ctx))
    trial = result.failure or result.worst
    assert trial is not None  # at least one explicit case always runs
    metrics = {**trial.metrics, "cases": result.trials}
    if result.ok:
        return Observation(True, f"every memory layout matches the contiguous input over {result.trials} cases; "
                           f"worst: {trial.summary}", metrics)
    # The yardstick is the module itself on contiguous memory, so the layout is the cause by construction.
    metrics["contiguous_control_ok"] = True
    return Observation(False, f"non-contiguous input mishandled: {trial.summary} (the same values in a contiguous "
                       "tensor give another result: the layout is the cause)", metrics, trial.counterexample)


# -- empty batches --------------------------------------------------------------------------------------

def _empty_shapes(ctx: CheckContext) -> list[tuple[int, ...]]:
    """Zero samples in every rank of the layout, for each feature count; zero tokens for token layouts."""
    layout = ctx.spec.layout
    shapes: list[tuple[int, ...]] = []
    for c in ctx.spec.features:
        for rank in layout.ranks:
            shapes.append(input_shape(layout, batch=0, features=c, rank=rank, length=3))
            if layout.reduce == "token" and rank >= 3:
                shapes.append(input_shape(layout, batch=2, features=c, rank=rank, length=0))
    return shapes


def _empty_trial(ctx: CheckContext, shape: tuple[int, ...]) -> Trial:
    params = ctx.params()
    example = {"input": {"shape": list(shape)}, "params": params, "dtype": ctx.dtype_name, "mode": ctx.mode}
    c = shape[ctx.spec.layout.features_axis]
    module = ctx.build(c, params)
    x = torch.empty(shape, dtype=ctx.dtype, device=ctx.device).requires_grad_(True)

    def fail(problem: str) -> Trial:
        return Trial(ok=False, summary=f"{list(shape)}: {problem}", metrics={"shape": list(shape)},
                     counterexample={**example, "problem": problem})

    try:
        y = ctx.forward(module, x)
    except ImplementationError as exc:  # ctx.forward checks the output: a wrong shape, or not a tensor
        return fail(f"forward returned a wrong output: {exc}")
    except Skip:
        raise
    except Exception as exc:
        return fail(f"forward raised {type(exc).__name__}: {exc}")
    if y.dtype != x.dtype:
        return fail(f"output dtype {y.dtype} differs from the input's {x.dtype}")
    if not y.requires_grad:
        return fail("the output is detached from the graph: backward through it is impossible")
    try:
        y.backward(torch.empty_like(y))
    except Exception as exc:
        return fail(f"backward raised {type(exc).__name__}: {exc}")
    if x.grad is None or x.grad.shape != x.shape:
        got = None if x.grad is None else list(x.grad.shape)
        return fail(f"input gradient is {got}, expected an empty tensor of shape {list(shape)}")
    for name, p in module.named_parameters():
        # Nothing to sum over: the parameter gradient is exactly zero (None: untouched, also zero).
        if p.grad is not None and (not torch.isfinite(p.grad).all() or bool((p.grad != 0).any())):
            return fail(f"gradient of {name!r} is not zero over an empty batch: {p.grad.flatten()[:4].tolist()}")
    for name, buf in module.named_buffers():
        if buf.is_floating_point() and not bool(torch.isfinite(buf).all()):
            return fail(f"buffer {name!r} became non-finite after an empty batch")
    return Trial(ok=True, summary=f"{list(shape)} -> empty output of the same shape and dtype, backward ok",
                 metrics={"shape": list(shape)}, counterexample=example)


@register_check("empty_batch", dtypes=("float32", "bfloat16"))
def empty_batch(ctx: CheckContext) -> Observation:
    """A batch with zero rows gives an empty output of the same shape and dtype, and backward works."""
    shapes = _empty_shapes(ctx)
    result = find_counterexample(ctx, lambda s: _empty_trial(ctx, s), shapes)
    if result.ok:
        return Observation(True, f"{result.trials} empty shapes handled: {[list(s) for s in shapes]}",
                           {"cases": result.trials, "shapes": [list(s) for s in shapes]})
    failure = result.failure
    assert failure is not None
    return Observation(False, f"empty batch mishandled: {failure.summary}",
                       {"cases": result.trials, **failure.metrics}, failure.counterexample)
