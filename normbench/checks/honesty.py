"""Honesty properties: the module computes what it is asked, every time, and touches nothing it was not
given.

- determinism: the same call twice gives the same bits (forward, gradients, updated state). Races in
  dγ/dβ reductions and atomics make repeated runs differ (Liger#950, tritonbench#1266).
- batch_invariance (reported, never fails): a row's output is bitwise the same alone and inside batches
  of 255 / 256 / 300 rows; kernels that switch reduction strategy with the batch size lose it
  (vllm#48271, sglang#28787; NORMS.md "Batch invariance").
- no_stale_output: a second call on an input mutated in place sees the new values, and does not
  overwrite the first call's output (caches keyed on id(x) / data_ptr(), static output buffers).
- output_not_alias: the output owns its memory, and neither forward nor backward writes into the input
  or the upstream gradient (in-place normalization, inputs reused as scratch space).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.toolkit.bitwise import bitwise_equal, deviation, shares_memory
from normbench.checks.toolkit.comparison import doubled
from normbench.checks.toolkit.reductions import reduction_length
from normbench.checks.toolkit.search import SearchResult, Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import compare
from normbench.inputs import Case, input_shape, random_like


def _probes(ctx: CheckContext, batch: int, length: int) -> list[tuple[Case, dict[str, Any]]]:
    """One deterministic case per feature count of the spec, cycling through the layout's ranks."""
    layout = ctx.spec.layout
    out = []
    for i, c in enumerate(ctx.spec.features):
        shape = input_shape(layout, batch=batch, features=c, rank=layout.ranks[i % len(layout.ranks)],
                            length=length)
        out.append((Case(shape, "normal", seed=ctx.seed + i), ctx.params()))
    return out


def _example(ctx: CheckContext, case: Case, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"input": case.as_dict(), "params": params, "dtype": ctx.dtype_name, "mode": ctx.mode, **extra}


def _observation(what: str, result: SearchResult) -> Observation:
    trial = result.failure or result.worst
    assert trial is not None  # at least one explicit case always runs
    metrics = {**trial.metrics, "cases": result.trials}
    if result.ok:
        return Observation(True, f"{what} over {result.trials} cases; {trial.summary}", metrics)
    return Observation(False, f"{what} does not hold: {trial.summary}", metrics, trial.counterexample)


# -- determinism ----------------------------------------------------------------------------------------

#: Calls compared with the first. Three, so a nondeterminism that strikes one call in two is still seen.
REPEATS = 3


def _run_once(ctx: CheckContext, module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward + backward on a fresh copy of the module; every tensor the call produced."""
    clone = copy.deepcopy(module)  # identical state each call: a BN train step updates its buffers
    xi = x.detach().clone().requires_grad_(True)
    y = ctx.forward(clone, xi)
    y.backward(dy.clone())  # a copy: a backward that writes into dy must not change the next call's input
    out = {"output": y.detach()}
    if xi.grad is not None:
        out["grad_input"] = xi.grad
    for name, p in clone.named_parameters():
        if p.grad is not None:
            out[f"grad_{name}"] = p.grad
    for name, buf in clone.named_buffers():
        out[name] = buf.detach()
    return out


def _determinism_trial(ctx: CheckContext, case: Case, params: dict[str, Any]) -> Trial:
    x = ctx.input(case)
    module = ctx.build(ctx.num_features_of(x), params)
    dy = random_like(x, stable_seed("grad_output", case.seed))
    first = _run_once(ctx, module, x, dy)
    example = _example(ctx, case, params, repeats=REPEATS)
    for call in range(2, REPEATS + 1):
        again = _run_once(ctx, module, x, dy)
        if set(again) != set(first):
            missing = sorted(set(first) ^ set(again))
            return Trial(False, f"call {call} produced a different set of tensors: {missing}",
                         {"call": call}, {**example, "tensors": missing})
        for name, tensor in first.items():
            if not bitwise_equal(tensor, again[name]):
                dev = deviation(tensor, again[name])
                return Trial(False, f"{name} of call {call} differs from call 1 ({list(x.shape)}): "
                             f"{dev.describe()}",
                             {"call": call, "tensor": name, "differing": dev.differing, "max_abs_dev": dev.max_abs},
                             {**example, "tensor": name})
    return Trial(True, f"{REPEATS} calls bitwise equal on {sorted(first)}",
                 {"tensors_compared": len(first), "repeats": REPEATS}, example)


@register_check("determinism")
def determinism(ctx: CheckContext) -> Observation:
    """Repeated calls on the same input (from identical module copies) give bitwise-equal outputs,
    gradients and updated state."""
    # 16 x 4 tokens (or 16 samples of length 8): enough rows that a racy dγ reduction has work to split.
    cases = _probes(ctx, batch=16, length=4 if ctx.spec.layout.reduce == "token" else 8)
    result = find_counterexample(ctx, lambda p: _determinism_trial(ctx, *p), cases)
    return _observation("bitwise determinism", result)


# -- batch invariance -----------------------------------------------------------------------------------

#: Batch sizes around a power of two, where kernels switch strategy (BUGS.md; vllm#48271).
BATCH_SIZES: tuple[int, ...] = (255, 256, 300)
#: Small hidden size: the property is about the batch axis, and 300 rows stay cheap.
INVARIANCE_FEATURES = 64


def _invariance_features(ctx: CheckContext) -> int:
    c = int(ctx.options.get("features", INVARIANCE_FEATURES))
    groups = ctx.params().get("num_groups")
    if groups and c % int(groups):
        c = ctx.spec.features[0]
    return c


@register_check("batch_invariance", dtypes=("float32", "bfloat16"))
def batch_invariance(ctx: CheckContext) -> Observation:
    """Report whether one row's output is bitwise the same alone and inside batches of 255/256/300 rows."""
    layout = ctx.spec.layout
    c = _invariance_features(ctx)
    sizes: Sequence[int] = tuple(ctx.options.get("batch_sizes", BATCH_SIZES))
    shape = input_shape(layout, batch=max(sizes), features=c, rank=layout.ranks[0], length=2)
    case = Case(shape, "normal", seed=ctx.seed)
    params = ctx.params()
    x = ctx.input(case)
    module = ctx.build(c, params)
    semantics = "train" if ctx.training else "eval"
    note = ""
    if ctx.training and layout.reduce == "channel":
        # Train-mode batch statistics make every row depend on its batch by definition (see
        # batch_independence), so bitwise equality is meaningless there; what a kernel can keep invariant
        # is the per-channel map with the running statistics, so that is what is measured.
        module.eval()
        semantics = "eval (running statistics)"
        note = ("; train mode normalizes with batch statistics, so a row alone differs by definition: "
                "measured with the running statistics instead")
    with torch.no_grad():
        alone = ctx.forward(copy.deepcopy(module), x.narrow(0, 0, 1).clone())
        per_size: dict[str, dict[str, float | int]] = {}
        differs: list[int] = []
        for size in sizes:
            inside = ctx.forward(copy.deepcopy(module), x.narrow(0, 0, size).contiguous()).narrow(0, 0, 1)
            dev = deviation(alone, inside)
            per_size[str(size)] = {"differing": dev.differing, "max_abs_dev": dev.max_abs}
            if dev.differing:
                differs.append(size)
    max_dev = max((v["max_abs_dev"] for v in per_size.values()), default=0.0)
    metrics: dict[str, Any] = {"batch_sizes": list(sizes), "differs_at": differs, "max_abs_dev": max_dev,
                               "per_batch_size": per_size, "features": c, "semantics": semantics}
    if not differs:
        summary = (f"row 0 alone is bitwise equal to row 0 inside batches of {list(sizes)} "
                   f"(shape {list(shape[1:])} per row, {semantics}){note}")
        return Observation(True, summary, metrics)
    summary = (f"row 0 alone differs from row 0 inside batches of {differs} (max |difference| {max_dev:.3g}; "
               f"equal at {[s for s in sizes if s not in differs]}; {semantics}){note}")
    return Observation(False, summary, metrics, _example(ctx, case, params, differs_at=differs))


# -- stale outputs --------------------------------------------------------------------------------------

def _stale_trial(ctx: CheckContext, case: Case, params: dict[str, Any]) -> Trial:
    """Three calls on one tensor, mutated in place between them. Not x·2+1: LayerNorm is shift- and
    scale-invariant, so a stale LayerNorm output would still look right after an affine update."""
    x = ctx.input(case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    # The yardstick is the same module (a copy, called in step so its state evolves alike) on a fresh tensor
    # holding the same values: staleness is about the pointer, so a forward deviation that fresh tensors show
    # too is forward_equivalence's to report, not this check's.
    control = copy.deepcopy(module)
    tol = doubled(ctx.tolerance("forward"))
    copies: list[torch.Tensor] = []

    def fresh_copy(t: torch.Tensor) -> torch.Tensor:
        # Kept alive to the end, so no copy's memory is reused: a cache keyed on the pointer never hits.
        copies.append(t.clone())
        return copies[-1]
    n = reduction_length(ctx.spec, tuple(x.shape), params.get("num_groups"))
    example = _example(ctx, case, params)
    fresh = random_like(x, stable_seed("no_stale_output", case.seed))

    def replace_all() -> None:
        x.copy_(fresh)

    def change_one() -> None:
        # One element: a cache keyed on a cheap fingerprint of a few values misses this.
        x.view(-1)[-1] += 1.0

    def fail(problem: str, step: str, **metrics: Any) -> Trial:
        return Trial(False, problem, {"tol_ratio": math.inf, **metrics}, {**example, "step": step})

    with torch.no_grad():
        # Each yardstick before the candidate's call: one that writes into x must not move its own yardstick.
        truth = ctx.forward(control, fresh_copy(x))
        y = ctx.forward(module, x)
        first = compare(y, truth, ctx.dtype, tol, n)
        outputs = [("the first call", y, y.clone())]  # (which call, its output, a snapshot of it)
        worst = first
        for step, mutate in (("every value replaced in place (x.copy_)", replace_all),
                             ("the last element changed in place (+= 1)", change_one)):
            mutate()
            for which, out, snapshot in outputs:
                if not bitwise_equal(out, snapshot):
                    return fail(f"the output of {which} changed when the input was updated ({step}): it "
                                f"aliases the input; {deviation(out, snapshot).describe()}", step)
            truth = ctx.forward(control, fresh_copy(x))
            y = ctx.forward(module, x)
            for which, out, snapshot in outputs:
                if not bitwise_equal(out, snapshot):
                    return fail(f"the output of {which} was overwritten by the call after {step}: "
                                f"{deviation(out, snapshot).describe()}", step)
            comp = compare(y, truth, ctx.dtype, tol, n)
            if not comp.ok:
                # Different from a fresh tensor before any mutation too: not (only) stale.
                note = "" if first.ok else (f" (the first call differed from a fresh tensor's too: "
                                            f"{first.describe('output')})")
                return fail(f"the output after {step} does not match the same module on a fresh tensor with the "
                            "new values (stale?): "
                            f"{comp.describe('output')}{note}", step, tol_ratio=comp.tol_ratio,
                            max_abs=comp.max_abs, first_call_ok=first.ok)
            worst = max(worst, comp, key=lambda cmp: cmp.tol_ratio)
            outputs.append((f"the call after {step}", y, y.clone()))
    return Trial(True, f"worst {worst.describe('output')}",
                 {"tol_ratio": worst.tol_ratio, "max_abs": worst.max_abs}, example)


@register_check("no_stale_output")
def no_stale_output(ctx: CheckContext) -> Observation:
    """After x is mutated in place, f(x) matches what the same module gives on a fresh tensor with the new
    values, and earlier outputs are left as they were."""
    result = find_counterexample(ctx, lambda p: _stale_trial(ctx, *p), _probes(ctx, batch=4, length=3))
    return _observation("outputs follow in-place updates of the input", result)


# -- aliasing -------------------------------------------------------------------------------------------

def _alias_trial(ctx: CheckContext, case: Case, params: dict[str, Any]) -> Trial:
    example = _example(ctx, case, params)
    c = case.shape[ctx.spec.layout.features_axis]

    def fail(problem: str, stage: str) -> Trial:
        return Trial(False, f"{list(case.shape)}: {problem}", {"stage": stage}, {**example, "problem": problem})

    # Forward alone, no gradient on x: an in-place normalization is not stopped by autograd here.
    x = ctx.input(case)
    before = x.clone()
    y = ctx.forward(ctx.build(c, params), x)
    if shares_memory(y, x):
        return fail("the output shares memory with the input (in-place normalization or a view of x)",
                    "forward")
    if not bitwise_equal(x, before):
        return fail(f"forward wrote into its input: {deviation(x, before).describe()}", "forward")
    # Forward and backward: neither may write into x, nor into the upstream gradient the caller owns.
    x = ctx.input(case).requires_grad_(True)
    before = x.detach().clone()
    dy = random_like(x, stable_seed("grad_output", case.seed))
    dy_before = dy.clone()
    y = ctx.forward(ctx.build(c, params), x)
    y.backward(dy)
    if not bitwise_equal(x.detach(), before):
        return fail(f"forward or backward wrote into the input: {deviation(x, before).describe()}", "backward")
    if not bitwise_equal(dy, dy_before):
        return fail(f"backward wrote into the upstream gradient: {deviation(dy, dy_before).describe()}",
                    "backward")
    return Trial(True, "output owns its memory; input and upstream gradient untouched by forward and backward",
                 {}, example)


@register_check("output_not_alias")
def output_not_alias(ctx: CheckContext) -> Observation:
    """The output shares no memory with the input, and forward/backward leave the input and the upstream
    gradient unchanged."""
    layout = ctx.spec.layout
    cases = []
    for i, c in enumerate(ctx.spec.features):
        for rank in layout.ranks:
            shape = input_shape(layout, batch=4, features=c, rank=rank, length=3)
            cases.append((Case(shape, "normal", seed=ctx.seed + i), ctx.params()))
    result = find_counterexample(ctx, lambda p: _alias_trial(ctx, *p), cases)
    return _observation("no aliasing and no writes into the caller's tensors", result)
