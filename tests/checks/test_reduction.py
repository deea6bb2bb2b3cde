"""Self-tests of weight_gradient_reduction: a half-precision accumulator of dγ / dβ is flagged, a float32 one
passes, and the check reads the spec's `reduction` tolerance."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, specs
from mutants_reduction import Float32ReductionLayerNorm, HalfAccumulatorLayerNorm

from normbench.checks.reduction import DEFAULT_ROWS


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_accumulator_is_flagged(dtype):
    outcome = assert_flags(impl("half-acc", "layernorm", HalfAccumulatorLayerNorm), "weight_gradient_reduction",
                           dtype=dtype)
    assert "grad_" in outcome.summary and f"over {DEFAULT_ROWS} rows" in outcome.summary
    assert outcome.counterexample["rows_per_channel"] == DEFAULT_ROWS


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_float32_accumulator_passes(dtype):
    outcome = assert_passes(impl("fp32-acc", "layernorm", Float32ReductionLayerNorm), "weight_gradient_reduction",
                            dtype=dtype)
    assert outcome.metrics["tol_ratio"] < 0.5


def test_the_half_accumulator_hides_from_the_small_batch_gradient_check():
    # Why the check exists: on gradient_equivalence's small batches the same mutant passes.
    assert_passes(impl("half-acc", "layernorm", HalfAccumulatorLayerNorm), "gradient_equivalence", dtype="bfloat16")


def test_every_family_with_the_property_declares_a_reduction_tolerance():
    for spec in specs().values():
        if any(p.check == "weight_gradient_reduction" for p in spec.properties):
            for dtype in spec.dtypes:
                assert spec.tolerance(dtype, "reduction") is not None


class PlainScaleNorm(torch.nn.Module):
    """ScaleNorm in plain PyTorch (as x-transformers writes it): autograd forms each term dy·x/‖x‖ in the input
    dtype and torch sums them with a float32 accumulator - correct, though the scalar g sums C·rows terms that
    cancel to a result far smaller than their magnitudes."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.scale = num_features ** 0.5
        self.weight = torch.nn.Parameter(torch.full((1,), self.scale)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.weight if self.weight is not None else self.scale
        return g * x / x.norm(dim=-1, keepdim=True).clamp(min=self.eps)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_scalar_parameter_is_bounded_by_what_it_sums(dtype):
    outcome = assert_passes(impl("scalenorm-plain", "scalenorm", PlainScaleNorm), "weight_gradient_reduction",
                            dtype=dtype)
    assert outcome.metrics["tol_ratio"] < 1


def test_term_scales_are_the_sums_of_the_per_row_contributions():
    # LayerNorm: dβ_c = Σ_rows dy, dγ_c = Σ_rows dy·x̂: Σ|terms| and sqrt(Σ terms²) computed directly.
    from normbench.reference.layernorm import build

    from normbench.checks.reduction import term_scales

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    dy = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    ref = build(5)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(5, generator=gen, dtype=torch.float64))
    y = ref(x)
    y.backward(dy)
    xhat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ref.eps)
    scales = term_scales(ref, x, dy, y.detach())
    torch.testing.assert_close(scales["grad_bias"].abs_sum, dy.abs().sum(0))
    torch.testing.assert_close(scales["grad_weight"].abs_sum, (dy * xhat).abs().sum(0))
    torch.testing.assert_close(scales["grad_weight"].root_sum_square, (dy * xhat).pow(2).sum(0).sqrt())
