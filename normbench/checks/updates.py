"""Parameter updates between calls (an optimizer step, load_state_dict): a calling context.

An optimizer step changes γ and β in place under no_grad; a framework may assign a new Parameter (weight tying,
re-initialization, PEFT merges) or call ``load_state_dict`` between calls. A module that caches its weights for
inference (a float32 copy made at the first call, a packed layout keyed on the tensor's identity or data
pointer), or that keeps a private reference to the Parameter it was built with, then computes the next call
with the old values. Each update kind is judged in the item's mode under grad mode, ``torch.no_grad()`` and
``torch.inference_mode()``: a call, the update, a second call on the same input, which must equal the float64
truth with the new values (the reference taken through the same sequence, so state updates match).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.calling import (
    ContextProbe,
    Run,
    affine_of,
    compare_runs,
    context_observation,
    context_probes,
    runs_trial,
    worst_trial,
)
from normbench.checks.toolkit.reductions import reduction_length
from normbench.checks.toolkit.reference import reference_forward
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.implementation import ImplementationError

UPDATE_KINDS = ("in-place step", "new Parameter", "load_state_dict")
GRAD_CONTEXTS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "grad mode": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _state_key(module: nn.Module, tensor: torch.Tensor) -> str | None:
    for key, value in module.state_dict(keep_vars=True).items():
        if value is tensor:
            return key
    return None


def _owner(module: nn.Module, tensor: torch.Tensor) -> tuple[nn.Module, str] | None:
    """The submodule and attribute name under which `tensor` is registered as a Parameter."""
    for sub in module.modules():
        for attr, param in sub.named_parameters(recurse=False):
            if param is tensor:
                return sub, attr
    return None


def _new_values(tensor: torch.Tensor, seed: int) -> torch.Tensor:
    """Other values for γ or β: a step of about 30% of their size, as a large learning rate would make."""
    gen = torch.Generator().manual_seed(seed)
    step = 0.3 * torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
    return (tensor.detach().to(torch.float64).cpu() + step).to(tensor.dtype).to(tensor.device)


def _update(ctx: CheckContext, module: nn.Module, kind: str, seed: int) -> dict[str, torch.Tensor]:
    """Apply one update kind to γ and β; returns the new values by label (as stored on the module)."""
    new: dict[str, torch.Tensor] = {}
    for i, (label, tensor) in enumerate(affine_of(ctx, module).items()):
        values = _new_values(tensor, seed + i)
        new[label] = values
        if kind == "in-place step":
            with torch.no_grad():
                tensor.add_(values - tensor)
        elif kind == "new Parameter":
            owner = _owner(module, tensor)
            if owner is None:
                raise Skip(f"{ctx.impl.name!r} keeps its {label} as no registered Parameter, so there is no "
                           "Parameter to reassign (module_hygiene judges the registration)")
            setattr(owner[0], owner[1], nn.Parameter(values.clone(), requires_grad=tensor.requires_grad))
        else:
            key = _state_key(module, tensor)
            if key is None:
                raise Skip(f"{ctx.impl.name!r} keeps its {label} out of its state_dict (module_hygiene judges "
                           "the registration)")
            state = module.state_dict()
            state[key] = values.clone()
            module.load_state_dict(state)
    return new


def _set_reference(ctx: CheckContext, ref: nn.Module, new: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for label, values in new.items():
            target = getattr(ref, label, None)
            if isinstance(target, torch.Tensor):
                offset = ctx.impl.weight_offset if label == "weight" else 0.0
                target.copy_(values.to(torch.float64).cpu() + offset)


def _update_trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    n = reduction_length(ctx.spec, tuple(x.shape), params.get("num_groups"))
    trials = []
    for grad_context in GRAD_CONTEXTS:
        for i, kind in enumerate(UPDATE_KINDS):
            module = ctx.build(c, params)
            if not affine_of(ctx, module):
                raise Skip(f"implementation {ctx.impl.name!r} has no γ or β to update")
            ref = ctx.reference(module, c, params)
            where = f"{kind} under {grad_context} ({'train' if ctx.training else 'eval'} mode)"
            with GRAD_CONTEXTS[grad_context]():
                first = ctx.forward(module, x).detach().clone()
            truth_first = reference_forward(ref, x)
            try:
                new = _update(ctx, module, kind, ctx.seed + 17 * i)
            except (Skip, ImplementationError):
                raise
            except Exception as exc:  # a state_dict that does not load back into the module that made it
                trials.append(Trial(False, f"{where}: the update raised {type(exc).__name__}: {exc}",
                                    {"tol_ratio": float("inf"), "context": where}, probe.as_dict()))
                break
            _set_reference(ctx, ref, new)
            with GRAD_CONTEXTS[grad_context]():
                second = ctx.forward(module, x).detach().clone()
            truth_second = reference_forward(ref, x)
            got = Run(outputs={"first call": first, "after the update": second})
            want = Run(outputs={"first call": truth_first, "after the update": truth_second})
            comparisons, problems = compare_runs(ctx, got, want, n, 1, doubled_tolerance=False)
            if torch.equal(first, second) and not torch.equal(truth_first, truth_second):
                problems.append("the output after the update is bitwise the output before it: the module computed "
                                "with its old γ / β")
            example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                                       "update": kind, "grad_context": grad_context}
            trials.append(runs_trial(ctx, comparisons, problems, where, example))
            if not trials[-1].ok:
                return trials[-1]
    return worst_trial(trials)


@register_check("parameter_updates", dtypes=("float32", "bfloat16"))
def parameter_updates(ctx: CheckContext) -> Observation:
    """After an in-place optimizer step, a newly assigned Parameter or a load_state_dict, under grad mode,
    no_grad and inference_mode, the next output is the float64 truth's with the new γ and β."""
    # The spec's first feature count: a cache or a stale reference is a matter of logic, not of size, and each
    # probe costs nine call sequences.
    result = find_counterexample(ctx, lambda p: _update_trial(ctx, p), context_probes(ctx)[:1])
    return context_observation(
        result, lambda t: f"{len(UPDATE_KINDS)} update kinds under {len(GRAD_CONTEXTS)} grad contexts reach the "
                          f"next output over {result.trials} cases; worst: ",
        "an update of γ / β between calls is not seen")
