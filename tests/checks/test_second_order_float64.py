"""second_order_gradients in float64 for a module declared double_backward=False: torch's gradgradcheck reports a
once_differentiable backward as a Jacobian mismatch instead of raising, which failed every correct first-order-only
kernel with a float64 path (the Triton example). Double backward is asked directly first."""

from __future__ import annotations

from helpers import assert_flags, assert_passes, impl
from mutants_contexts import DetachedBackwardLayerNorm64, OnceDifferentiableLayerNorm64


def test_a_declared_once_differentiable_float64_backward_passes_because_double_backward_raises():
    declared = impl("once64", "layernorm", OnceDifferentiableLayerNorm64, double_backward=False, affine="always")
    assert "raised, as declared" in assert_passes(declared, "second_order_gradients", dtype="float64").summary


def test_a_declared_first_order_float64_backward_that_returns_wrong_numbers_is_still_flagged():
    declared = impl("detached64", "layernorm", DetachedBackwardLayerNorm64, double_backward=False, affine="always")
    assert "gradgradcheck failed" in assert_flags(declared, "second_order_gradients", dtype="float64").summary
