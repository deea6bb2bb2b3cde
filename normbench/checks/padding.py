"""Pack-versus-pad equivalence: a padded batch and the same real tokens packed without pads normalize alike.

Sequence models batch variable-length sequences by right-padding them to a common length T with a pad mask
(B, T), True = pad, or by packing the real tokens into one sequence with no pads at all. A norm whose
statistics see only real tokens (per-token norms trivially; masked batch-statistics norms by design: masked
BatchNorm, PowerNorm, Unified Normalization) gives the same numbers either way. Plain BatchNorm counts the
pads (pytorch/pytorch#70529, #81985; tensorflow#30161): its train-mode outputs, its running statistics and its
gradients change with the amount of padding.

What is compared, real tokens only:
  * the outputs: f(padded, mask)[real] against f(packed) — packed is (1, N_real, C) for features-last
    layouts and (1, C, N_real) for channel-first ones, passed with no mask;
  * the state buffers after the step (a running variance whose unbiased correction uses B·T instead of the
    real-token count differs here, even though no pad value reaches the statistics);
  * dX at real tokens, dγ and dβ, with the upstream gradient zero at the pads (a loss that ignores them).
Pads hold large finite garbage. inf / NaN pads are pad_mask_independence's business: with them a per-token
norm's dγ = Σ dy·x̂ multiplies the zero upstream gradient at a pad by its NaN x̂ (torch's own LayerNorm
does), which is a convention about NaN, not padding leaking into real tokens.

Tolerance: the two computations reduce the same values in different orders, each within the spec bound of
the truth, so their difference is held to twice the bound (as the invariance checks do).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import comparisons_trial, doubled
from normbench.checks.toolkit.reductions import num_groups_of, reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample, observation
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, compare
from normbench.inputs import Case, input_shape, make_input, pad_mask, random_like
from normbench.spec import Layout, Tolerance

#: Pads hold N(GARBAGE_MEAN, GARBAGE_STD²) values: far from the real tokens' N(0, 1), so any pad that reaches
#: a statistic moves it by O(1), yet representable in float16.
GARBAGE_MEAN, GARBAGE_STD = 50.0, 100.0


# -- padding-aware tensor helpers ----------------------------------------------------------------------

def token_view(layout: Layout, t: torch.Tensor) -> torch.Tensor:
    """(B, T, C) view of a rank-3 sequence tensor in `layout`: channel-first (B, C, T) is transposed."""
    return t if layout.features_axis in (-1, t.dim() - 1) else t.transpose(1, 2)


def from_tokens(layout: Layout, tokens: torch.Tensor) -> torch.Tensor:
    """The inverse of token_view: (B, T, C) tokens back into the layout's (B, T, C) or (B, C, T)."""
    return tokens if layout.features_axis == -1 else tokens.transpose(1, 2)


def fill_pads(layout: Layout, x: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A copy of x whose pad tokens (mask True) hold `values` (shape (pads, C))."""
    out = x.clone()
    token_view(layout, out)[mask] = values.to(out.dtype)
    return out


def pack_tokens(layout: Layout, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The real tokens of a padded batch, in batch-then-time order, as one sequence with no pads."""
    real = token_view(layout, x)[~mask]  # (N_real, C)
    return from_tokens(layout, real.unsqueeze(0)).contiguous()


# -- the check -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackProbe:
    case: Case
    mask_seed: int
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "mask_seed": self.mask_seed, "params": dict(self.params)}


def _require_sequences(ctx: CheckContext) -> None:
    if 3 not in ctx.spec.layout.ranks:
        raise Skip(f"family {ctx.spec.family!r} takes no rank-3 (sequence) input, so nothing is padded")


def _probes(ctx: CheckContext) -> list[PackProbe]:
    params = tuple(ctx.params().items())
    out = []
    for i, c in enumerate(ctx.spec.features):
        shape = input_shape(ctx.spec.layout, batch=3, features=c, rank=3, length=6)
        out.append(PackProbe(Case(shape, "normal", seed=ctx.seed + i), ctx.seed + 200 + i, params))
    return out


def _strategy(ctx: CheckContext) -> st.SearchStrategy[PackProbe]:
    params = tuple(ctx.params().items())
    per_token = ctx.spec.layout.reduce == "token"

    def build(batch: int, length: int, c: int, seed: int) -> PackProbe:
        shape = input_shape(ctx.spec.layout, batch=batch, features=c, rank=3, length=length)
        return PackProbe(Case(shape, "normal", seed=seed), seed + 1, params)

    # Batch statistics need two real tokens per channel at least: two sequences, each keeps one.
    return st.builds(build, st.integers(1 if per_token else 2, 5), st.integers(2, 8),
                     st.sampled_from(ctx.spec.features), st.integers(0, 2**16))


def _state(ctx: CheckContext, got: nn.Module, want: nn.Module, n: int, tol: Tolerance,
           out: dict[str, Comparison]) -> None:
    for name in ctx.spec.state:
        a, b = ctx.impl.state_tensor(got, name), ctx.impl.state_tensor(want, name)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            continue
        if b.is_floating_point():
            out[name] = compare(a, b, ctx.dtype, tol, n)
        else:
            out[name] = compare(a.to(torch.float64), b.to(torch.float64), ctx.dtype, Tolerance(0, 0, 0), 1)


def _trial(ctx: CheckContext, probe: PackProbe) -> Trial:
    layout = ctx.spec.layout
    params = dict(probe.params)
    x64 = make_input(probe.case, torch.float64, "cpu", layout)
    batch, length, c = token_view(layout, x64).shape
    mask = pad_mask(batch, length, probe.mask_seed)
    real = ~mask
    gen = torch.Generator().manual_seed(stable_seed("pack_pad_garbage", probe.case.seed))
    garbage = GARBAGE_MEAN + GARBAGE_STD * torch.randn(int(mask.sum()), c, generator=gen, dtype=torch.float64)
    padded = fill_pads(layout, x64, mask, garbage).to(ctx.dtype).to(ctx.device).requires_grad_(True)
    packed = pack_tokens(layout, x64, mask).to(ctx.dtype).to(ctx.device).requires_grad_(True)

    module = ctx.build(c, params)
    on_padded, on_packed = copy.deepcopy(module), copy.deepcopy(module)
    y_pad = ctx.forward(on_padded, padded, pad_mask=mask)
    y_pack = ctx.forward(on_packed, packed)

    # An upstream gradient for the real tokens; zero at pads, as from a loss that ignores them.
    dy_real = random_like(token_view(layout, y_pack)[0], stable_seed("pack_pad_dy", probe.case.seed))
    dy_tokens = torch.zeros(batch, length, c, dtype=y_pad.dtype, device=y_pad.device)
    dy_tokens[real] = dy_real
    y_pad.backward(from_tokens(layout, dy_tokens))
    y_pack.backward(from_tokens(layout, dy_real.unsqueeze(0)))

    n = reduction_length(ctx.spec, tuple(packed.shape), num_groups_of(params))
    fwd, bwd = doubled(ctx.tolerance("forward")), doubled(ctx.tolerance("backward"))
    comparisons: dict[str, Comparison] = {
        "output": compare(token_view(layout, y_pad)[real], token_view(layout, y_pack)[0], ctx.dtype, fwd, n)}
    _state(ctx, on_padded, on_packed, n, fwd, comparisons)
    if padded.grad is None or packed.grad is None:
        raise AssertionError("no gradient reached the input")
    comparisons["grad_input"] = compare(token_view(layout, padded.grad)[real], token_view(layout, packed.grad)[0],
                                        ctx.dtype, bwd, n)
    m = weight_reduction_length(ctx.spec, tuple(packed.shape))
    for label, got, want in zip(("grad_weight", "grad_bias"), ctx.impl.affine_tensors(on_padded),
                                ctx.impl.affine_tensors(on_packed)):
        if got is not None and want is not None and want.grad is not None:
            if got.grad is None:
                raise AssertionError(f"{label}: no gradient on the padded batch")
            comparisons[label] = compare(got.grad, want.grad, ctx.dtype, bwd, m)
    counterexample = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                      "pad_fraction": float(mask.float().mean()), "pads": f"N({GARBAGE_MEAN}, {GARBAGE_STD}^2)"}
    return comparisons_trial(ctx, comparisons, counterexample, {"real_tokens": int(real.sum())})


@register_check("pack_pad_equivalence", dtypes=("float32", "bfloat16"))
def pack_pad_equivalence(ctx: CheckContext) -> Observation:
    """Outputs, updated state and gradients at real tokens equal those of the same tokens packed without pads."""
    _require_sequences(ctx)
    result = find_counterexample(ctx, lambda p: _trial(ctx, p), _probes(ctx), _strategy(ctx))
    return observation("padded batch == packed tokens at real tokens", result)
