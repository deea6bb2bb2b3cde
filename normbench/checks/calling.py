"""What the calling-context checks (how frameworks call a module) share: a run of forward and backward that keeps every
tensor it produced, the comparison of two such runs, and the probes they start from.

The arithmetic of one plain call on a fresh module is judged by forward_equivalence and gradient_equivalence.
A calling-context check changes one thing about *how* the module is called (a frozen γ, a strided upstream
gradient, a rank-4 input, a second call, an optimizer step) and compares with the same module called the plain
way, or with the float64 truth called the same way where the context itself changes what is right (a second
call after a state update). A deviation that the plain call shows too is then reported once, by the
equivalence checks, not again by every context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation
from normbench.checks.toolkit.comparison import comparisons_trial, doubled
from normbench.checks.toolkit.search import SearchResult, Trial
from normbench.compare import Comparison, compare
from normbench.inputs import Case, input_shape
from normbench.spec import Tolerance

#: the sets of calling-context checks that every family plans or waives (spec `not_applicable`)
CALLING_CONTEXT_CHECKS: tuple[str, ...] = (
    "frozen_parameters", "gradient_layout", "leading_ranks", "repeated_use", "parameter_updates",
    "module_hygiene", "second_order_gradients", "masked_backward", "nonfinite_containment",
)


@dataclass(frozen=True)
class ContextProbe:
    """A reproducible input and the constructor parameters; what every calling-context check starts from."""

    case: Case
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "params": dict(self.params)}


def context_probes(ctx: CheckContext, batch: int = 4, length: int = 3) -> list[ContextProbe]:
    """One probe per feature count of the spec at the layout's first rank, with γ and β (the affine setting
    the contexts are about) where the implementation can build them."""
    layout = ctx.spec.layout
    affine = True in ctx.affine_settings
    params = tuple(ctx.params(**({"affine": True} if affine else {})).items())
    # Batch statistics need several values per channel (three at least: with two, x̂ = ±1 and dX cancels).
    rows = batch if layout.reduce == "token" else max(batch, 3)
    return [ContextProbe(Case(input_shape(layout, batch=rows, features=c, rank=layout.ranks[0], length=length),
                              "normal", seed=ctx.seed + i), params)
            for i, c in enumerate(ctx.spec.features)]


@dataclass
class Run:
    """What one call sequence left: outputs, the input gradients, the parameter gradients, the state."""

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor | None] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def affine_of(ctx: CheckContext, module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's γ and β by label ("weight", "bias"), those it has."""
    weight, bias = ctx.impl.affine_tensors(module)
    return {label: t for label, t in (("weight", weight), ("bias", bias)) if t is not None}


def state_of(ctx: CheckContext, module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf.detach().clone() for name in ctx.spec.state
            if isinstance(buf := ctx.impl.state_tensor(module, name), torch.Tensor)}


def parameter_grads(ctx: CheckContext, module: nn.Module, run: Run, prefix: str = "") -> None:
    """Record dγ and dβ (None where no gradient reached them) into `run`."""
    for label, tensor in affine_of(ctx, module).items():
        run.grads[f"{prefix}grad_{label}"] = None if tensor.grad is None else tensor.grad.detach().clone()


def gradient_scale(ctx: CheckContext, module: nn.Module, x: torch.Tensor, seed: int) -> dict[str, float]:
    """The magnitude of dX, dγ, dβ for a random unit upstream gradient, on a copy of the module: the scale of a
    gradient whose truth cancels to ~0 for a particular dy (the all-ones dy of a .sum() loss through a batch
    statistic: Σ dy·x̂ = 0), so rounding noise is judged against the size of the terms, not against zero."""
    import copy

    from normbench.inputs import random_like

    clone = copy.deepcopy(module)
    xi = x.detach().clone().contiguous().requires_grad_(True)
    y = ctx.forward(clone, xi)
    y.backward(random_like(y, seed))
    out = {"grad_input": float(xi.grad.abs().max()) if xi.grad is not None and xi.grad.numel() else 0.0}
    for label, tensor in affine_of(ctx, clone).items():
        out[f"grad_{label}"] = float(tensor.grad.abs().max()) if tensor.grad is not None else 0.0
    return out


def compare_runs(ctx: CheckContext, got: Run, want: Run, n: int, m: int, *, doubled_tolerance: bool = True,
                 scales: dict[str, float] | None = None, labels: Iterable[str] | None = None,
                 missing: str = "no gradient") -> tuple[dict[str, Comparison], list[str]]:
    """Every tensor of `want` compared with the same tensor of `got`: outputs and dX over the statistic's
    reduction length `n`, dγ / dβ over `m` terms. With `doubled_tolerance` (the yardstick is the same module
    called the plain way) two results each within tolerance may differ by twice the tolerance. Returns the
    comparisons and the problems that are not a number (a gradient missing where one is due)."""
    forward, backward = ctx.tolerance("forward"), ctx.tolerance("backward")
    if doubled_tolerance:
        forward, backward = doubled(forward), doubled(backward)
    scales = scales or {}
    comparisons: dict[str, Comparison] = {}
    problems: list[str] = []
    wanted = set(labels) if labels is not None else None

    def judge(key: str, a: torch.Tensor, b: torch.Tensor, tol: Tolerance, length: int) -> None:
        scale = scales.get(key.split(".")[-1].split(":")[0])
        if scale is not None:
            scale = max(scale, float(b.abs().max()) if b.numel() and bool(torch.isfinite(b).all()) else 0.0)
        if a.shape != b.shape:
            problems.append(f"{key} has shape {list(a.shape)}, expected {list(b.shape)}")
            return
        comparisons[key] = compare(a, b, ctx.dtype, tol, length, scale=scale)

    for key, b in want.outputs.items():
        if wanted is None or key in wanted:
            a = got.outputs.get(key)
            if a is None:
                problems.append(f"{key} is missing")
            else:
                judge(key, a, b, forward, n)
    for key, b in want.grads.items():
        if wanted is not None and key not in wanted:
            continue
        a = got.grads.get(key)
        if b is None:
            continue
        if a is None:
            problems.append(f"{key}: {missing} reached it")
            continue
        judge(key, a, b, backward, m if "weight" in key or "bias" in key else n)
    for key, b in want.state.items():
        a = got.state.get(key)
        if a is None:
            problems.append(f"buffer {key!r} is missing")
        elif b.is_floating_point():
            judge(f"state:{key}", a, b, forward, n)
        elif not torch.equal(a.cpu(), b.cpu()):
            problems.append(f"buffer {key!r} is {a.tolist()}, expected {b.tolist()}")
    return comparisons, problems


def runs_trial(ctx: CheckContext, comparisons: dict[str, Comparison], problems: list[str], where: str,
               example: dict[str, Any]) -> Trial:
    """A Trial: failed when a comparison or a problem says so; the summary names the context first."""
    if problems:
        metrics: dict[str, Any] = {"tol_ratio": math.inf, "measured": len(comparisons), "context": where}
        return Trial(ok=False, summary=f"{where}: {'; '.join(problems)}", metrics=metrics,
                     counterexample={**example, "context": where, "problems": problems})
    trial = comparisons_trial(ctx, comparisons, {**example, "context": where}, {"context": where})
    trial.summary = f"{where}: {trial.summary}"
    return trial


def context_observation(result: SearchResult, passed: Callable[[Trial], str], failed: str, failed_suffix: str = "",
                        **extra: Any) -> Observation:
    """The Observation of a calling-context check: `passed(trial)` + the worst trial's summary when every case
    held, else `failed`: the failing trial's summary + `failed_suffix`; metrics: the trial's, the case count,
    `extra`."""
    trial = result.failure or result.worst
    assert trial is not None  # at least one explicit case always runs
    metrics = {**trial.metrics, "cases": result.trials, **extra}
    if result.ok:
        return Observation(True, f"{passed(trial)}{trial.summary}", metrics)
    return Observation(False, f"{failed}: {trial.summary}{failed_suffix}", metrics, trial.counterexample)


def worst_trial(trials: list[Trial]) -> Trial:
    """The first failing trial, else the one that used the most tolerance."""
    for trial in trials:
        if not trial.ok:
            return trial
    return max(trials, key=lambda t: float(t.metrics.get("tol_ratio", 0.0)))
