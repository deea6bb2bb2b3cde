"""Normalization statistics: with γ = 1 and β = 0 the output has the family's moments in every group that
shares a statistic (spec.layout.reduce: per token, per channel, per group, per instance).

  centred (LayerNorm, BatchNorm, GroupNorm, InstanceNorm): mean 0 and biased variance σ²/(σ²+ε);
  second (RMSNorm, ScaleNorm): mean square ms/(ms+ε).

The target is exact for ε inside the square root. Other ε conventions (ScaleNorm's max(‖x‖, ε), ε on the
rms) only move the moment between that value and 1, so every value in [target, 1] is accepted; and the
probes run with a tiny ε (MOMENT_EPS), so that the gap is far below the tolerance even where the statistic
is taken of a tensor the check cannot see (the LayerNorm inside a Transformer block). The property
measured is "the output is normalized", not where ε sits (adversarial_inputs judges that). A LayerNorm
with the unbiased variance (torch.std's default) leaves variance (C−1)/C: 0.875 at C = 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.numerics import STABILITY_SAFETY
from normbench.checks.toolkit.probes import fresh_forward
from normbench.checks.toolkit.reductions import statistic_groups
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.compare import accumulate_eps, dtype_eps
from normbench.inputs import Case, case_strategy, input_shape

#: ε of the probes (or the spec's default if smaller): ε/σ² stays below 1e-8 for any group variance above
#: 0.01, far below every tolerance here, so the ε convention cannot matter.
MOMENT_EPS = 1e-10


@dataclass(frozen=True)
class StatProbe:
    """An input and how the affine parameters are set: affine=False, or affine=True with γ = 1, β = 0."""

    case: Case
    params: tuple[tuple[str, Any], ...]
    unit_affine: bool

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "params": dict(self.params),
                "affine": "gamma=1, beta=0" if self.unit_affine else "none"}


def _set_unit_affine(ctx: CheckContext, module: nn.Module, num_features: int) -> bool:
    """γ = 1 (weight = 1 − weight_offset), β = 0. False when the weight is not per channel (ScaleNorm's one
    scalar g is an output scale whose neutral value is √C, not 1: its affine=False probes cover it)."""
    weight, bias = ctx.impl.affine_tensors(module)
    if weight is None or weight.dim() == 0 or weight.shape[-1] != num_features:
        return False
    with torch.no_grad():
        weight.fill_(1.0 - ctx.impl.weight_offset)
        if bias is not None:
            bias.zero_()
    return True


def _probes(ctx: CheckContext) -> list[StatProbe]:
    layout = ctx.spec.layout
    out = []
    for i, c in enumerate(ctx.spec.features):
        rank = layout.ranks[i % len(layout.ranks)]
        # Batch statistics (reduce "channel") need several rows; per-token ones do not mind.
        shape = input_shape(layout, batch=6, features=c, rank=rank, length=4)
        case = Case(shape, "normal", ctx.seed + i)
        for affine in sorted(ctx.affine_settings):
            out.append(StatProbe(case, _params(ctx, affine=affine), affine))
    return out


def _params(ctx: CheckContext, affine: bool) -> tuple[tuple[str, Any], ...]:
    # A hard-coded eps (fixed_params) is judged at its value: the target v/(v+eps) accounts for it.
    eps = ctx.sweep("eps", [min(float(ctx.params()["eps"]), MOMENT_EPS)])[0]
    return tuple(ctx.params(affine=affine, eps=eps).items())


def _strategy(ctx: CheckContext) -> st.SearchStrategy[StatProbe]:
    cases = case_strategy(ctx.spec.layout, ctx.spec.features, ("normal",))
    scaled = st.builds(lambda case, k: replace(case, domain="scaled", scale=10.0 ** k), cases, st.integers(-1, 2))
    return st.builds(lambda case, unit: StatProbe(case, _params(ctx, unit), unit), scaled,
                     st.sampled_from(ctx.affine_settings))


def _moments_trial(ctx: CheckContext, probe: StatProbe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    counterexample = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    if probe.unit_affine and not _set_unit_affine(ctx, module, c):
        return Trial(ok=True, summary="weight is not per channel: gamma = 1 is not neutral, not measured",
                     metrics={"measured": 0}, counterexample=counterexample)
    y, _ = fresh_forward(ctx, module, x)
    eps = float(params["eps"])
    groups_x = statistic_groups(ctx.spec, x.detach().to(torch.float64).cpu(), params)
    groups_y = statistic_groups(ctx.spec, y.detach().to(torch.float64).cpu(), params)
    centred = ctx.spec.layout.moments == "centred"
    if centred:
        v = groups_x.var(dim=1, unbiased=False)
        mean_y = groups_y.mean(dim=1)
        moment_y = groups_y.var(dim=1, unbiased=False)
    else:
        v = groups_x.pow(2).mean(dim=1)
        mean_y = torch.zeros(groups_y.shape[0], dtype=torch.float64)
        moment_y = groups_y.pow(2).mean(dim=1)
    target = v / (v + eps)
    # Per-element bound of the spec's forward tolerance, e_i = eps(dtype)·(rel·|y_i| + abs·S) +
    # eps(acc)·red·sqrt(L)·S, propagated to the group means: |Δmean| ≤ mean(e), and for a second moment
    # |Δm| ≤ 2·mean(|y_i − ȳ|·e_i) + mean(e)².
    tol = ctx.tolerance("forward")
    length = groups_y.shape[1]
    finite = torch.isfinite(groups_y)
    scale = float(groups_y[finite].abs().max()) if finite.any() else 0.0
    # Backward stability, as in adversarial_inputs: a correct kernel may round its mean to the input dtype
    # (torch's CPU half InstanceNorm does), shifting a normalized group by up to eps(dtype)·κ.
    sigma = groups_x.std(dim=1, unbiased=False) if centred else groups_x.pow(2).mean(dim=1).sqrt()
    kappa = groups_x.abs().amax(dim=1) / sigma if centred else torch.ones_like(sigma)
    e = dtype_eps(ctx.dtype) * (tol.rel * groups_y.abs() + tol.abs * scale
                                + STABILITY_SAFETY * kappa.unsqueeze(1)) + \
        accumulate_eps(ctx.dtype) * tol.red * math.sqrt(length) * scale
    mean_tol = e.mean(dim=1)
    centre = mean_y.unsqueeze(1) if centred else torch.zeros_like(mean_y).unsqueeze(1)
    moment_tol = 2 * ((groups_y - centre).abs() * e).mean(dim=1) + mean_tol ** 2
    low = torch.minimum(target, torch.ones_like(target)) - moment_tol
    high = torch.maximum(target, torch.ones_like(target)) + moment_tol
    moment_dev = torch.where(moment_y < low, low - moment_y, torch.where(moment_y > high, moment_y - high,
                                                                          torch.zeros_like(moment_y)))
    mean_dev = (mean_y.abs() - mean_tol).clamp_min(0)
    moment_ratio = (moment_y - target).abs() / (moment_tol + (1 - target).abs())
    mean_ratio = mean_y.abs() / mean_tol.clamp_min(torch.finfo(torch.float64).tiny)
    bad = (~torch.isfinite(moment_y)) | (moment_dev > 0) | (~torch.isfinite(mean_y)) | (mean_dev > 0)
    name = "variance" if centred else "mean square"
    worst_m = int(torch.nan_to_num(moment_ratio, nan=math.inf).argmax())
    worst_mean = int(torch.nan_to_num(mean_ratio, nan=math.inf).argmax())
    ratio = max(float(moment_ratio[worst_m]), float(mean_ratio[worst_mean]) if centred else 0.0)
    metrics: dict[str, Any] = {
        "measured": 1, "groups": int(groups_y.shape[0]), "group_size": length, "tol_ratio": ratio,
        f"worst_{name.replace(' ', '_')}": float(moment_y[worst_m]),
        f"{name.replace(' ', '_')}_target": float(target[worst_m]),
        f"{name.replace(' ', '_')}_tolerance": float(moment_tol[worst_m]),
    }
    parts = [f"{name} {float(moment_y[worst_m]):.6g} (target {float(target[worst_m]):.6g}..1 "
             f"± {float(moment_tol[worst_m]):.3g})"]
    if centred:
        metrics.update({"worst_mean": float(mean_y[worst_mean]), "mean_tolerance": float(mean_tol[worst_mean])})
        parts.append(f"mean {float(mean_y[worst_mean]):.3g} (± {float(mean_tol[worst_mean]):.3g})")
    ok = not bool(bad.any())
    if not ok:
        first = int(bad.nonzero()[0].item())
        counterexample = {**counterexample, "group": first, "group_size": length}
        summary = (f"group {first} of {groups_y.shape[0]} (size {length}): {name} {float(moment_y[first]):.6g}, "
                   f"target {float(target[first]):.6g}..1 ± {float(moment_tol[first]):.3g}")
        if centred:
            summary += f", mean {float(mean_y[first]):.3g} (± {float(mean_tol[first]):.3g})"
        summary += f" [{probe.as_dict()['affine']}]"
    else:
        summary = "worst group: " + ", ".join(parts)
    return Trial(ok=ok, summary=summary, metrics=metrics, counterexample=counterexample)


@register_check("normalization_statistics", dtypes=("float32", "bfloat16"))
def normalization_statistics(ctx: CheckContext) -> Observation:
    """With γ = 1, β = 0 every statistic group of the output has mean 0 and variance σ²/(σ²+ε) (centred
    families) or mean square ms/(ms+ε) (second-moment families)."""
    result = search(ctx, lambda p: _moments_trial(ctx, p), _probes(ctx), _strategy(ctx))
    what = "unit moments per group" if ctx.spec.layout.moments == "centred" else "unit mean square per group"
    return observation(what, result)
