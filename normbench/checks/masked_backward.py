"""Masks in backward and unusual padding, a calling context: non-finite pads with backward, and masks that
are not right padding.

pad_mask_independence judges the forward on right-padded batches. Training also runs the backward, and real
batches are not all right-padded: fairseq pads the source on the left, packed or chunked batches leave pads in
the middle of a sequence, and a bucket can hold a sequence that is nothing but padding. Three bug classes hide
there (BUGS.md, "masks in backward and unusual padding"):

- statistics computed as ``x * mask``: a NaN or inf pad times 0 is NaN, in the forward or only in the backward;
- the mask converted to lengths (``arange(T) < lengths``): right for right padding, wrong tokens for left
  padding and gaps;
- pads replaced by ``where(mask, 0, x)`` in the forward only, while the backward recomputes from, or saves, the
  raw x: dγ = Σ dy·x̂ then holds 0·NaN = NaN, and so may dX through the statistic;

and a fourth one on the all-pad sequence: statistics combined per sequence (count 0, 0/0 = NaN), or the upstream
gradient at pads summed into dβ.

Train mode only: outputs at pads are 0 there and the statistics see the real tokens; eval is the fixed
per-channel map at every position, pads included, so a pad legitimately feeds dγ in eval.

Every case is a forward and a backward with a random upstream gradient everywhere, pads included (what a
masked loss multiplies by 0 must not matter). The yardstick is the same module called the plain way, never the
float64 truth, so an arithmetic deviation is reported once, by the equivalence checks:

- a non-finite fill (NaN, +inf, -inf in every pad) against the same module, same mask, the pads holding zeros;
- a left-padded or gapped mask (zero pads) against the same real tokens right-padded: each sequence's real
  tokens moved to its front in their order, the upstream gradient moved alike (the statistics run over the
  batch's real tokens, whatever their positions);
- a mask with one sequence entirely padding against the same batch without that sequence.

Judged: the outputs and dX at real tokens, dγ, dβ and the state buffers (within twice the tolerance: two calls
of one module, each within the bound of the truth); and everything must be finite, outputs and dX at the pads
included (a NaN dX at a pad reaches the weight gradient of the layer below, dW = Σ dXᵀ·h over every position).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.calling import Run, compare_runs, parameter_grads, runs_trial, state_of, worst_trial
from normbench.checks.padding import from_tokens, token_view
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import Case, input_shape, make_input, pad_mask, random_like

#: the mask shapes, each a case: right padding (the fills only), then those pad_mask_independence never builds
MASK_SHAPES: tuple[str, ...] = ("right", "left", "gapped", "all_pad")
#: what every pad holds in the fill runs (zeros in the yardstick)
NONFINITE_FILLS: tuple[str, ...] = ("nan", "+inf", "-inf")
#: the probe size: three sequences of six positions (a gap needs real tokens on both sides)
BATCH, LENGTH = 3, 6
_LABELS = {"grad_weight": "dgamma", "grad_bias": "dbeta"}
_FILL_VALUES = {"zeros": 0.0, "nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


def mask_of(shape: str, batch: int, length: int, seed: int) -> torch.Tensor:
    """The (batch, length) pad mask (True = pad) of one mask shape, deterministic in `seed`.

    right: inputs.pad_mask (every sequence keeps a real token); left: the same pads at the start of each
    sequence (fairseq's left_pad_source); gapped: the same number of pads (at most length − 2) between real
    tokens, one block in the middle for even sequences and every other position for odd ones; all_pad: right
    padding with the middle sequence entirely padding, the others keeping real tokens.
    """
    right = pad_mask(batch, length, seed)
    if shape == "right":
        return right
    if shape == "left":
        return right.flip(1)
    if shape == "all_pad":
        if batch < 2:
            raise ValueError("an all-pad sequence needs a batch of two sequences at least")
        out = right.clone()
        out[batch // 2] = True
        return out
    if shape == "gapped":
        if length < 3:
            raise ValueError("a gap needs three positions at least")
        out = torch.zeros(batch, length, dtype=torch.bool)
        for b in range(batch):
            pads = min(int(right[b].sum()), length - 2)
            if b % 2 == 0:
                out[b, 1:1 + pads] = True  # real tokens on both sides of one block of pads
            else:
                out[b, list(range(1, length, 2))[:pads]] = True  # every other position
        if not out.any():
            out[0, 1] = True
        return out
    raise ValueError(f"unknown mask shape {shape!r}; known: {MASK_SHAPES}")


@dataclass(frozen=True)
class MaskProbe:
    """A padded sequence input and its mask shape: what one trial starts from."""

    case: Case
    mask_seed: int
    shape: str
    length: int
    params: tuple[tuple[str, Any], ...]

    @property
    def mask(self) -> torch.Tensor:
        return mask_of(self.shape, self.case.shape[0], self.length, self.mask_seed)

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "mask_seed": self.mask_seed, "mask_shape": self.shape,
                "mask": self.mask.int().tolist(), "params": dict(self.params)}


def _probes(ctx: CheckContext) -> list[MaskProbe]:
    """One probe per feature count of the spec and mask shape: (3, 6, C) tokens (or (3, C, 6) channel-first)."""
    if 3 not in ctx.spec.layout.ranks:
        raise Skip(f"family {ctx.spec.family!r} takes no rank-3 (sequence) input, so nothing is padded")
    affine = True in ctx.affine_settings
    params = tuple(ctx.params(**({"affine": True} if affine else {})).items())
    out = []
    for i, c in enumerate(ctx.spec.features):
        shape = input_shape(ctx.spec.layout, batch=BATCH, features=c, rank=3, length=LENGTH)
        for mask_shape in MASK_SHAPES:
            out.append(MaskProbe(Case(shape, "normal", seed=ctx.seed + i), ctx.seed + 300 + i, mask_shape, LENGTH,
                                 params))
    return out


@dataclass
class _Call:
    """One forward + backward: the full tensors (to check finiteness) and the mask they ran with."""

    output: torch.Tensor
    grad_input: torch.Tensor
    run: Run  # parameter gradients and state (outputs / grad_input are filled by `_at_real`)
    mask: torch.Tensor


def _call(ctx: CheckContext, module: nn.Module, x64: torch.Tensor, mask: torch.Tensor,
          dy64: torch.Tensor) -> _Call:
    clone = copy.deepcopy(module)
    x = x64.to(ctx.dtype).to(ctx.device).requires_grad_(True)
    y = ctx.forward(clone, x, pad_mask=mask)
    if not y.requires_grad:
        raise AssertionError("the output does not require grad although the input does")
    y.backward(dy64.to(y.dtype).to(y.device))
    if x.grad is None:
        raise AssertionError("no gradient reached the input")
    run = Run()
    parameter_grads(ctx, clone, run)
    run.state = state_of(ctx, clone)
    return _Call(y.detach(), x.grad.detach(), run, mask)


def _at_real(ctx: CheckContext, call: _Call) -> Run:
    """The call's Run restricted to the real tokens (in batch-then-time order), with dγ, dβ and the state."""
    real = ~call.mask
    layout = ctx.spec.layout
    return Run(outputs={"output": token_view(layout, call.output)[real]},
               grads={"grad_input": token_view(layout, call.grad_input)[real], **call.run.grads},
               state=call.run.state)


def _nonfinite(ctx: CheckContext, call: _Call) -> list[str]:
    """What is not finite in a call, by place: outputs and dX at real tokens and at pads, dγ, dβ, state."""
    layout = ctx.spec.layout
    problems = []
    for label, tensor in (("output", call.output), ("dX", call.grad_input)):
        tokens = token_view(layout, tensor)
        for where, select in (("real tokens", ~call.mask), ("pads", call.mask)):
            bad = int((~torch.isfinite(tokens[select])).sum())
            if bad:
                problems.append(f"{label} has {bad} non-finite element(s) at {where}")
    for key, grad in call.run.grads.items():
        if grad is not None and not bool(torch.isfinite(grad).all()):
            problems.append(f"{_LABELS.get(key, key)} has {int((~torch.isfinite(grad)).sum())} non-finite "
                            "element(s)")
    for key, buf in call.run.state.items():
        if buf.is_floating_point() and not bool(torch.isfinite(buf).all()):
            problems.append(f"buffer {key!r} has {int((~torch.isfinite(buf)).sum())} non-finite element(s)")
    return problems


def _filled(ctx: CheckContext, x64: torch.Tensor, mask: torch.Tensor, fill: str) -> torch.Tensor:
    out = x64.clone()
    token_view(ctx.spec.layout, out)[mask] = _FILL_VALUES[fill]
    return out


def _right_padded(ctx: CheckContext, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`t` with each sequence's real tokens moved to its front (their order kept), pads after them."""
    layout = ctx.spec.layout
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices  # real (0) first, stable
    tokens = token_view(layout, t)
    moved = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return from_tokens(layout, moved).contiguous()


def _plain(ctx: CheckContext, probe: MaskProbe, x64: torch.Tensor, mask: torch.Tensor,
           dy64: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The plain call that holds the same real tokens: (what it is, input, mask, upstream gradient)."""
    if probe.shape in ("left", "gapped"):
        order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
        return ("the same real tokens right-padded", _right_padded(ctx, x64, mask), mask.gather(1, order),
                _right_padded(ctx, dy64, mask))
    if probe.shape == "all_pad":
        keep = ~mask.all(dim=1)
        return "the batch without its all-pad sequence", x64[keep], mask[keep], dy64[keep]
    return None


def _trial(ctx: CheckContext, probe: MaskProbe) -> Trial:
    params = dict(probe.params)
    x64 = make_input(probe.case, torch.float64, "cpu", ctx.spec.layout)
    mask = probe.mask
    module = ctx.build(ctx.num_features_of(x64), params)
    dy64 = random_like(x64, stable_seed("masked_backward_dy", probe.case.seed))
    shape = tuple(x64.shape)
    n = reduction_length(ctx.spec, shape, params.get("num_groups"))
    m = weight_reduction_length(ctx.spec, shape)
    example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                               "grad_output": "N(0, 1) everywhere, pads included"}
    trials: list[Trial] = []

    base = _call(ctx, module, _filled(ctx, x64, mask, "zeros"), mask, dy64)
    where = f"{probe.shape} mask, pads zero"
    problems = _nonfinite(ctx, base)
    plain = _plain(ctx, probe, x64, mask, dy64)
    if problems:
        return runs_trial(ctx, {}, problems, where, example)
    if plain is not None:
        what, x_plain, mask_plain, dy_plain = plain
        yardstick = _call(ctx, module, _filled(ctx, x_plain, mask_plain, "zeros"), mask_plain, dy_plain)
        more = [f"{what}: {p}" for p in _nonfinite(ctx, yardstick)]
        comparisons, problems = ({}, more) if more else compare_runs(ctx, _at_real(ctx, base),
                                                                     _at_real(ctx, yardstick), n, m)
        trials.append(runs_trial(ctx, comparisons, problems, f"{where}, against {what}", example))
        if not trials[-1].ok:
            return trials[-1]

    want = _at_real(ctx, base)
    for fill in NONFINITE_FILLS:
        got = _call(ctx, module, _filled(ctx, x64, mask, fill), mask, dy64)
        problems = _nonfinite(ctx, got)
        comparisons, more = compare_runs(ctx, _at_real(ctx, got), want, n, m)
        trials.append(runs_trial(ctx, comparisons, problems + more, f"{probe.shape} mask, pads {fill}",
                                 {**example, "fill": fill}))
        if not trials[-1].ok:
            break
    trial = worst_trial(trials)
    trial.metrics["runs"] = len(trials)
    return trial


@register_check("masked_backward", dtypes=("float32", "bfloat16"))
def masked_backward(ctx: CheckContext) -> Observation:
    """With NaN / ±inf pads and a backward, and with left-padded, gapped and all-pad masks, outputs and dX at real
    tokens, dγ, dβ and the state are finite and equal the same module's plain call (zero pads, right padding)."""
    if not ctx.training:
        raise Skip("a train-mode property: eval is the fixed per-channel map at every position, pads included, so "
                   "a pad legitimately reaches the output and dγ there")
    result = find_counterexample(ctx, lambda p: _trial(ctx, p), _probes(ctx))
    trial = result.failure or result.worst
    assert trial is not None
    metrics = {**trial.metrics, "cases": result.trials}
    if result.ok:
        return Observation(True, f"pads reach neither values nor gradients over {result.trials} cases "
                           f"({', '.join(MASK_SHAPES)} masks; pads {', '.join(NONFINITE_FILLS)}); worst: "
                           f"{trial.summary}", metrics)
    return Observation(False, f"pads leak into the training step: {trial.summary}", metrics, trial.counterexample)
