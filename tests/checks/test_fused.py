"""Self-tests of the fused add + norm residual contract: every mutant flagged, correct fused modules pass in
every dtype, and implementations without a fused path are skipped with the reason."""

from __future__ import annotations

import pytest
from helpers import assert_flags, assert_passes, impl, run
from mutants_fused import (
    DetachedResidualOutput,
    DoubleRoundedResidual,
    Float32Residual,
    FusedAddLayerNormNoBias,
    InPlaceResidual,
    NoNormGradientIntoResidual,
    NormIgnoresResidual,
    ReturnsOldResidual,
    ReturnsOnlyNormed,
    UnfusedAddRMSNorm,
)

from normbench.builtins import torch_implementations
from normbench.families.fused_add import implementations as fused_implementations

DTYPES = ("float32", "float16", "bfloat16")


def fused(name: str, factory: type, family: str = "rmsnorm"):
    return impl(name, family, factory, residual_kwarg="residual")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implementation", [*fused_implementations(), fused("unfused", UnfusedAddRMSNorm)],
                         ids=lambda i: i.name)
def test_correct_fused_modules_pass(implementation, dtype):
    outcome = assert_passes(implementation, "fused_residual", dtype=dtype)
    assert outcome.metrics["tol_ratio"] < 1


@pytest.mark.parametrize(("mutant", "dtype", "evidence"), [
    (NormIgnoresResidual, "float32", "normed"),
    (ReturnsOldResidual, "float32", "not bitwise x + residual"),
    (Float32Residual, "bfloat16", "not the input dtype"),
    (DoubleRoundedResidual, "float32", "not bitwise x + residual"),
    (InPlaceResidual, "float32", "wrote into the residual argument"),
    (DetachedResidualOutput, "float32", "grad_"),
    (NoNormGradientIntoResidual, "float32", "grad_residual"),
    (ReturnsOnlyNormed, "float32", "not the pair (normed, residual_out)"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_broken_fused_modules_are_flagged(mutant, dtype, evidence):
    outcome = assert_flags(fused(mutant.__name__, mutant), "fused_residual", dtype=dtype)
    assert evidence in outcome.summary, outcome.summary


def test_in_place_update_is_also_caught_when_the_residual_is_x():
    outcome = assert_flags(fused("in-place", InPlaceResidual), "fused_residual")
    assert "shares memory" in outcome.summary or "wrote into" in outcome.summary


def test_layernorm_fused_path_without_bias_is_flagged():
    outcome = assert_flags(fused("no-bias", FusedAddLayerNormNoBias, "layernorm"), "fused_residual")
    assert "normed" in outcome.summary


def test_implementations_without_a_fused_path_are_skipped_with_the_reason():
    torch_rms = next(i for i in torch_implementations() if i.name == "torch.nn.RMSNorm")
    outcome = run(torch_rms, "fused_residual")
    assert outcome.verdict == "skip" and "residual_kwarg" in outcome.summary
