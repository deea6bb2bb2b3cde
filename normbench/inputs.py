"""Inputs: shapes from a family's layout, value domains (random and adversarial), pad masks, and
hypothesis strategies over them.

Tensors are drawn in float64 from a seeded torch.Generator and then cast, so a counterexample is fully
described by (shape, dtype, domain, seed) and hypothesis shrinks those small values, not tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from hypothesis import strategies as st

from normbench.spec import Layout

#: value domains; the adversarial ones are the triggers listed in the project's bug catalogue.
DOMAINS = (
    "normal",       # N(0, 1)
    "scaled",       # N(0, s) with s over decades, drawn by hypothesis
    "large_mean",   # mean >> spread: one-pass E[x²]-E[x]² cancels
    "tiny_var",     # spread ~ sqrt(eps): where eps sits matters
    "constant",     # every normalized group constant: variance exactly 0
    "zeros",
    "big",          # |x| beyond sqrt(65504) in float16, large in other dtypes: squares overflow in half
    "small_std",    # std 0.05 around a moderate mean: bf16 sums lose it
)


#: Rows past a 16-bit grid dimension (65535): a kernel that launches one block per row on a 16-bit grid axis
#: wraps, and rows 65536.. reuse other rows' statistics (BUGS.md, strides and layout: > 65536 rows).
WIDE_GRID_ROWS = 65536 + 512
#: Features per row of the wide-grid case: small, so the rows cost one ~0.26 M-element forward.
WIDE_GRID_FEATURES = 4
#: Hidden sizes on both sides of the usual dispatch thresholds (1024, 2048, 4096, 8192: one warp / block per
#: row, vector widths, shared-memory tiles) and odd sizes past them, where kernels switch code paths.
THRESHOLD_FEATURES: tuple[int, ...] = (1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193,
                                       8200)
#: Rows per threshold-size case: two, so a kernel mixing up rows shows, at ~113 k elements for all sizes.
THRESHOLD_ROWS = 2
#: The degenerate hidden size: one value per row (BUGS.md, optional γ / β: C = 1). Every row is then a constant
#: group (a LayerNorm outputs β), so constant_rows judges it, with that check's allowance for the mean's rounding.
DEGENERATE_FEATURES = 1


@dataclass(frozen=True)
class Case:
    """A reproducible input: enough to rebuild the tensor exactly."""

    shape: tuple[int, ...]
    domain: str = "normal"
    seed: int = 0
    scale: float = 1.0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def input_shape(layout: Layout, batch: int, features: int, rank: int, length: int = 3) -> tuple[int, ...]:
    """A shape of `rank` dims for this layout: features last for per-token families, at dim 1 otherwise."""
    spatial = [length] * (rank - 2)
    if layout.features_axis == -1:
        return (batch, *spatial, features)
    return (batch, features, *spatial)


def kernel_threshold_cases(layout: Layout, seed: int,
                           features: tuple[int, ...] = THRESHOLD_FEATURES) -> list[Case]:
    """Shapes where real per-row kernels switch paths or break: WIDE_GRID_ROWS rows and the hidden sizes
    `features` (THRESHOLD_FEATURES). Only for per-token statistics (the kernels that launch per row and tile the
    hidden size); empty for batch / group / instance statistics."""
    if layout.reduce != "token":
        return []
    rank = 2 if 2 in layout.ranks else layout.ranks[0]
    out = [Case(input_shape(layout, WIDE_GRID_ROWS, WIDE_GRID_FEATURES, rank, length=1), "normal", seed)]
    for i, c in enumerate(features):
        # a size's seed is its place in the full list, so a subset draws the same rows as the full plan
        index = THRESHOLD_FEATURES.index(c) if c in THRESHOLD_FEATURES else len(THRESHOLD_FEATURES) + i
        out.append(Case(input_shape(layout, THRESHOLD_ROWS, c, rank, length=1), "normal", seed + 1 + index))
    return out


def _domain_values(shape: tuple[int, ...], domain: str, dtype: torch.dtype, gen: torch.Generator,
                   scale: float, layout: Layout | None) -> torch.Tensor:
    normal = torch.randn(shape, generator=gen, dtype=torch.float64)
    half = dtype in (torch.float16, torch.bfloat16)
    if domain == "normal":
        return normal
    if domain == "scaled":
        return normal * scale
    if domain == "large_mean":
        # fp32: mean 2000 / std 1 breaks one-pass variance at C = 4 (pytorch#51102); halves cannot hold
        # a spread of 1 around 2000, so use a mean they represent with a few bits of spread left.
        # `scale` multiplies the mean (default 1): scale 5 gives fp32 the mean 1e4 of the C = 4096 trigger.
        mean = {torch.float16: 200.0, torch.bfloat16: 30.0}.get(dtype, 2000.0)
        return mean * scale + normal
    if domain == "tiny_var":
        spread = 3e-2 if half else 1e-3
        return 0.5 + spread * normal
    if domain == "constant":
        # `scale` sets the constants' magnitude (default 1): large constants make a one-pass E[x²]-E[x]²
        # come out negative, so sqrt(var + eps) is NaN (pytorch#51102).
        return _constant_groups(shape, gen, layout) * scale
    if domain == "zeros":
        return torch.zeros(shape, dtype=torch.float64)
    if domain == "big":
        # |x| >= 256 makes x² exceed float16's 65504 (pytorch rms_norm fp16 fix, PR #133085).
        sign = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
        magnitude = 300.0 + 1700.0 * torch.rand(shape, generator=gen, dtype=torch.float64)
        return sign * magnitude
    if domain == "small_std":
        return 1.0 + 0.05 * normal
    raise ValueError(f"unknown domain {domain!r}; known: {DOMAINS}")


def _constant_groups(shape: tuple[int, ...], gen: torch.Generator, layout: Layout | None) -> torch.Tensor:
    """Every group that shares a statistic is constant (per token, or per channel for channel layouts)."""
    if layout is None or layout.reduce == "token":
        per_row = torch.randn((*shape[:-1], 1), generator=gen, dtype=torch.float64)
        return per_row.expand(shape).clone()
    per_channel_shape = [1] * len(shape)
    # features last for token batch-statistic families (batchnorm_masked: (B, T, C)), at dim 1 otherwise
    per_channel_shape[layout.features_axis] = shape[layout.features_axis]
    if layout.reduce in ("group", "instance"):
        per_channel_shape[0] = shape[0]
    value = torch.randn(per_channel_shape, generator=gen, dtype=torch.float64)
    if layout.reduce == "group":
        # a group of channels must share one constant; repeat the first channel's value per group later
        # is not possible without num_groups, so make the whole sample constant (valid for any grouping)
        axis = layout.features_axis % len(shape)
        per_sample = list(per_channel_shape)
        per_sample[axis] = shape[axis]
        value = value.narrow(axis, 0, 1).expand(per_sample)
    return value.expand(shape).clone()


def make_input(case: Case, dtype: torch.dtype, device: torch.device | str = "cpu",
               layout: Layout | None = None) -> torch.Tensor:
    """The input tensor of `case`, in `dtype` on `device` (identical for identical arguments)."""
    gen = torch.Generator().manual_seed(case.seed)
    values = _domain_values(case.shape, case.domain, dtype, gen, case.scale, layout)
    return values.to(dtype).to(device)


def random_like(x: torch.Tensor, seed: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A seeded N(0,1) tensor shaped like x (e.g. an upstream gradient), on x's device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype or x.dtype).to(x.device)


def pad_mask(batch: int, length: int, seed: int, pad_fraction: float = 0.5) -> torch.Tensor:
    """(batch, length) bool, True = pad; right-padded, every sequence keeps at least one real token."""
    gen = torch.Generator().manual_seed(seed)
    max_pads = max(0, length - 1)
    target = round(pad_fraction * length)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        jitter = int(torch.randint(-1, 2, (1,), generator=gen).item()) if length > 2 else 0
        pads = min(max_pads, max(0, target + jitter))
        if pads:
            mask[b, length - pads:] = True
    if batch and not mask.any() and max_pads:
        mask[0, -1] = True
    return mask


def case_strategy(layout: Layout, features: tuple[int, ...], domains: tuple[str, ...] = ("normal", "scaled"),
                  max_batch: int = 6, max_length: int = 5) -> st.SearchStrategy[Case]:
    """Hypothesis strategy of Cases for a family; shrinks toward small batch, short length, seed 0."""

    @st.composite
    def build(draw: st.DrawFn) -> Case:
        rank = draw(st.sampled_from(layout.ranks))
        # Statistics over batch or length need several values: with one, torch raises in train mode;
        # with two, x̂ = ±1 and dX cancels to rounding noise. The degenerate sizes have checks of their own.
        per_token = layout.reduce == "token"
        batch = draw(st.integers(1 if per_token else 3, max(max_batch, 3)))
        length = draw(st.integers(1 if per_token else 3, max(max_length, 3)))
        c = draw(st.sampled_from(features))
        domain = draw(st.sampled_from(domains))
        scale = 10.0 ** draw(st.integers(-3, 3)) if domain == "scaled" else 1.0
        seed = draw(st.integers(0, 2**16))
        return Case(shape=input_shape(layout, batch, c, rank, length), domain=domain, seed=seed, scale=scale)

    return build()
