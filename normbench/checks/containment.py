"""Non-finite containment, a calling context: one row holding +inf or NaN leaves every other row alone.

An overflow in one token (a half-precision activation past its range, a diverging sequence) should cost that
token, not the batch. Kernels lose this with batch-global arithmetic (BUGS.md, "non-finite containment"): an
overflow guard that pre-scales by the amax of the whole tensor (inf / inf = NaN everywhere, finite / inf = 0), a
global ``isfinite`` test that zeroes or skips the batch, a reduction shared across rows (a variance floor from
the batch mean). The statistic a family defines never mixes rows:

- per-token families (LayerNorm, RMSNorm, ...): the unit is one token; every other token must not move;
- per-sample families (GroupNorm, InstanceNorm): the unit is one sample;
- batch-statistic families, eval mode only: eval is the fixed per-channel map, so the unit is one token (one
  sample for channel-first (N, C) inputs); in train the statistics are the batch's by definition;
- transformer blocks (spec option ``unit: sample``): attention mixes the tokens of a sequence, so a NaN token
  reaches its sequence through the attention weights; the unit is one sample of the batch.

One element of one unit holds +inf, then NaN (separate calls). The yardstick is the same module on the same
input with that element finite (the input as drawn), with the same random upstream gradient: the outputs and dX
of every other unit must be equal (twice the tolerance: two calls of one module) and finite. dγ and dβ sum over
every row, the poisoned one included, so they are legitimately non-finite and not judged; nor is the poisoned
unit itself.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.calling import ContextProbe, Run, compare_runs, context_probes, runs_trial, worst_trial
from normbench.checks.toolkit.reductions import reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import Case, random_like

#: what the poisoned element holds, one call each
POISONS: tuple[str, ...] = ("+inf", "nan")
_VALUES = {"+inf": math.inf, "nan": math.nan}
UNITS = ("token", "sample")


def unit_of(ctx: CheckContext) -> str:
    """What one row is: the spec option `unit`, else a token for per-token and batch-statistic families (whose
    eval is a per-element map) and a sample for per-sample families (GroupNorm, InstanceNorm)."""
    unit = ctx.options.get("unit")
    if unit is None:
        unit = "sample" if ctx.spec.layout.reduce in ("group", "instance") else "token"
    if unit not in UNITS:
        raise ValueError(f"{ctx.spec.path}: properties.{ctx.prop.name}.options.unit is {unit!r}, not one of {UNITS}")
    return unit


def rows_view(ctx: CheckContext, t: torch.Tensor, unit: str) -> torch.Tensor:
    """`t` as (rows, elements): one row per token (features last, leading axes flattened) or per sample."""
    if unit == "sample":
        return t.reshape(t.shape[0], -1)
    return t.movedim(ctx.spec.layout.features_axis, -1).reshape(-1, t.shape[ctx.spec.layout.features_axis])


@dataclass(frozen=True)
class PoisonProbe:
    """An input, the unit, which row is poisoned and at which element."""

    probe: ContextProbe
    unit: str
    row: int
    element: int

    @property
    def case(self) -> Case:
        return self.probe.case

    def as_dict(self) -> dict[str, Any]:
        return {**self.probe.as_dict(), "unit": self.unit, "row": self.row, "element": self.element}


def _probes(ctx: CheckContext) -> list[PoisonProbe]:
    """One per feature count of the spec (context_probes: batch 4, length 3): the middle row, its middle element."""
    unit = unit_of(ctx)
    out = []
    for probe in context_probes(ctx):
        shape = probe.case.shape
        rows = rows_view(ctx, torch.empty(shape, device="meta"), unit)
        out.append(PoisonProbe(probe, unit, rows.shape[0] // 2, rows.shape[1] // 2))
    return out


def _flat_index(ctx: CheckContext, probe: PoisonProbe, shape: torch.Size) -> int:
    """Where the poisoned element lies in the flattened input (rows_view may copy a channel-first tensor)."""
    positions = torch.arange(shape.numel()).reshape(shape)
    return int(rows_view(ctx, positions, probe.unit)[probe.row, probe.element])


def _call(ctx: CheckContext, module: nn.Module, x64: torch.Tensor, dy64: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    clone = copy.deepcopy(module)
    x = x64.to(ctx.dtype).to(ctx.device).requires_grad_(True)
    y = ctx.forward(clone, x)
    if not y.requires_grad:
        raise AssertionError("the output does not require grad although the input does")
    y.backward(dy64.to(y.dtype).to(y.device))
    if x.grad is None:
        raise AssertionError("no gradient reached the input")
    return y.detach(), x.grad.detach()


def _others(ctx: CheckContext, probe: PoisonProbe, output: torch.Tensor, grad: torch.Tensor) -> Run:
    keep = torch.ones(rows_view(ctx, output, probe.unit).shape[0], dtype=torch.bool)
    keep[probe.row] = False
    return Run(outputs={"output": rows_view(ctx, output, probe.unit)[keep.to(output.device)]},
               grads={"grad_input": rows_view(ctx, grad, probe.unit)[keep.to(grad.device)]})


def _trial(ctx: CheckContext, probe: PoisonProbe) -> Trial:
    params = dict(probe.probe.params)
    x64 = ctx.input(probe.case).to(torch.float64).cpu()
    module = ctx.build(ctx.num_features_of(x64), params)
    dy64 = random_like(x64, stable_seed("containment_dy", probe.case.seed))
    n = reduction_length(ctx.spec, tuple(x64.shape), params.get("num_groups"))
    example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    want = _others(ctx, probe, *_call(ctx, module, x64, dy64))
    problems = [f"{key} of the other {probe.unit}s is not finite on the finite input"
                for key, t in (*want.outputs.items(), *want.grads.items())
                if t is not None and not bool(torch.isfinite(t).all())]
    if problems:
        return runs_trial(ctx, {}, problems, "finite input", example)
    trials = []
    for poison in POISONS:
        poisoned = x64.clone()
        poisoned.view(-1)[_flat_index(ctx, probe, x64.shape)] = _VALUES[poison]
        got = _others(ctx, probe, *_call(ctx, module, poisoned, dy64))
        comparisons, problems = compare_runs(ctx, got, want, n, 1)
        where = f"one {probe.unit} (row {probe.row}) holding {poison}"
        trials.append(runs_trial(ctx, comparisons, problems, where, {**example, "poison": poison}))
        if not trials[-1].ok:
            break
    return worst_trial(trials)


@register_check("nonfinite_containment", dtypes=("float32", "bfloat16"))
def nonfinite_containment(ctx: CheckContext) -> Observation:
    """One token (or sample) holding +inf, then NaN, leaves every other one's output and dX as on the finite
    input (same module, twice the tolerance); dγ and dβ, which sum over every row, are not judged."""
    result = find_counterexample(ctx, lambda p: _trial(ctx, p), _probes(ctx))
    trial = result.failure or result.worst
    assert trial is not None
    metrics = {**trial.metrics, "cases": result.trials}
    if result.ok:
        return Observation(True, f"a non-finite {unit_of(ctx)} stays contained over {result.trials} cases "
                           f"({' and '.join(POISONS)}); worst: {trial.summary}", metrics)
    return Observation(False, f"a non-finite {unit_of(ctx)} reaches the others: {trial.summary}", metrics,
                       trial.counterexample)
