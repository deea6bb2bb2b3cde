"""Module hygiene: what frameworks assume of any nn.Module: a calling context.

- γ and β are registered Parameters (optimizers, FSDP, ``.to()`` and ``state_dict`` see only those), and the
  state buffers are persistent (a ``register_buffer(..., persistent=False)`` running variance is lost in every
  checkpoint).
- A ``state_dict`` round trip into a freshly built module reproduces outputs and state bit for bit, after the
  module has taken training steps (so a step counter kept as a Python int, not a buffer, shows).
- ``copy.deepcopy`` gives an independent module: the copy computes what the original does, and a change to the
  copy's γ reaches the copy's output, not the original's (a closure over ``self`` is shared by the copy).
- ``.to(dtype)`` converts every floating parameter, buffer and tensor attribute.

A norm that deliberately keeps γ / β unregistered (it takes them as forward arguments) declares
``registered_params=False``; the registration part then is an explained skip, and a wrong declaration an error.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.calling import ContextProbe, affine_of, context_probes, state_of
from normbench.checks.toolkit.bitwise import bitwise_equal, deviation
from normbench.checks.toolkit.reductions import reduction_length
from normbench.checks.toolkit.reference import reference_forward
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import compare
from normbench.implementation import ImplementationError
from normbench.inputs import random_like
from normbench.remote.attributes import tensor_attributes
from normbench.remote.proxy import RemoteModule

#: training steps (forward + backward) taken before the round trip, so state has moved off its initial values
STEPS = 2


def _step(ctx: CheckContext, module: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    xi = x.detach().clone().requires_grad_(True)
    y = ctx.forward(module, xi)
    if y.requires_grad:
        y.backward(random_like(y, seed))
    return y.detach()


def _registration_problems(ctx: CheckContext, module: nn.Module) -> list[str]:
    problems = []
    params = {id(p) for p in module.parameters()}
    tensors = affine_of(ctx, module)
    unregistered = [label for label, t in tensors.items() if id(t) not in params]
    if ctx.impl.registered_params is False:
        if tensors and not unregistered:
            raise ImplementationError(f"implementation {ctx.impl.name!r} declares registered_params=False, but "
                                      f"its {', '.join(tensors)} are registered Parameters: drop the declaration")
    else:
        problems += [f"{label} is not a registered Parameter (optimizers, .to() and state_dict do not see it)"
                     for label in unregistered]
    persistent = module.state_dict(keep_vars=True)
    stored = {id(t) for t in persistent.values()}
    for name in ctx.spec.state:
        buf = ctx.impl.state_tensor(module, name)
        if isinstance(buf, torch.Tensor) and id(buf) not in stored:
            problems.append(f"state {name!r} is not in the state_dict (a non-persistent buffer or a plain "
                            "attribute): checkpoints lose it")
    return problems


def _conversion_problems(ctx: CheckContext, params: dict[str, Any], c: int, exempt: set[str]) -> list[str]:
    """Build in float32, convert with .to(target): every floating tensor the module holds has the target dtype
    (but the γ / β named in `exempt`, declared unregistered)."""
    target = next((getattr(torch, d) for d in ("bfloat16", "float16", "float64") if d in ctx.impl.dtypes
                   and getattr(torch, d) != ctx.dtype), None)
    if target is None:
        return []
    module = ctx.impl.build(c, params)
    module.to(device=ctx.device, dtype=torch.float32).to(target)
    problems = []
    # every tensor it holds, plain attributes too: asked over there for a module in the plugin's process
    for prefix, name, dtype, _ in _tensor_attributes(module):
        if dtype.is_floating_point and dtype != target and not (prefix == "" and name in exempt):
            where = f"{prefix}.{name}" if prefix else name
            problems.append(f"{where} is still {str(dtype).removeprefix('torch.')} after "
                            f".to({str(target).removeprefix('torch.')})")
    return problems


def _hygiene_trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}

    def fail(part: str, problem: str) -> Trial:
        return Trial(False, f"{part}: {problem}", {"tol_ratio": float("inf"), "part": part},
                     {**example, "part": part})

    original = ctx.build(c, params)
    problems = _registration_problems(ctx, original)
    if problems:
        return fail("registration", "; ".join(problems))
    original.train(True)
    for step in range(STEPS):
        _step(ctx, original, x, stable_seed("hygiene", probe.case.seed, step))
    original.train(ctx.training)
    # The fresh module is built from another seed: only what the state_dict carries can make it equal.
    fresh = ctx.build(c, params, seed=stable_seed("fresh", ctx.seed))
    try:
        fresh.load_state_dict(original.state_dict())
    except Exception as exc:  # the module's own state_dict must load back into a module built the same way
        return fail("state_dict round trip", f"load_state_dict raised {type(exc).__name__}: {exc}")
    if ctx.impl.registered_params is False:
        # Declared unregistered: the state_dict does not carry γ / β by design, so they are handed over as a
        # framework holding them would; everything else must still come through the state_dict.
        with torch.no_grad():
            for label, tensor in affine_of(ctx, fresh).items():
                tensor.copy_(affine_of(ctx, original)[label])
    copied = copy.deepcopy(original)
    state_before = state_of(ctx, original)
    y_copy = ctx.forward(copied, x).detach()
    for name, buf in state_of(ctx, original).items():
        if not bitwise_equal(buf, state_before[name]):
            return fail("deepcopy", f"calling the copy changed the original's state {name!r}")
    y_fresh = ctx.forward(fresh, x).detach()
    y_original = ctx.forward(original, x).detach()
    for part, y, module in (("state_dict round trip", y_fresh, fresh), ("deepcopy", y_copy, copied)):
        if not bitwise_equal(y, y_original):
            return fail(part, f"the output differs from the original module's: {deviation(y, y_original).describe()}")
        mine, theirs = state_of(ctx, module), state_of(ctx, original)
        for name, buf in theirs.items():
            if name not in mine or not bitwise_equal(mine[name], buf):
                return fail(part, f"state {name!r} differs from the original module's after the same call")
    # The copy must own its parameters: a change to the copy's γ reaches the copy's output, not the original's.
    tensors = affine_of(ctx, copied)
    if tensors:
        label, tensor = next(iter(tensors.items()))
        y_before = ctx.forward(copy.deepcopy(original), x).detach()
        with torch.no_grad():
            tensor.mul_(-1.5).add_(0.25)
        truth = reference_forward(ctx.reference(copy.deepcopy(copied), c, params), x)
        moved = compare(ctx.forward(copy.deepcopy(copied), x).detach(), truth, ctx.dtype, ctx.tolerance("forward"),
                        reduction_length(ctx.spec, tuple(x.shape), params.get("num_groups")))
        if not moved.ok:
            return fail("deepcopy", f"after a change to the copy's {label}, the copy's output is not the truth's "
                                    f"with it ({moved.describe('output')}): the copy shares state with the original")
        if not bitwise_equal(y_before, ctx.forward(copy.deepcopy(original), x).detach()):
            return fail("deepcopy", f"a change to the copy's {label} changed the original's output")
    exempt = {ctx.impl.weight_attr, ctx.impl.bias_attr} if ctx.impl.registered_params is False else set()
    problems = _conversion_problems(ctx, params, c, exempt)
    if problems:
        return fail(".to(dtype)", "; ".join(problems))
    return Trial(True, f"registered, state_dict round trip and deepcopy bitwise equal after {STEPS} training steps, "
                 ".to(dtype) converts every tensor", {"tol_ratio": 0.0, "parts": 4}, example)


@register_check("module_hygiene", dtypes=("float32",))
def module_hygiene(ctx: CheckContext) -> Observation:
    """γ / β registered, state persistent; a state_dict round trip into a fresh module and a deepcopy reproduce
    outputs and state bitwise; the copy owns its parameters; .to(dtype) converts every floating tensor."""
    result = find_counterexample(ctx, lambda p: _hygiene_trial(ctx, p), context_probes(ctx)[:1])
    trial = result.failure or result.worst
    assert trial is not None
    if result.ok:
        return Observation(True, trial.summary, trial.metrics)
    return Observation(False, f"the module breaks what frameworks assume of it: {trial.summary}", trial.metrics,
                       trial.counterexample)


def _tensor_attributes(module: nn.Module) -> list[tuple[str, str, torch.dtype, str | None]]:
    """The tensors a module holds (normbench.remote.attributes), of the module here or, for the plugin's module a
    RemoteModule stands for, as scanned over there (the proxy validates the listing against its mirrors)."""
    return module.tensor_attributes() if isinstance(module, RemoteModule) else tensor_attributes(module)
