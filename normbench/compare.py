"""Error measurement against the float64 truth, with tolerances that scale with dtype and reduction length."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from normbench.spec import Tolerance

HALF_DTYPES = (torch.float16, torch.bfloat16)
#: how max_ulp is measured (see compare): stored with every outcome as `ulp`, so a publisher shows only ulp figures
#: of this definition (an older record's element-wise ulp of an output near zero read as 3.19e37)
ULP_DEFINITION = "output-scale"


def dtype_eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def accumulate_eps(dtype: torch.dtype) -> float:
    """Epsilon of the precision a correct kernel accumulates in: float32 for half inputs."""
    return dtype_eps(torch.float32) if dtype in HALF_DTYPES else dtype_eps(dtype)


@dataclass(frozen=True)
class Comparison:
    """The measured error of one tensor against its truth; recorded whether it passes or not."""

    ok: bool
    max_abs: float
    #: max |a - t| / |t|: large where the truth is near zero however small the error (kept for the records)
    max_rel: float
    #: max_abs in units in the last place of the dtype at the output's scale S (`ulp_scale`): norm-wise, like the
    #: tolerance, so an output near zero (its own ulp tiny) does not read as thousands of ulp off
    max_ulp: float
    #: the largest err/bound over elements: <= 1 passes; how much of the tolerance was used.
    tol_ratio: float
    worst_index: tuple[int, ...]
    actual_at_worst: float
    truth_at_worst: float
    nonfinite: int  # elements that are NaN/inf where the truth is finite (or vice versa)
    #: S, the scale max_ulp is measured at (max|t|, or the scale the caller gave; see compare)
    ulp_scale: float = 0.0

    def as_dict(self, prefix: str = "") -> dict[str, float | int | bool | list[int]]:
        return {f"{prefix}{k}": (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def describe(self, what: str) -> str:
        head = f"{what}: max abs err {self.max_abs:.3g} ({self.max_ulp:.3g} ulp of the scale " \
               f"{self.ulp_scale:.3g}), max rel {self.max_rel:.3g}, {self.tol_ratio:.3g}x tolerance"
        if self.nonfinite:
            head += f", {self.nonfinite} non-finite element(s) where the truth is finite"
        if not self.ok:
            head += f"; worst at {list(self.worst_index)}: got {self.actual_at_worst:.6g}, " \
                    f"truth {self.truth_at_worst:.6g}"
        return head


def channel_bias(actual: torch.Tensor, truth: torch.Tensor, channel_axis: int, dtype: torch.dtype) -> float:
    """Largest per-channel mean signed relative error, in units of eps(dtype).

    Rounding to nearest is unbiased, so over many rows its mean relative error is ~0; a wrong per-channel
    factor (e.g. Gemma's 1+w added in bf16, Liger#74 / llama.cpp#5810) is a constant relative error that
    a per-element tolerance of a few ulp cannot see but this mean exposes.
    """
    a = actual.detach().to(torch.float64).cpu().movedim(channel_axis, -1).reshape(-1, truth.shape[channel_axis])
    t = truth.detach().to(torch.float64).cpu().movedim(channel_axis, -1).reshape(-1, truth.shape[channel_axis])
    finite = torch.isfinite(t) & torch.isfinite(a)
    if not finite.any():
        return 0.0
    floor = 1e-2 * t[finite].abs().max()
    usable = finite & (t.abs() > floor)
    rel = torch.where(usable, (a - t) / torch.where(usable, t, torch.ones_like(t)), torch.zeros_like(t))
    counts = usable.sum(dim=0)
    means = rel.sum(dim=0) / counts.clamp_min(1)
    means = torch.where(counts >= 32, means, torch.zeros_like(means))
    return float(means.abs().max().item() / dtype_eps(dtype))


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index of element `flat` of a row-major tensor of `shape`. Not torch.unravel_index: its first call
    imports torch.fx's symbolic shapes and sympy (0.5 s in every judging process), and each call costs 0.7 ms of
    type checks, against microseconds here; compare() runs it once per compared tensor."""
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size) if size else (flat, 0)
        index.append(rest)
    return tuple(reversed(index))


def ulp_of(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` at |values| (float64), floored at the smallest normal spacing."""
    finfo = torch.finfo(dtype)
    mags = values.abs().clamp_min(finfo.tiny)
    exponent = torch.floor(torch.log2(mags))
    return torch.exp2(exponent) * finfo.eps


@dataclass(frozen=True)
class TermScale:
    """What a reduction sums, per output element (float64, from the truth): Σ|terms| and sqrt(Σ terms²)."""

    abs_sum: torch.Tensor
    root_sum_square: torch.Tensor


def compare(actual: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype, tol: Tolerance,
            reduction_length: int, scale: float | None = None, terms: TermScale | None = None,
            extra: torch.Tensor | None = None) -> Comparison:
    """Compare `actual` (any dtype) with the float64 `truth` under the spec tolerance.

    bound_i = eps(dtype)·(rel·|t_i| + abs·S) + eps(acc)·red·sqrt(L)·S, with S = max|t| (norm-wise scale),
    L the reduction length and acc the accumulation precision a correct kernel uses. `scale` overrides S
    where max|t| understates the output's scale (a truth that is exactly β, or 0, on constant groups).

    With `terms` (a sum over many terms: dγ, dβ) the bound is scaled by what each element sums, not by the
    result after cancellation: bound_i = eps(dtype)·(rel·|t_i| + abs·R_i) + eps(acc)·red·A_i, with
    R_i = sqrt(Σ terms²) (each term rounded once in the input dtype, the roundings independent) and
    A_i = Σ|terms| (the float32 accumulation). A scalar parameter summing C·rows terms that cancel to a small
    |t| then gets the allowance its terms need, where max|t| would not.

    `extra` (broadcastable to the truth, in its units) is added to every element's bound: a per-row allowance
    such as the conditioning of a centred row (see checks.equivalence), which one scalar cannot express.

    Reported error: max_abs and max_rel (per element, |a − t| / |t|), and max_ulp = max_abs / ulp_dtype(S), the
    error in units in the last place of the dtype at the output's scale S, the same norm-wise scale the tolerance
    uses (`scale`, else max|t|; with `terms`, the larger of max|t| and max sqrt(Σ terms²), what the sum is made of).
    An element-wise ulp would divide by the spacing at the element's own truth: near zero that spacing is tiny
    (at zero, 1.4e-45 in float32 and 9.2e-41 in bfloat16), so passing items read as 260911 or 3.19e37 ulp.
    """
    if actual.shape != truth.shape:
        raise ValueError(f"shape {tuple(actual.shape)} differs from the truth's {tuple(truth.shape)}")
    a = actual.detach().to(torch.float64).cpu()
    t = truth.detach().to(torch.float64).cpu()
    if t.numel() == 0:
        return Comparison(True, 0.0, 0.0, 0.0, 0.0, (), 0.0, 0.0, 0, scale or 0.0)
    finite_t = torch.isfinite(t)
    if scale is None:
        scale = t[finite_t].abs().max().item() if finite_t.any() else 0.0
    eps = dtype_eps(dtype)
    ulp_scale = float(scale)
    if terms is not None:
        sums = terms.root_sum_square.to(t)
        if bool(torch.isfinite(sums).all()) and sums.numel():
            ulp_scale = max(ulp_scale, float(sums.abs().max().item()))
        bound = eps * (tol.rel * t.abs() + tol.abs * terms.root_sum_square.to(t)) + \
            accumulate_eps(dtype) * tol.red * terms.abs_sum.to(t)
    else:
        bound = eps * (tol.rel * t.abs() + tol.abs * scale) + \
            accumulate_eps(dtype) * tol.red * math.sqrt(max(reduction_length, 1)) * scale
    if extra is not None:
        bound = bound + extra.to(t)
    # A truth of exactly zero everywhere still needs a floor, or rounding noise would fail.
    bound = bound.clamp_min(torch.finfo(dtype).tiny)
    err = (a - t).abs()
    all_finite = bool(finite_t.all()) and bool(torch.isfinite(a).all())
    if all_finite:
        # The common case, without the masking below: half the tensor operations of a check's compare.
        nonfinite = 0
        ratio = err / bound
        flat = int(torch.argmax(ratio).item())
    else:
        same_nonfinite = (~finite_t) & ((a == t) | (torch.isnan(a) & torch.isnan(t)))
        err = torch.where(same_nonfinite, torch.zeros_like(err), err)
        bad_nonfinite = (~torch.isfinite(a)) & finite_t | (~finite_t & ~same_nonfinite)
        err = torch.where(bad_nonfinite, torch.full_like(err, math.inf), err)
        nonfinite = int(bad_nonfinite.sum().item())
        ratio = err / bound
        flat = int(torch.argmax(torch.nan_to_num(ratio, nan=math.inf)).item())
    index = unravel(flat, tuple(t.shape))
    if nonfinite:
        max_abs = max_rel = max_ulp = math.inf
    else:
        rel = err / t.abs().clamp_min(torch.finfo(torch.float64).tiny)
        if not all_finite:  # only elements where the truth is finite (matching infinities have err 0)
            err, rel = err[finite_t], rel[finite_t]
        max_abs, max_rel = ((v.max().item() if v.numel() else 0.0) for v in (err, rel))
        max_ulp = max_abs / ulp_of(torch.tensor(ulp_scale, dtype=torch.float64), dtype).item()
    return Comparison(
        ok=bool((ratio <= 1).all().item()),
        max_abs=max_abs,
        max_rel=max_rel,
        max_ulp=max_ulp,
        tol_ratio=float(ratio.reshape(-1)[flat].item()),
        worst_index=index,
        actual_at_worst=float(a.reshape(-1)[flat].item()),
        truth_at_worst=float(t.reshape(-1)[flat].item()),
        nonfinite=nonfinite,
        ulp_scale=ulp_scale,
    )
