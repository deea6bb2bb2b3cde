"""The input space reaches where real kernels break: rows past 65535 and hidden sizes around the
dispatch thresholds, in forward_equivalence at the cost of one forward pass each."""

from __future__ import annotations

import torch
from factories.norms import AffineNorm
from helpers import assert_flags, assert_passes, impl, specs
from torch import nn

from normbench.checks.base import CheckContext
from normbench.checks.equivalence import kernel_variants
from normbench.inputs import THRESHOLD_FEATURES, WIDE_GRID_ROWS, kernel_threshold_cases

GRID_LIMIT = 65536


class GridWrapLayerNorm(AffineNorm):
    """A per-row kernel on a 16-bit grid axis: rows ≥ 65536 use the statistics of row i − 65536."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        mean = rows.mean(-1, keepdim=True)
        var = rows.var(-1, unbiased=False, keepdim=True)
        if rows.shape[0] > GRID_LIMIT:
            wrapped = torch.arange(rows.shape[0], device=x.device) % GRID_LIMIT
            mean, var = mean[wrapped], var[wrapped]
        y = ((rows - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
        return y if self.weight is None else y * self.weight + self.bias


class ThresholdLayerNorm(GridWrapLayerNorm):
    """A kernel whose wide path (C > 4096) drops the last partial tile of the row from the statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        counted = x[..., : (c // 1024) * 1024] if c > 4096 else x
        mean = counted.mean(-1, keepdim=True)
        var = (counted - mean).pow(2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y if self.weight is None else y * self.weight + self.bias


def test_a_kernel_wrapping_past_65535_rows_is_flagged():
    wrong = impl("grid-wrap", "layernorm", GridWrapLayerNorm)
    outcome = assert_flags(wrong, "forward_equivalence")
    assert outcome.counterexample["input"]["shape"][0] == WIDE_GRID_ROWS
    # The small batches of the other checks never reach it: why the case exists.
    assert_passes(wrong, "gradient_equivalence")


def test_a_kernel_wrong_past_a_hidden_size_threshold_is_flagged():
    wrong = impl("threshold", "layernorm", ThresholdLayerNorm)
    outcome = assert_flags(wrong, "forward_equivalence")
    assert outcome.counterexample["input"]["shape"][-1] in THRESHOLD_FEATURES
    assert outcome.counterexample["input"]["shape"][-1] > 4096


def test_the_threshold_cases_straddle_every_dispatch_size():
    cases = kernel_threshold_cases(specs()["rmsnorm"].layout, seed=0)
    sizes = {case.shape[-1] for case in cases}
    for threshold in (1024, 2048, 4096, 8192):
        assert threshold - 1 in sizes and threshold + 1 in sizes
    assert any(s > 8192 and s % 2 for s in sizes) and any(s > 8192 and s % 8 == 0 and s != 8192 for s in sizes)
    assert max(case.shape[0] for case in cases) > GRID_LIMIT


def test_only_per_token_families_get_them_and_placement_blocks_opt_out():
    assert kernel_threshold_cases(specs()["batchnorm"].layout, seed=0) == []
    spec = specs()["placement_pre_ln"]
    prop = next(p for p in spec.properties if p.name == "forward_equivalence")
    ctx = CheckContext(impl=impl("x", spec.family, nn.Identity), spec=spec, prop=prop, dtype=torch.float32,
                       mode="any")
    assert kernel_variants(ctx) == []
