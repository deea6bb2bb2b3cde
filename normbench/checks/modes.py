"""Train/eval properties: train-eval consistency, and the running-statistics trajectory of BatchNorm-like
modules (momentum conventions, unbiased running variance, num_batches_tracked, eval and
track_running_stats semantics: pytorch#60528, #31498, #16793, #37823, #156051; d2l-en#2213; mlx#3817).

The CheckContext builds modules in the item's mode; these checks need both modes, so they build in train
mode explicitly and switch copies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import comparisons_trial, doubled
from normbench.checks.toolkit.probes import (
    Probe,
    counterexample,
    feature_probes,
    fresh_forward,
    probe_strategy,
    tokens_view,
)
from normbench.checks.toolkit.reductions import num_groups_of, reduction_length
from normbench.checks.toolkit.reference import reference_forward
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, compare
from normbench.inputs import Case, input_shape, make_input, pad_mask
from normbench.spec import Tolerance

# -- train / eval consistency ---------------------------------------------------------------------------


def _warm_up(ctx: CheckContext, module: nn.Module, case: Case, steps: int) -> None:
    """`steps` train-mode forwards on fresh draws from the probe's own distribution (domain and scale):
    families that switch to running statistics after a warm-up (PowerNorm, Unified Normalization, MABN)
    promise train = eval on data like what they were warmed up on, not on a 10x louder batch (MABN's
    clipped renormalization r then legitimately differs)."""
    module.train(True)
    with torch.no_grad():
        for step in range(steps):
            draw = replace(case, seed=stable_seed("warm_up", case.seed, step))
            ctx.forward(module, ctx.input(draw))


def _train_eval_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params, training=True)
    warmup = int(ctx.options.get("warmup_steps", 0))
    _warm_up(ctx, module, probe.case, warmup)
    # Deep copies: the train step's buffer update must not leak into the eval forward (or vice versa).
    y_train, _ = fresh_forward(ctx, module.train(True), x)
    y_eval, _ = fresh_forward(ctx, module.eval(), x)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    comparisons = {"eval vs train": compare(y_eval, y_train, ctx.dtype, doubled(ctx.tolerance("forward")), n)}
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, warmup_steps=warmup))


@register_check("train_eval_consistency", deployment_sensitive=True)
def train_eval_consistency(ctx: CheckContext) -> Observation:
    """The same module (same state) gives the same output in train and in eval mode on the same input."""
    # options.domains narrows the drawn value domains where the family's promise is conditional (MABN:
    # train = eval only while the renormalization r = sqrt(var/running_var) stays inside its clip).
    domains = tuple(ctx.options.get("domains", ("normal", "scaled")))
    result = search(ctx, lambda p: _train_eval_trial(ctx, p), feature_probes(ctx), probe_strategy(ctx, domains))
    return observation("train output == eval output", result)


# -- running statistics ----------------------------------------------------------------------------------

#: momentum values that separate the conventions: 0 (frozen), 0.1 (torch default), 1 (last batch only);
#: None (cumulative average) is added where the spec declares momentum nullable.
MOMENTA: tuple[float, ...] = (0.0, 0.1, 1.0)
#: train steps per scenario, each with a different known mean, so the weighting convention shows.
TRAIN_STEPS = 3


@dataclass(frozen=True)
class Scenario:
    """Constructor parameters plus the inputs of a short train-then-eval trajectory."""

    params: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]
    seed: int
    #: BUGS.md trigger: a fresh (not randomized) module, one batch with biased variance exactly 2.5
    #: per channel over 16 values; momentum 0.1 gives running_var 1.1667 (1.15 if biased).
    trigger: bool = False
    #: pass a seeded pad mask (True = pad) every step, for implementations that take one: masked
    #: statistics must count real tokens only, in the unbiased n/(n-1) too.
    masked: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "shape": list(self.shape), "seed": self.seed,
                "trigger": self.trigger, "masked": self.masked}


def _step_input(ctx: CheckContext, scenario: Scenario, step: int) -> torch.Tensor:
    if scenario.trigger:
        # 16 values per channel with mean 0 and biased variance exactly 2.5 (in float64; the cast rounds).
        gen = torch.Generator().manual_seed(scenario.seed)
        channel = ctx.spec.layout.features_axis % len(scenario.shape)
        axes = [d for d in range(len(scenario.shape)) if d != channel]
        z = torch.randn(scenario.shape, generator=gen, dtype=torch.float64)
        z = z - z.mean(dim=axes, keepdim=True)
        z = z / z.pow(2).mean(dim=axes, keepdim=True).sqrt()
        return (2.5 ** 0.5 * z).to(ctx.dtype).to(ctx.device)
    # Known, distinct means and spreads per step (d2l-en#2213: "three batches with known means").
    case = Case(scenario.shape, "normal", seed=stable_seed(scenario.seed, step))
    base = make_input(case, torch.float64, "cpu", ctx.spec.layout)
    return (2.0 * step - 1.0 + (1.0 + step) * base).to(ctx.dtype).to(ctx.device)


def _step_mask(ctx: CheckContext, scenario: Scenario, step: int) -> torch.Tensor | None:
    """The (batch, length) pad mask of a masked scenario's step; length is the non-feature axis of rank 3."""
    if not scenario.masked:
        return None
    length_axis = 2 if ctx.spec.layout.features_axis == 1 else 1
    return pad_mask(scenario.shape[0], scenario.shape[length_axis], stable_seed("mask", scenario.seed, step))


def _real(ctx: CheckContext, y: torch.Tensor, truth: torch.Tensor,
          mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs at real tokens only: what a masked module puts at pads is the pad check's business."""
    if mask is None:
        return y, truth
    return tokens_view(ctx, y)[~mask], tokens_view(ctx, truth)[~mask]


def _buffers(ctx: CheckContext, module: nn.Module) -> dict[str, torch.Tensor | None]:
    out: dict[str, torch.Tensor | None] = {}
    for name in ctx.spec.state:
        value = ctx.impl.state_tensor(module, name)
        out[name] = value.detach().clone() if isinstance(value, torch.Tensor) else None
    return out


def _buffer_scale(name: str, x: torch.Tensor) -> float:
    """The scale a running statistic's rounding error is relative to: that of the batch that fed it.

    A fresh module fed a zero-mean batch has a running_mean of ~1e-10, so an error bound relative to the
    buffer itself (compare()'s S = max|truth|) would flag float32 summation noise. Second-moment buffers
    (names as in randomize_module: var / psi / phi) scale with x², the others with x.
    """
    peak = float(x.detach().abs().max().item()) if x.numel() else 0.0
    return peak * peak if any(k in name for k in ("var", "psi", "phi")) else peak


def _compare_buffer(ctx: CheckContext, got: torch.Tensor, want: torch.Tensor, n: int, scale: float) -> Comparison:
    """ctx.compare with S = max(max|truth|, scale): the scale rides along as one extra, equal element."""
    anchor = torch.tensor([scale], dtype=torch.float64)
    return ctx.compare(torch.cat([got.detach().to(torch.float64).cpu().reshape(-1), anchor]),
                       torch.cat([want.detach().to(torch.float64).cpu().reshape(-1), anchor]), "forward", n)


def _state_vs_reference(ctx: CheckContext, module: nn.Module, ref: nn.Module, x: torch.Tensor, n: int,
                        label: str, out: dict[str, Comparison]) -> None:
    for name in ctx.spec.state:
        got, want = ctx.impl.state_tensor(module, name), getattr(ref, name, None)
        if not isinstance(want, torch.Tensor):
            continue  # a buffer the reference does not keep (untracked): checked for immutability instead
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"buffer {name!r} is missing ({label})")
        if want.is_floating_point():
            out[f"{label} {name}"] = _compare_buffer(ctx, got, want, n, _buffer_scale(name, x))
        else:
            # Counters are exact: torch increments num_batches_tracked on every train step.
            out[f"{label} {name}"] = compare(got.to(torch.float64), want.to(torch.float64), ctx.dtype,
                                             Tolerance(0, 0, 0), 1)


def _unchanged(before: dict[str, torch.Tensor | None], after: dict[str, torch.Tensor | None], label: str,
               ctx: CheckContext, out: dict[str, Comparison]) -> None:
    """Buffers that must not move compared bit for bit (zero tolerance)."""
    for name, old in before.items():
        new = after.get(name)
        if old is None and new is None:
            continue
        if old is None or new is None or old.shape != new.shape:
            raise AssertionError(f"buffer {name!r} appeared, vanished or changed shape ({label})")
        out[f"{label} {name}"] = compare(new.to(torch.float64), old.to(torch.float64), ctx.dtype,
                                         Tolerance(0, 0, 0), 1)


def _running_trial(ctx: CheckContext, scenario: Scenario) -> Trial:
    params = dict(scenario.params)
    c = scenario.shape[ctx.spec.layout.features_axis]
    module = ctx.build(c, params, randomize=not scenario.trigger, seed=scenario.seed, training=True)
    ref = ctx.reference(module, c, params)
    ref.train(True)
    n = reduction_length(ctx.spec, scenario.shape, num_groups_of(params))
    tracked = bool(params.get("track_running_stats", True))
    comparisons: dict[str, Comparison] = {}
    initial = _buffers(ctx, module)
    metrics: dict[str, Any] = {}
    steps = 1 if scenario.trigger else TRAIN_STEPS
    for step in range(steps):
        x = _step_input(ctx, scenario, step)
        mask = _step_mask(ctx, scenario, step)
        with torch.no_grad():
            y = ctx.forward(module, x, pad_mask=mask)
        truth = reference_forward(ref, x, mask)
        comparisons[f"train step {step + 1} output"] = ctx.compare(*_real(ctx, y, truth, mask), "forward", n)
        _state_vs_reference(ctx, module, ref, x, n, f"train step {step + 1}", comparisons)
    if scenario.trigger and isinstance(ctx.impl.state_tensor(module, "running_var"), torch.Tensor):
        metrics["trigger.running_var"] = float(ctx.impl.state_tensor(module, "running_var").double().mean().item())
        metrics["trigger.reference_running_var"] = float(ref.running_var.double().mean().item())
    if not tracked:
        # track_running_stats=False: no step may touch a buffer the module happens to keep.
        _unchanged(initial, _buffers(ctx, module), "after train steps (untracked)", ctx, comparisons)
    # Eval: tracked -> running statistics, buffers frozen; untracked -> batch statistics (pytorch#16793).
    module.eval()
    ref.eval()
    before = _buffers(ctx, module)
    x = _step_input(ctx, scenario, steps)
    mask = _step_mask(ctx, scenario, steps)
    with torch.no_grad():
        y = ctx.forward(module, x, pad_mask=mask)
    comparisons["eval output"] = ctx.compare(*_real(ctx, y, reference_forward(ref, x, mask), mask), "forward", n)
    _unchanged(before, _buffers(ctx, module), "eval step", ctx, comparisons)
    momentum = params.get("momentum")
    cex = {**scenario.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode, "train_steps": steps}
    return comparisons_trial(ctx, comparisons, cex, {"momentum": momentum, **metrics})


def _shape(ctx: CheckContext, c: int, values_per_channel: int) -> tuple[int, ...]:
    """A shape with `values_per_channel` values per channel: (V, C) when rank 2 is accepted, else (V/4, C, 4)."""
    layout = ctx.spec.layout
    if 2 in layout.ranks:
        return input_shape(layout, batch=values_per_channel, features=c, rank=2)
    rank = min(layout.ranks)
    return input_shape(layout, batch=values_per_channel // 4, features=c, rank=rank, length=4)


def _momenta(ctx: CheckContext) -> list[float | None]:
    out: list[float | None] = list(MOMENTA)
    if ctx.spec.params["momentum"].nullable:
        out.append(None)
    return out


def _scenarios(ctx: CheckContext) -> list[Scenario]:
    c = ctx.spec.features[0]
    out = [Scenario(tuple(ctx.params(momentum=0.1).items()), _shape(ctx, c, 16), ctx.seed, trigger=True)]
    for i, momentum in enumerate(_momenta(ctx)):
        shape = _shape(ctx, ctx.spec.features[i % len(ctx.spec.features)], 12)
        out.append(Scenario(tuple(ctx.params(momentum=momentum).items()), shape, ctx.seed + 1 + i))
    if "track_running_stats" in ctx.spec.params:
        out.append(Scenario(tuple(ctx.params(track_running_stats=False).items()), _shape(ctx, c, 12),
                            ctx.seed + 17))
    if ctx.impl.mask_kwarg is not None and 3 in ctx.spec.layout.ranks:
        shape = input_shape(ctx.spec.layout, batch=4, features=c, rank=3, length=6)
        for i, momentum in enumerate((0.1, None) if ctx.spec.params["momentum"].nullable else (0.1,)):
            out.append(Scenario(tuple(ctx.params(momentum=momentum).items()), shape, ctx.seed + 23 + i,
                                masked=True))
    return out


def _scenario_strategy(ctx: CheckContext) -> st.SearchStrategy[Scenario]:
    layout = ctx.spec.layout
    tracks = [True, False] if "track_running_stats" in ctx.spec.params else [True]

    def build(momentum: float | None, track: bool, rank: int, batch: int, length: int, c: int,
              seed: int) -> Scenario:
        overrides: dict[str, Any] = {"momentum": momentum}
        if "track_running_stats" in ctx.spec.params:
            overrides["track_running_stats"] = track
        shape = input_shape(layout, batch=batch, features=c, rank=rank, length=length)
        return Scenario(tuple(ctx.params(**overrides).items()), shape, seed)

    # At least four values per channel: with one, train mode has no variance, and with two a channel whose
    # values nearly coincide is ill-conditioned (degenerate sizes and conditioning have checks of their own).
    return st.builds(build, st.sampled_from(_momenta(ctx)), st.sampled_from(tracks), st.sampled_from(layout.ranks),
                     st.integers(4, 8), st.integers(1, 4), st.sampled_from(ctx.spec.features), st.integers(0, 2**16))


@register_check("running_statistics", deployment_sensitive=True)
def running_statistics(ctx: CheckContext) -> Observation:
    """Running statistics follow the float64 reference step by step for momentum 0 / 0.1 / 1 / None;
    num_batches_tracked counts train steps; eval never changes a buffer; untracked eval uses the batch."""
    if "momentum" not in ctx.spec.params:
        raise Skip(f"family {ctx.spec.family!r} declares no momentum parameter: no running statistics")
    result = search(ctx, lambda s: _running_trial(ctx, s), _scenarios(ctx), _scenario_strategy(ctx))
    return observation("running statistics follow the reference", result)

