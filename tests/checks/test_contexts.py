"""The calling-context checks (how frameworks call a module) flag each planted bug in float32 / bfloat16 with the
implementation declaring no float64 path (as fused kernels do), and pass the correct controls."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, run, shipped, specs
from mutants_contexts import (
    FUSED,
    ClosureLayerNorm,
    DetachedBackwardLayerNorm,
    FixedRankRMSNorm,
    Float32ConstantLayerNorm,
    InferenceCacheRMSNorm,
    NonPersistentStatsBatchNorm,
    OnceDifferentiableLayerNorm,
    PlainAttributeLayerNorm,
    PrivateReferenceRMSNorm,
    fused_layernorm,
)

from normbench.checks.calling import CALLING_CONTEXT_CHECKS
from normbench.implementation import ImplementationError

CONTROL = impl("fused-control", "layernorm", fused_layernorm(None), **FUSED)


def _fused(bug: str):
    return impl(f"fused-{bug}", "layernorm", fused_layernorm(bug), **FUSED)


# -- 1. frozen parameters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_frozen_parameters_passes_a_custom_function_that_branches_correctly(dtype):
    assert_passes(CONTROL, "frozen_parameters", dtype=dtype)


@pytest.mark.parametrize("bug", ["frozen_gamma_forgotten", "dx_only_with_dgamma"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_frozen_parameters_flags_a_backward_that_branches_on_needs_input_grad(bug, dtype):
    outcome = assert_flags(_fused(bug), "frozen_parameters", dtype=dtype)
    assert "requires_grad on {" in outcome.summary and "weight" not in outcome.counterexample["requires_grad"]


def test_frozen_parameters_flags_a_gradient_written_into_a_frozen_tensor():
    outcome = assert_flags(_fused("grad_assigned"), "frozen_parameters")
    assert "frozen weight (requires_grad=False) received a gradient" in outcome.summary


# -- 2. the upstream gradient laid out unlike x -------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gradient_layout_flags_a_backward_that_reads_dy_as_packed(dtype):
    outcome = assert_flags(_fused("packed_dy"), "gradient_layout", dtype=dtype)
    assert outcome.counterexample["x_layout"] == "packed" and outcome.counterexample["dy_layout"] != "packed"


@pytest.mark.parametrize("name", ["torch.nn.LayerNorm", "torch.nn.BatchNorm1d", "torch.nn.GroupNorm"])
def test_gradient_layout_passes_torch_including_the_degenerate_sum_loss(name):
    # A .sum() loss through a batch statistic has dX = 0 and dγ = Σx̂ = 0 in exact arithmetic: judged against the
    # size of the terms (the gradient of a random dy), rounding noise is not a failure.
    spec = specs()[shipped()[name].family]
    mode = next(iter(next(p for p in spec.properties if p.name == "gradient_layout").expect))
    assert_passes(shipped()[name], "gradient_layout", mode=mode)
    assert_passes(CONTROL, "gradient_layout")


# -- 3. ranks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_leading_ranks_flags_a_fixed_rank_reshape(dtype):
    outcome = assert_flags(impl("fixed-rank", "rmsnorm", FixedRankRMSNorm, affine="always", **FUSED),
                           "leading_ranks", dtype=dtype)
    assert outcome.counterexample["rank"] in (4, 5)


def test_leading_ranks_passes_torch_on_rank_1_4_and_5():
    outcome = assert_passes(shipped()["torch.nn.RMSNorm"], "leading_ranks")
    assert outcome.metrics["ranks"] == [1, 4, 5]
    assert_passes(shipped()["torch.nn.GroupNorm"], "leading_ranks")


# -- 4. repeated use -----------------------------------------------------------------------------------------

def test_repeated_use_flags_statistics_stashed_on_the_module():
    outcome = assert_flags(_fused("stash_on_self"), "repeated_use")
    assert outcome.counterexample["scenario"] == "two forwards, one backward"


def test_repeated_use_flags_a_gradient_assigned_instead_of_accumulated():
    # Both scenarios accumulate: two backward nodes of one pass add into .grad as two passes do.
    outcome = assert_flags(_fused("grad_assigned"), "repeated_use")
    assert "grad_weight" in outcome.summary


def test_repeated_use_passes_the_control_and_a_stateful_batchnorm():
    assert_passes(CONTROL, "repeated_use")
    assert_passes(shipped()["torch.nn.BatchNorm1d"], "repeated_use", mode="train")


# -- 5. parameter updates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_parameter_updates_flags_an_inference_weight_cache(dtype):
    outcome = assert_flags(impl("cache", "rmsnorm", InferenceCacheRMSNorm, affine="always", **FUSED),
                           "parameter_updates", dtype=dtype)
    assert outcome.counterexample["grad_context"] in ("no_grad", "inference_mode")


def test_parameter_updates_flags_a_private_reference_to_the_first_parameter():
    outcome = assert_flags(impl("private", "rmsnorm", PrivateReferenceRMSNorm, affine="always", **FUSED),
                           "parameter_updates")
    assert outcome.counterexample["update"] == "new Parameter"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_parameter_updates_passes_batchnorm_in_both_modes(mode):
    assert_passes(shipped()["torch.nn.BatchNorm1d"], "parameter_updates", mode=mode)


# -- 6. module hygiene ---------------------------------------------------------------------------------------

def test_module_hygiene_flags_a_non_persistent_running_variance():
    outcome = assert_flags(impl("nonpersistent", "batchnorm", NonPersistentStatsBatchNorm, **FUSED),
                           "module_hygiene", mode="train")
    assert "'running_var' is not in the state_dict" in outcome.summary


def test_module_hygiene_flags_unregistered_gamma_and_accepts_the_declaration():
    assert "weight is not a registered Parameter" in assert_flags(
        impl("plain", "layernorm", PlainAttributeLayerNorm, **FUSED), "module_hygiene").summary
    declared = impl("plain-declared", "layernorm", PlainAttributeLayerNorm, registered_params=False, **FUSED)
    # declared unregistered: neither the registration nor the state_dict's or .to()'s handling of γ / β is judged
    assert_passes(declared, "module_hygiene")


def test_module_hygiene_refuses_a_wrong_unregistered_declaration():
    outcome = run(impl("wrong", "layernorm", lambda c, eps, affine: torch.nn.LayerNorm(c, eps=eps),
                       registered_params=False), "module_hygiene")
    assert outcome.verdict == "error" and "declares registered_params=False" in outcome.summary


def test_module_hygiene_flags_a_deepcopy_that_shares_the_original():
    outcome = assert_flags(impl("closure", "layernorm", ClosureLayerNorm, **FUSED), "module_hygiene")
    assert outcome.counterexample["part"] == "deepcopy"


def test_module_hygiene_flags_a_tensor_that_to_dtype_does_not_convert():
    outcome = assert_flags(impl("fp32-const", "layernorm", Float32ConstantLayerNorm, **FUSED), "module_hygiene")
    assert "unit is still float32 after .to(bfloat16)" in outcome.summary


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_module_hygiene_passes_torch_batchnorm(mode):
    assert_passes(shipped()["torch.nn.BatchNorm1d"], "module_hygiene", mode=mode)


# -- 7. second-order gradients -------------------------------------------------------------------------------

def test_second_order_flags_a_backward_built_from_detached_statistics():
    outcome = assert_flags(impl("detached", "layernorm", DetachedBackwardLayerNorm, **FUSED),
                           "second_order_gradients")
    assert "d(dX·v)/dx" in outcome.summary


def test_second_order_accepts_a_declared_once_differentiable_backward():
    declared = impl("once", "layernorm", OnceDifferentiableLayerNorm, double_backward=False, **FUSED)
    assert "raised, as declared" in assert_passes(declared, "second_order_gradients").summary
    undeclared = impl("once-undeclared", "layernorm", OnceDifferentiableLayerNorm, **FUSED)
    assert "declares double_backward=False" in assert_flags(undeclared, "second_order_gradients").summary


def test_second_order_flags_wrong_numbers_from_a_module_declared_first_order():
    declared = impl("detached-declared", "layernorm", DetachedBackwardLayerNorm, double_backward=False, **FUSED)
    outcome = assert_flags(declared, "second_order_gradients")
    assert "returned wrong numbers instead of raising" in outcome.summary


def test_second_order_refuses_a_wrong_first_order_declaration():
    outcome = run(impl("torch-declared", "layernorm", lambda c, eps, affine: torch.nn.LayerNorm(c, eps=eps),
                       double_backward=False), "second_order_gradients")
    assert outcome.verdict == "error" and "drop the declaration" in outcome.summary


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_second_order_passes_torch_layernorm(dtype):
    assert_passes(shipped()["torch.nn.LayerNorm"], "second_order_gradients", dtype=dtype)


# -- the contract --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("check", CALLING_CONTEXT_CHECKS)
def test_every_family_plans_each_calling_context_or_says_why_not(check):
    for family, spec in specs().items():
        planned = {p.check for p in spec.properties}
        assert check in planned or check in spec.not_applicable, \
            f"{family} neither plans {check} nor says why it does not apply (not_applicable)"


@pytest.mark.parametrize("field", ["double_backward", "registered_params"])
def test_the_new_declarations_must_be_booleans(field):
    with pytest.raises(ImplementationError, match=field):
        impl("bad", "layernorm", torch.nn.LayerNorm, **{field: "no"})
