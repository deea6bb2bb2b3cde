"""Self-tests of weight_gradient_reduction: a half-precision accumulator of dγ / dβ is flagged, a float32 one
passes, and the check reads the spec's `reduction` tolerance."""

from __future__ import annotations

import pytest
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
