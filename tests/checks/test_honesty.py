"""Self-tests of the honesty checks (determinism, batch invariance, stale outputs, aliasing): every mutant
flagged, every shipped implementation judged as its spec expects."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, shipped, spec_items
from mutants_honesty import (
    BatchSwitchLayerNorm,
    DataPtrCacheLayerNorm,
    GradOutputScribbleLayerNorm,
    IdCacheLayerNorm,
    InplaceLayerNorm,
    NoisyLayerNorm,
    PermutedSumLayerNorm,
    RacyWeightGradLayerNorm,
    ScratchInputLayerNorm,
    StaticOutputLayerNorm,
    VersionCacheLayerNorm,
)

from normbench.checks.honesty import BATCH_SIZES
from normbench.checks.toolkit.bitwise import bitwise_equal, deviation, shares_memory

PROPERTIES = ("determinism", "batch_invariance", "no_stale_output", "output_not_alias")


_BY_NAME = shipped(families=True)
_ITEMS = spec_items(_BY_NAME, PROPERTIES)


@over_items(_ITEMS)
def test_shipped_implementations_meet_spec_expectations(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_BY_NAME[name], prop, dtype, mode)
    expected = "report" if prop == "batch_invariance" else "pass"
    assert outcome.verdict == expected, outcome.summary
    assert outcome.observed in ("holds", "violated")


# -- bitwise helpers ------------------------------------------------------------------------------------

def test_bitwise_equal_compares_bits_not_values() -> None:
    nan = torch.tensor([math.nan, 1.0])
    assert bitwise_equal(nan, nan.clone())  # NaN == NaN bitwise
    assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not bitwise_equal(torch.ones(2), torch.ones(2, dtype=torch.float64))
    one_ulp = torch.nextafter(torch.tensor([1.0]), torch.tensor([2.0]))
    dev = deviation(torch.tensor([1.0]), one_ulp)
    assert dev.differing == 1 and 0 < dev.max_abs < 1e-6


def test_shares_memory_sees_views_and_not_copies() -> None:
    x = torch.randn(4, 8)
    assert shares_memory(x.t(), x) and shares_memory(x[1:], x) and shares_memory(x.view(-1), x)
    assert not shares_memory(x.clone(), x)
    assert not shares_memory(torch.empty(0), x)


# -- determinism ----------------------------------------------------------------------------------------

def test_determinism_flags_a_random_reduction_order() -> None:
    outcome = assert_flags(impl("permuted-sum", "layernorm", PermutedSumLayerNorm), "determinism")
    assert outcome.observed == "violated"
    assert outcome.metrics["differing"] > 0 and 0 < outcome.metrics["max_abs_dev"] < 1e-4
    assert outcome.counterexample and outcome.counterexample["tensor"] == "output"


def test_determinism_flags_tiny_noise_well_inside_tolerance() -> None:
    noisy = impl("noisy", "layernorm", NoisyLayerNorm)
    assert_passes(noisy, "forward_equivalence")  # the noise is invisible to a tolerance
    outcome = assert_flags(noisy, "determinism")
    assert outcome.metrics["max_abs_dev"] < 1e-5


def test_determinism_compares_gradients() -> None:
    outcome = assert_flags(impl("racy-dgamma", "layernorm", RacyWeightGradLayerNorm), "determinism")
    assert outcome.counterexample and outcome.counterexample["tensor"] == "grad_weight"


def test_determinism_compares_batchnorm_state_from_identical_copies() -> None:
    # Train mode updates running statistics between calls; each call starts from a copy of the same state,
    # so outputs, gradients and the updated buffers must all be bitwise equal.
    outcome = assert_passes(_BY_NAME["torch.nn.BatchNorm1d"], "determinism", mode="train")
    assert "running_var" in outcome.summary and "grad_weight" in outcome.summary


# -- batch invariance -----------------------------------------------------------------------------------

def test_batch_invariance_observes_a_kernel_switch_at_256_rows() -> None:
    outcome = run(impl("batch-switch", "layernorm", BatchSwitchLayerNorm), "batch_invariance")
    assert outcome.verdict == "report"  # measured, never fails
    assert outcome.observed == "violated"
    assert outcome.metrics["differs_at"] == [256, 300]
    assert outcome.metrics["per_batch_size"]["255"]["differing"] == 0
    assert 0 < outcome.metrics["max_abs_dev"] < 1e-5
    assert outcome.counterexample and outcome.counterexample["differs_at"] == [256, 300]


def test_batch_invariance_reports_every_batch_size() -> None:
    outcome = run(_BY_NAME["torch.nn.LayerNorm"], "batch_invariance")
    assert outcome.verdict == "report"
    assert outcome.metrics["batch_sizes"] == list(BATCH_SIZES)
    assert set(outcome.metrics["per_batch_size"]) == {str(b) for b in BATCH_SIZES}


def test_batch_invariance_in_batchnorm_train_says_what_it_measured() -> None:
    outcome = run(_BY_NAME["torch.nn.BatchNorm1d"], "batch_invariance", mode="train")
    assert outcome.verdict == "report"
    assert outcome.metrics["semantics"].startswith("eval")
    assert "batch statistics" in outcome.summary


# -- stale outputs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutant", [DataPtrCacheLayerNorm, IdCacheLayerNorm])
def test_no_stale_output_flags_caches_keyed_on_identity(mutant: type) -> None:
    outcome = assert_flags(impl(mutant.__name__, "layernorm", mutant), "no_stale_output")
    assert outcome.observed == "violated" and "stale" in outcome.summary


def test_no_stale_output_flags_a_static_output_buffer() -> None:
    outcome = assert_flags(impl("static-out", "layernorm", StaticOutputLayerNorm), "no_stale_output")
    assert "overwritten" in outcome.summary


def test_no_stale_output_passes_a_cache_that_watches_the_version_counter() -> None:
    assert_passes(impl("version-cache", "layernorm", VersionCacheLayerNorm), "no_stale_output")


def test_no_stale_output_follows_batchnorm_state_through_the_calls() -> None:
    assert_passes(_BY_NAME["torch.nn.BatchNorm1d"], "no_stale_output", mode="train")


# -- aliasing -------------------------------------------------------------------------------------------

def test_output_not_alias_flags_in_place_normalization() -> None:
    outcome = assert_flags(impl("in-place", "layernorm", InplaceLayerNorm), "output_not_alias")
    assert outcome.observed == "violated" and "shares memory" in outcome.summary


def test_output_not_alias_flags_an_input_used_as_scratch() -> None:
    scratch = impl("scratch", "layernorm", ScratchInputLayerNorm)
    assert_passes(scratch, "forward_equivalence")  # the output itself is right
    outcome = assert_flags(scratch, "output_not_alias")
    assert "wrote into its input" in outcome.summary


def test_output_not_alias_flags_a_backward_writing_into_grad_output() -> None:
    # Its gradients are right, but the caller's dy is doubled afterwards: whoever reuses dy (a second
    # branch, a reference computed after the candidate) gets the wrong number.
    x = torch.randn(3, 8, requires_grad=True)
    dy = torch.randn(3, 8)
    GradOutputScribbleLayerNorm(8)(x).backward(dy.clone())
    want = torch.autograd.grad(torch.nn.functional.layer_norm(x, (8,)), x, dy)[0]
    assert x.grad is not None and torch.allclose(x.grad, want, atol=1e-6)
    scribble = impl("dy-scribble", "layernorm", GradOutputScribbleLayerNorm)
    outcome = assert_flags(scribble, "output_not_alias")
    assert "upstream gradient" in outcome.summary
