"""Stateful trajectories: K training steps of the implementation and of the float64 reference, compared step by
step - outputs, input gradients, parameter gradients and every state buffer of the spec.

PowerNorm, Unified Normalization and MABN change state on every step: a step counter, warm-up phases, windows
of past batch statistics, EMAs of statistics (forward) and of gradient statistics (updated in *backward*). A
single forward cannot see a wrong momentum convention (ONNX's weight on the old value vs torch's on the new),
a forward that reads the running statistic after this step's update instead of before, a smoothed gradient
statistic that is never updated, or a window slot written in the wrong place. Driving both modules through
the same K steps (small warm-ups from `options.params`, so every phase is reached) and comparing everything
after each step names the first step and the first tensor where they part.

Every step feeds a fresh batch with a different scale and offset (so each convention leaves a different
trace), right-padded with a seeded pad mask (True = pad) whose pads hold large finite garbage, and an upstream
gradient that is zero at the pads (a loss that ignores them). Outputs and input gradients are compared at
real tokens only; after the K steps the module is put in eval mode and one more batch compares the eval map
built from the final state.

Options (the spec property's `options`):
  steps    K, the number of training steps (default 6).
  params   constructor overrides for the trajectory, e.g. {warmup: 2, window: 2}.
  outlier  for methods that filter outlier batches (Unified Normalization): {step, scale, counter, window,
           running, params}. A separate trajectory with controlled statistics (every real token's channel c has
           mean square s_c²·f_t² with f_t = 1 + 0.01·t, so consecutive windows barely move) injects at `step` a
           batch `scale` times larger. Besides the reference comparison the check verifies, from the
           implementation's own state, what NORMS.md says the method does: the batch is detected (`counter`
           grows by exactly 1 at that step and at no other), its window slot (`window`[t mod W]) takes the
           running statistic (`running`) from before the step, and the step normalizes - forward and backward -
           with the current batch statistic (compared with autograd of the plain batch-statistic map).

Tolerance: the spec's, per tensor; float state buffers are compared against a scale that is that of the batch
that fed them (x² for second-moment buffers, |dy·γ| for gradient statistics), as running_statistics does,
since a buffer may legitimately be ~0. Rounding errors compound over steps (each step's state feeds the next),
so the bound grows linearly with the step number (STEP_GROWTH); a wrong convention moves values by O(1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import comparisons_trial
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, compare
from normbench.inputs import Case, input_shape, make_input, pad_mask
from normbench.spec import Tolerance

DEFAULT_STEPS = 6
#: The step-k bound is the spec tolerance times (1 + STEP_GROWTH·(k − 1)): every step's state carries the
#: previous steps' rounding (an EMA keeps a fraction of it, an accumulator like PowerNorm's ema_gz all of it).
STEP_GROWTH = 1.0
#: Pads hold N(GARBAGE_MEAN, GARBAGE_STD²): any pad that reaches a statistic moves it by O(1).
GARBAGE_MEAN, GARBAGE_STD = 50.0, 100.0
#: Outlier trajectory: channel scales s_c in [S_LOW, S_HIGH] (their spread sets the recorded variance of
#: sqrt(x2), ~0.1), per-step drift f_t = 1 + DRIFT·t (window AM − GM ~ 1e-4, far below the threshold).
S_LOW, S_HIGH, DRIFT = 0.6, 1.8, 0.01
#: Second-moment state: compared on the scale x² (names as randomize_module's: var / psi / phi, plus x2).
_SECOND_MOMENT_KEYS = ("var", "psi", "phi", "x2")


@dataclass(frozen=True)
class Trajectory:
    """A reproducible K-step run: input shape (rank 3 tokens or rank 2), seed, constructor parameters."""

    shape: tuple[int, ...]
    seed: int
    params: tuple[tuple[str, Any], ...]
    masked: bool
    steps: int
    outlier_step: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "seed": self.seed, "params": dict(self.params),
                               "masked": self.masked, "steps": self.steps}
        if self.outlier_step is not None:
            out["outlier_step"] = self.outlier_step
        return out


# -- inputs ---------------------------------------------------------------------------------------------

def _tokens(ctx: CheckContext, t: torch.Tensor) -> torch.Tensor:
    """(…, C) view with features last (the layouts of these families are; channel-first is moved)."""
    return t.movedim(ctx.spec.layout.features_axis % t.dim(), -1)


def _mask(traj: Trajectory, step: int) -> torch.Tensor | None:
    if not traj.masked or len(traj.shape) != 3:
        return None
    return pad_mask(traj.shape[0], traj.shape[1], stable_seed("stateful_mask", traj.seed, step))


def _with_garbage(ctx: CheckContext, x64: torch.Tensor, mask: torch.Tensor | None, seed: int) -> torch.Tensor:
    if mask is None:
        return x64
    out = x64.clone()
    tokens = _tokens(ctx, out)
    gen = torch.Generator().manual_seed(seed)
    tokens[mask] = GARBAGE_MEAN + GARBAGE_STD * torch.randn(int(mask.sum()), tokens.shape[-1], generator=gen,
                                                            dtype=torch.float64)
    return out


def _regular_batch(ctx: CheckContext, traj: Trajectory, step: int) -> torch.Tensor:
    """Step `step` (0-based): N(0, 1) scaled by 1 + step/4 and offset by ±0.5 or 0, so every statistic moves."""
    base = make_input(Case(traj.shape, "normal", stable_seed("stateful_x", traj.seed, step)), torch.float64, "cpu",
                      ctx.spec.layout)
    return (1.0 + 0.25 * step) * base + 0.5 * ((step % 3) - 1)


def _channel_scales(c: int) -> torch.Tensor:
    return torch.linspace(S_LOW, S_HIGH, c, dtype=torch.float64)


def _controlled_batch(ctx: CheckContext, traj: Trajectory, step: int, mask: torch.Tensor | None,
                      factor: float) -> torch.Tensor:
    """Every channel's real tokens have mean square exactly (s_c·factor)² (in float64)."""
    base = make_input(Case(traj.shape, "normal", stable_seed("stateful_outlier_x", traj.seed, step)),
                      torch.float64, "cpu", ctx.spec.layout)
    tokens = _tokens(ctx, base)
    real = torch.ones(tokens.shape[:-1], dtype=torch.bool) if mask is None else ~mask
    ms = tokens[real].pow(2).mean(dim=0)
    tokens.mul_(_channel_scales(tokens.shape[-1]) * factor / ms.sqrt())
    return base


# -- comparisons ----------------------------------------------------------------------------------------

def _grown(tol: Tolerance, step: int) -> Tolerance:
    k = 1.0 + STEP_GROWTH * (step - 1)
    return Tolerance(rel=tol.rel * k, abs=tol.abs * k, red=tol.red * k)


def _real(ctx: CheckContext, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    tokens = _tokens(ctx, t)
    return tokens.reshape(-1, tokens.shape[-1]) if mask is None else tokens[~mask]


def _gamma_peak(ref: nn.Module) -> float:
    weight = getattr(ref, "weight", None)
    return float(weight.detach().abs().max()) if isinstance(weight, torch.Tensor) and weight.numel() else 1.0


def _buffer_comparison(ctx: CheckContext, name: str, got: torch.Tensor, want: torch.Tensor, tol: Tolerance, n: int,
                       anchor: float) -> Comparison:
    """compare() with S = max(max|truth|, anchor): the anchor rides along as one extra, equal element."""
    extra = torch.tensor([anchor], dtype=torch.float64)
    return compare(torch.cat([got.detach().to(torch.float64).cpu().reshape(-1), extra]),
                   torch.cat([want.detach().to(torch.float64).cpu().reshape(-1), extra]), ctx.dtype, tol, n)


def _state(ctx: CheckContext, module: nn.Module, ref: nn.Module, label: str, tol: Tolerance, n: int,
           x_peak: float, g_peak: float, out: dict[str, Comparison]) -> None:
    for name in ctx.spec.state:
        got, want = ctx.impl.state_tensor(module, name), getattr(ref, name, None)
        if not isinstance(want, torch.Tensor):
            continue
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"state buffer {name!r} of the spec is missing from the module")
        if tuple(got.shape) != tuple(want.shape) and got.numel() == want.numel():
            got = got.reshape(want.shape)  # e.g. the authors' (1, C, 1, 1) running statistic
        if not want.is_floating_point():
            out[f"{label} {name}"] = compare(got.to(torch.float64), want.to(torch.float64), ctx.dtype,
                                             Tolerance(0, 0, 0), 1)
            continue
        anchor = x_peak * x_peak if any(k in name for k in _SECOND_MOMENT_KEYS) else g_peak
        out[f"{label} {name}"] = _buffer_comparison(ctx, name, got, want, tol, n, anchor)


def _buffer(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"options.outlier names buffer {name!r}, which the module does not have")
    return value.detach().clone()


# -- one trajectory -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Outlier:
    step: int
    scale: float
    counter: str
    window: str
    running: str


def _outlier_options(ctx: CheckContext) -> _Outlier | None:
    raw = ctx.options.get("outlier")
    if not raw:
        return None
    return _Outlier(step=int(raw["step"]), scale=float(raw.get("scale", 10.0)), counter=str(raw["counter"]),
                    window=str(raw["window"]), running=str(raw["running"]))


def _batch_statistic_truth(ctx: CheckContext, ref: nn.Module, x: torch.Tensor, dy: torch.Tensor,
                           mask: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and dX of the plain batch-statistic map γ·x̂ + β over the real tokens (float64, autograd)."""
    x64 = x.detach().to(torch.float64).cpu().requires_grad_(True)
    tokens = _real(ctx, x64, mask)
    if ctx.spec.layout.moments == "centred":
        centred = tokens - tokens.mean(dim=0)
        xhat = centred / torch.sqrt(centred.pow(2).mean(dim=0) + eps)
    else:
        xhat = tokens / torch.sqrt(tokens.pow(2).mean(dim=0) + eps)
    weight, bias = getattr(ref, "weight", None), getattr(ref, "bias", None)
    y = xhat if weight is None else xhat * weight.detach() + bias.detach()
    y.backward(_real(ctx, dy.detach().to(torch.float64).cpu(), mask))
    assert x64.grad is not None
    return y.detach(), _real(ctx, x64.grad, mask)


def _run(ctx: CheckContext, traj: Trajectory) -> Trial:
    params = dict(traj.params)
    outlier = _outlier_options(ctx) if traj.outlier_step is not None else None
    c = traj.shape[ctx.spec.layout.features_axis]
    module = ctx.build(c, params, training=True, seed=stable_seed("stateful_build", traj.seed))
    if outlier is not None:
        # Start the running statistic where the controlled batches are, so that after the outlier step its
        # window slot (which takes the running value) does not look like an outlier itself.
        running = getattr(module, outlier.running, None)
        if not isinstance(running, torch.Tensor):
            raise AssertionError(f"options.outlier names buffer {outlier.running!r}, which the module does not have")
        with torch.no_grad():
            running.copy_((_channel_scales(c) ** 2).reshape(running.shape).to(running.dtype))
    ref = ctx.reference(module, c, params)
    ref.train(True)
    comparisons: dict[str, Comparison] = {}
    metrics: dict[str, Any] = {"steps_run": 0}
    fwd, bwd = ctx.tolerance("forward"), ctx.tolerance("backward")
    eps = float(params["eps"])
    for step in range(1, traj.steps + 1):
        mask = _mask(traj, step)
        if outlier is not None:
            factor = outlier.scale if step == traj.outlier_step else 1.0 + DRIFT * step
            clean = _controlled_batch(ctx, traj, step, mask, factor)
        else:
            clean = _regular_batch(ctx, traj, step - 1)
        x = _with_garbage(ctx, clean, mask, stable_seed("stateful_pads", traj.seed, step)).to(ctx.dtype)
        x = x.to(ctx.device).requires_grad_(True)
        gen = torch.Generator().manual_seed(stable_seed("stateful_dy", traj.seed, step))
        dy64 = torch.randn(traj.shape, generator=gen, dtype=torch.float64)
        if mask is not None:
            _tokens(ctx, dy64)[mask] = 0.0
        dy = dy64.to(ctx.dtype).to(ctx.device)
        before = {name: _buffer(module, name) for name in (outlier.counter, outlier.window, outlier.running)} \
            if outlier is not None else {}
        module.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
        y = ctx.forward(module, x, pad_mask=mask)
        y.backward(dy)
        x64 = x.detach().to(torch.float64).cpu().requires_grad_(True)
        truth = ref(x64, pad_mask=mask.cpu()) if mask is not None else ref(x64)
        truth.backward(dy.detach().to(torch.float64).cpu())
        if x.grad is None or x64.grad is None:
            raise AssertionError(f"step {step}: no gradient reached the input")
        real_y, real_truth = _real(ctx, y, mask), _real(ctx, truth, mask)
        n = int(real_y.shape[0])
        label = f"step {step}"
        here: dict[str, Comparison] = {
            f"{label} output": compare(real_y, real_truth, ctx.dtype, _grown(fwd, step), n),
            f"{label} grad_input": compare(_real(ctx, x.grad, mask), _real(ctx, x64.grad, mask), ctx.dtype,
                                           _grown(bwd, step), n),
        }
        for tag, got, want in zip(("grad_weight", "grad_bias"), ctx.impl.affine_tensors(module),
                                  (getattr(ref, "weight", None), getattr(ref, "bias", None))):
            if isinstance(want, torch.Tensor) and want.grad is not None:
                grad = got.grad if got is not None and got.grad is not None else None
                if grad is None:
                    raise AssertionError(f"{label}: no gradient reached the module's {tag[5:]}")
                here[f"{label} {tag}"] = compare(grad.reshape(want.grad.shape), want.grad, ctx.dtype,
                                                 _grown(bwd, step), n)
        x_peak = float(real_truth.detach().abs().max()) if n else 0.0
        x_peak = max(x_peak, float(_real(ctx, x64.detach(), mask).abs().max()) if n else 0.0)
        g_peak = float(dy64.abs().max()) * _gamma_peak(ref)
        _state(ctx, module, ref, label, _grown(fwd, step), n, x_peak, g_peak, here)
        if outlier is not None:
            _outlier_handling(ctx, module, ref, traj, outlier, step, before, x, y, dy, mask, eps, here)
        comparisons.update(here)
        metrics["steps_run"] = step
        if not all(comp.ok for comp in here.values()):
            metrics["first_divergence"] = step
            break
    else:
        module.eval()
        ref.eval()
        x = _regular_batch(ctx, traj, traj.steps).to(ctx.dtype).to(ctx.device)
        with torch.no_grad():
            y = ctx.forward(module, x)
            truth = ref(x.detach().to(torch.float64).cpu())
        n = int(_real(ctx, y, None).shape[0])
        comparisons["eval after the trajectory output"] = compare(y, truth, ctx.dtype,
                                                                 _grown(fwd, traj.steps + 1), n)
    cex = {**traj.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    if "first_divergence" in metrics:
        cex["first_divergence_step"] = metrics["first_divergence"]
    return comparisons_trial(ctx, comparisons, cex, metrics)


def _outlier_handling(ctx: CheckContext, module: nn.Module, ref: nn.Module, traj: Trajectory, outlier: _Outlier,
                      step: int, before: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      dy: torch.Tensor, mask: torch.Tensor | None, eps: float, out: dict[str, Comparison]) -> None:
    """What the method says about an outlier batch, measured on the implementation itself."""
    exact = Tolerance(0, 0, 0)
    counted = _buffer(module, outlier.counter).to(torch.float64) - before[outlier.counter].to(torch.float64)
    expected = 1.0 if step == traj.outlier_step else 0.0
    out[f"step {step} outliers counted ({outlier.counter} increment)"] = compare(
        counted.reshape(-1), torch.full((counted.numel(),), expected, dtype=torch.float64), ctx.dtype, exact, 1)
    if step != traj.outlier_step:
        return
    window = _buffer(module, outlier.window)
    slot = window[step % window.shape[0]]
    running = before[outlier.running].reshape(slot.shape)
    peak = float(running.abs().max())
    out[f"step {step} outlier's window slot holds the previous {outlier.running}"] = _buffer_comparison(
        ctx, outlier.window, slot, running, ctx.tolerance("forward"), 1, peak)
    y_true, dx_true = _batch_statistic_truth(ctx, ref, x, dy, mask, eps)
    n = int(y_true.shape[0])
    out[f"step {step} outlier normalized with the batch statistic (output)"] = compare(
        _real(ctx, y, mask), y_true, ctx.dtype, ctx.tolerance("forward"), n)
    assert x.grad is not None
    out[f"step {step} outlier normalized with the batch statistic (grad_input)"] = compare(
        _real(ctx, x.grad, mask), dx_true, ctx.dtype, ctx.tolerance("backward"), n)


# -- scenarios ------------------------------------------------------------------------------------------

def _base_params(ctx: CheckContext, **overrides: Any) -> tuple[tuple[str, Any], ...]:
    raw = dict(ctx.options.get("params", {}))
    raw.update(overrides)
    return tuple(ctx.params(**raw).items())


def _steps(ctx: CheckContext) -> int:
    return int(ctx.options.get("steps", DEFAULT_STEPS))


def _trajectories(ctx: CheckContext) -> list[Trajectory]:
    layout = ctx.spec.layout
    steps = _steps(ctx)
    features = ctx.spec.features
    out: list[Trajectory] = []
    if 3 in layout.ranks:
        shape = input_shape(layout, batch=4, features=features[0], rank=3, length=6)
        out.append(Trajectory(shape, ctx.seed, _base_params(ctx), masked=ctx.impl.mask_kwarg is not None,
                              steps=steps))
    rank = 2 if 2 in layout.ranks else min(layout.ranks)
    shape = input_shape(layout, batch=12, features=features[-1], rank=rank, length=3)
    # Without affine where the implementation can build it (affine="always": with it).
    out.append(Trajectory(shape, ctx.seed + 1, _base_params(ctx, affine=ctx.affine_settings[-1]), masked=False,
                          steps=steps))
    outlier = ctx.options.get("outlier")
    if outlier:
        params = _base_params(ctx, **dict(outlier.get("params", {})))
        shape = input_shape(layout, batch=4, features=features[0], rank=3 if 3 in layout.ranks else rank, length=6)
        out.append(Trajectory(shape, ctx.seed + 2, params, masked=ctx.impl.mask_kwarg is not None, steps=steps,
                              outlier_step=int(outlier["step"])))
    return out


def _strategy(ctx: CheckContext) -> st.SearchStrategy[Trajectory]:
    layout = ctx.spec.layout
    steps = _steps(ctx)
    maskable = ctx.impl.mask_kwarg is not None and 3 in layout.ranks

    def build(rank: int, batch: int, length: int, c: int, seed: int, masked: bool, affine: bool) -> Trajectory:
        shape = input_shape(layout, batch=batch, features=c, rank=rank, length=length)
        return Trajectory(shape, seed, _base_params(ctx, affine=affine), masked=masked and rank == 3, steps=steps)

    # Several real tokens per channel (two sequences of two at least): with one, a second moment is x² itself.
    return st.builds(build, st.sampled_from(layout.ranks), st.integers(2, 5), st.integers(2, 6),
                     st.sampled_from(ctx.spec.features), st.integers(0, 2**16), st.sampled_from([maskable, False]),
                     st.sampled_from(ctx.affine_settings))


@register_check("stateful_trajectory", differentiates="takes optimizer steps through the module")
def stateful_trajectory(ctx: CheckContext) -> Observation:
    """K training steps (forward + backward, padded batches) follow the float64 reference step by step: outputs,
    input and parameter gradients, every state buffer; then the eval map of the final state. options.outlier
    also injects an outlier batch and checks it is detected and handled as the method says."""
    if not ctx.training:
        raise Skip("a trajectory of training steps: the property is judged in train mode")
    if not ctx.spec.state:
        raise Skip(f"family {ctx.spec.family!r} declares no state buffers")
    result = search(ctx, lambda traj: _run(ctx, traj), _trajectories(ctx), _strategy(ctx))
    return observation(f"{_steps(ctx)}-step training trajectory follows the reference", result)

