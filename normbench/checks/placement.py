"""Properties of residual blocks (the placement families, specs/placement_*.yaml): what the residual stream
does when the sublayers are silenced, and which weights an initialization scales.

Both read the parameter names they need from the property's `options` (the block contract is data in the
spec, reference/placement.py documents it): the checks know no block layout of their own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.toolkit.comparison import comparisons_trial
from normbench.checks.toolkit.probes import Probe, counterexample, feature_probes, probe_strategy
from normbench.checks.toolkit.reference import load_reference
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.implementation import ImplementationError

# -- residual identity -------------------------------------------------------------------------------------


def _named_tensor(ctx: CheckContext, module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise ImplementationError(f"implementation {ctx.impl.name!r}: no tensor attribute {name!r}, which the "
                                  f"{ctx.spec.family} spec's {ctx.prop.name} names (the family's parameter "
                                  "contract)")
    return value


def _identity_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    zeroed = list(ctx.options.get("zeroed", ()))
    with torch.no_grad():
        for name in zeroed:
            _named_tensor(ctx, module, name).zero_()
        y = ctx.forward(module, x)
    # y against x itself: a clean residual path returns its input exactly (x + 0), so the spec's forward
    # bound of one norm evaluation is generous; what is not the identity misses by O(|x|).
    comparisons = {"block(x) vs x": ctx.compare(y, x.detach(), "forward", c)}
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, zeroed=zeroed))


@register_check("residual_identity", dtypes=("float32",))
def residual_identity(ctx: CheckContext) -> Observation:
    """With the sublayers' output projections zeroed (options.zeroed), the block returns its input unchanged."""
    if not ctx.options.get("zeroed"):
        raise ValueError(f"{ctx.spec.path}: properties.{ctx.prop.name}.options.zeroed must name the parameters "
                         "that silence the sublayers")
    result = find_counterexample(ctx, lambda p: _identity_trial(ctx, p), feature_probes(ctx), probe_strategy(ctx))
    trial = result.failure or result.worst
    assert trial is not None
    what = "block(x) == x with the sublayers silenced"
    summary = (f"{what} holds over {result.trials} cases; worst: {trial.summary}" if result.ok
               else f"{what} does not hold: {trial.summary}")
    return Observation(result.ok, summary, {**trial.metrics, "cases": result.trials},
                       None if result.ok else trial.counterexample)


# -- initialization scaling ---------------------------------------------------------------------------------

#: seeds averaged over: an implementation that draws its initial weights in another order than the reference
#: is still judged, on the ratio of norms, which over 4 seeds of a 24x24 matrix is ~2% noisy.
INIT_SEEDS = 4
#: relative tolerance on the ratio ‖W(after)‖/‖W(before)‖ against the reference's. The scaling under test
#: (DeepNorm, N 6 -> 96) is a factor 0.5; an unscaled weight that is scaled, or the reverse, misses by 50%.
RATIO_TOL = 0.1


def _norms(ctx: CheckContext, build: Any, c: int, params: dict[str, Any], names: list[str],
           seed: int) -> dict[str, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(c, params)
    return {name: float(torch.linalg.vector_norm(_named_tensor(ctx, module, name).detach().double()))
            for name in names}


@register_check("init_scaling", dtypes=("float32",))
def init_scaling(ctx: CheckContext) -> Observation:
    """Changing options.vary to options.to rescales the initial weights options.scaled by the reference's
    factor, and leaves options.unscaled alone (DeepNorm's β: FFN, value, output, not q, k)."""
    options = ctx.options
    vary, to = options.get("vary"), options.get("to")
    scaled, unscaled = list(options.get("scaled", ())), list(options.get("unscaled", ()))
    if vary not in ctx.spec.params or to is None or not (scaled or unscaled):
        raise ValueError(f"{ctx.spec.path}: properties.{ctx.prop.name}.options needs vary (a declared parameter), "
                         "to, and scaled / unscaled parameter names")
    names = scaled + unscaled
    c = max(ctx.spec.features)
    before, after = ctx.params(), ctx.params(**{vary: to})
    reference = load_reference(ctx.spec)

    def impl_build(num_features: int, params: dict[str, Any]) -> nn.Module:
        return ctx.build(num_features, params, randomize=False)

    def ref_build(num_features: int, params: dict[str, Any]) -> nn.Module:
        return reference(num_features, **params)

    sums: dict[str, dict[str, float]] = {k: dict.fromkeys(names, 0.0) for k in ("impl0", "impl1", "ref0", "ref1")}
    for i in range(INIT_SEEDS):
        seed = stable_seed("init_scaling", ctx.impl.name, i)
        for key, build, params in (("impl0", impl_build, before), ("impl1", impl_build, after),
                                   ("ref0", ref_build, before), ("ref1", ref_build, after)):
            for name, value in _norms(ctx, build, c, params, names, seed).items():
                sums[key][name] += value
    metrics: dict[str, Any] = {"vary": vary, "from": before[vary], "to": to, "tolerance": RATIO_TOL}
    bad: list[str] = []
    worst = 0.0
    for name in names:
        got = sums["impl1"][name] / sums["impl0"][name] if sums["impl0"][name] else math.inf
        want = sums["ref1"][name] / sums["ref0"][name]
        rel = abs(got - want) / want
        worst = max(worst, rel)
        metrics[f"{name}.ratio"] = got
        metrics[f"{name}.reference_ratio"] = want
        if not rel <= RATIO_TOL:
            kind = "scaled" if name in scaled else "unscaled"
            bad.append(f"{name} ({kind}): |W| changes by x{got:.4g}, reference x{want:.4g}")
    metrics["tol_ratio"] = worst / RATIO_TOL
    head = f"{vary} {before[vary]} -> {to}"
    if bad:
        cex = {"params_before": before, "params_after": after, "num_features": c, "dtype": ctx.dtype_name,
               "seeds": INIT_SEEDS}
        return Observation(False, f"{head}: initial weights scale unlike the reference: " + "; ".join(bad),
                           metrics, cex)
    summary = f"{head}: " + ", ".join(f"{n} x{metrics[f'{n}.ratio']:.4g}" for n in names) + " as the reference"
    return Observation(True, summary, metrics)
