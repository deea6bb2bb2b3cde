"""Self-tests of the invariance checks: every mutant flagged, every torch built-in and reference passed."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, shipped, spec_items, specs
from mutants_invariance import (
    BatchWideLayerNorm,
    CenteredRMSNorm,
    CumulativeLayerNorm,
    EpsOnRmsRMSNorm,
    ManualBatchNorm,
    MaskedBatchNorm,
    MaskedSequenceLayerNorm,
    MaxEpsRMSNorm,
    SequenceLayerNorm,
    SigmaEpsLayerNorm,
)

from normbench.checks.toolkit.reductions import rounding_condition, statistic_groups
from normbench.outcome import Outcome
from normbench.runner import PlanItem, judge

PROPERTIES = ("shift_invariance", "scale_invariance", "permutation_equivariance", "batch_independence",
              "pad_mask_independence")


_BY_NAME = shipped(families=False)
_ITEMS = spec_items(_BY_NAME, PROPERTIES)


@over_items(_ITEMS)
def test_builtins_meet_spec_expectations(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_BY_NAME[name], prop, dtype, mode)
    assert outcome.verdict == "pass", outcome.summary
    assert "tol_ratio" in outcome.metrics or outcome.observed == "violated", outcome.metrics


def _with_expectation(implementation: object, prop: str, expect: dict[str, str], mode: str,
                      dtype: str = "float32", **options: object) -> Outcome:
    """Judge against the family's spec with one property's expectation (and options) replaced: how a later
    family's spec (masked BatchNorm, ScaleNorm) will use the same check."""
    spec = specs()[implementation.family]  # type: ignore[attr-defined]
    original = next(p for p in spec.properties if p.name == prop)
    changed = dataclasses.replace(original, expect=expect, options={**original.options, **options})
    spec = dataclasses.replace(spec, properties=tuple(changed if p.name == prop else p for p in spec.properties))
    return judge(PlanItem(spec, implementation, changed, mode, dtype))  # type: ignore[arg-type]


# -- shift invariance -----------------------------------------------------------------------------------

def test_shift_flags_rmsnorm_that_subtracts_the_mean() -> None:
    outcome = assert_flags(impl("centred-rms", "rmsnorm", CenteredRMSNorm), "shift_invariance")
    assert outcome.observed == "holds"  # a LayerNorm in disguise: expected violated
    assert "measured" in outcome.metrics and outcome.metrics["tol_ratio"] < 1


def test_shift_violation_clearly_exceeds_tolerance() -> None:
    outcome = run(_BY_NAME["torch.nn.RMSNorm"], "shift_invariance")
    assert outcome.verdict == "pass" and outcome.observed == "violated"
    assert outcome.metrics["tol_ratio"] > 100, outcome.metrics
    assert outcome.counterexample and "shifts" in outcome.counterexample


def test_shift_flags_batchnorm_eval_claimed_invariant() -> None:
    # BatchNorm eval is a fixed affine map: shifting moves it, so a spec claiming "holds" must fail.
    outcome = _with_expectation(_BY_NAME["torch.nn.BatchNorm1d"], "shift_invariance", {"eval": "holds"}, "eval")
    assert outcome.verdict == "fail", outcome.summary


def test_shift_is_skipped_where_rounding_swallows_any_violation() -> None:
    # In bfloat16, rounding x + 3 already moves a normalized output by O(S): nothing can be judged.
    outcome = run(_BY_NAME["torch.nn.LayerNorm"], "shift_invariance", "bfloat16")
    assert outcome.verdict == "skip", outcome.summary
    assert "not measurable" in outcome.summary


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_shift_in_other_dtypes(dtype: str) -> None:
    assert_passes(_BY_NAME["torch.nn.LayerNorm"], "shift_invariance", dtype=dtype)
    assert run(_BY_NAME["torch.nn.RMSNorm"], "shift_invariance", dtype).observed == "violated"


# -- scale invariance -----------------------------------------------------------------------------------

def test_scale_flags_eps_added_to_sigma() -> None:
    outcome = assert_flags(impl("sigma-eps-ln", "layernorm", SigmaEpsLayerNorm), "scale_invariance")
    assert outcome.counterexample and "scales" in outcome.counterexample


def test_scale_flags_eps_outside_the_rms_sqrt() -> None:
    assert_flags(impl("eps-on-rms", "rmsnorm", EpsOnRmsRMSNorm), "scale_invariance")


def test_scale_eps_power_option() -> None:
    # max(rms, ε) scales ε as a¹ (ScaleNorm's convention): holds with eps_power 1, flagged with the default 2.
    clamp = impl("max-eps-rms", "rmsnorm", MaxEpsRMSNorm)
    assert _with_expectation(clamp, "scale_invariance", {"any": "holds"}, "any", eps_power=1).verdict == "pass"
    assert_flags(clamp, "scale_invariance")


# -- permutation equivariance ---------------------------------------------------------------------------

def test_permutation_flags_cumulative_statistics() -> None:
    outcome = assert_flags(impl("cumulative-ln", "layernorm", CumulativeLayerNorm), "permutation_equivariance")
    assert outcome.counterexample and "permutation" in outcome.counterexample


def test_permutation_compares_running_buffers() -> None:
    # A BatchNorm whose running-mean update depends on row order: outputs equivariant, buffers not.
    class OrderedUpdate(ManualBatchNorm):
        def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
            super()._update(mean, var, count)
            self.running_mean.add_(1e-2 * self._first_row)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self._first_row = x[0].reshape(x.shape[1], -1).mean(-1).detach()
            return super().forward(x)

    outcome = assert_flags(impl("ordered-bn", "batchnorm", OrderedUpdate), "permutation_equivariance",
                           mode="train")
    assert "running_mean" in outcome.summary


# -- batch independence ---------------------------------------------------------------------------------

def test_batch_independence_flags_batch_wide_layernorm() -> None:
    assert_flags(impl("batch-wide-ln", "layernorm", BatchWideLayerNorm), "batch_independence")


def test_batch_independence_flags_batchnorm_eval_with_batch_statistics() -> None:
    bad = impl("bn-eval-batch", "batchnorm", functools.partial(ManualBatchNorm, bug="eval_batch_stats"))
    assert_flags(bad, "batch_independence", mode="eval")
    assert_passes(impl("manual-bn", "batchnorm", ManualBatchNorm), "batch_independence", mode="eval")


# -- pad mask independence ------------------------------------------------------------------------------

def test_pad_flags_sequence_statistics() -> None:
    outcome = assert_flags(impl("sequence-ln", "layernorm", SequenceLayerNorm), "pad_mask_independence")
    assert outcome.counterexample and "mask_seed" in outcome.counterexample
    # per sample, so it is batch independent: the pad check is what catches it
    assert_passes(impl("sequence-ln", "layernorm", SequenceLayerNorm), "batch_independence")


def test_pad_masked_implementations_hold() -> None:
    masked_bn = impl("masked-bn", "batchnorm", MaskedBatchNorm, mask_kwarg="pad_mask")
    assert _with_expectation(masked_bn, "pad_mask_independence", {"train": "holds"}, "train").verdict == "pass"
    # time-major input and a True = valid mask, through the Implementation adapters
    masked_ln = impl("masked-seq-ln", "layernorm", MaskedSequenceLayerNorm, mask_kwarg="valid",
                     mask_true_means="valid", token_layout="TBC")
    assert_passes(masked_ln, "pad_mask_independence")


def test_pad_flags_mask_by_multiplication() -> None:
    # x·mask lets an inf or NaN pad poison the sums (inf·0 = NaN): zeros vs garbage agree, inf/NaN do not.
    leaky = impl("leaky-masked-bn", "batchnorm", functools.partial(MaskedBatchNorm, leak_nan=True),
                 mask_kwarg="pad_mask")
    outcome = _with_expectation(leaky, "pad_mask_independence", {"train": "holds"}, "train")
    assert outcome.verdict == "fail", outcome.summary
    assert "pads=+inf" in outcome.summary or "pads=nan" in outcome.summary
    assert "pads=garbage" not in outcome.summary


def test_pad_flags_mask_ignored_by_a_masked_family() -> None:
    # A family whose spec says pads must not matter, implemented without reading the mask.
    unmasked = impl("unmasked-bn", "batchnorm", ManualBatchNorm)
    assert _with_expectation(unmasked, "pad_mask_independence", {"train": "holds"}, "train").verdict == "fail"


# -- helpers --------------------------------------------------------------------------------------------

def test_statistic_groups_follow_the_layout() -> None:
    x = torch.arange(2 * 12 * 3, dtype=torch.float64).reshape(2, 12, 3)
    gn = statistic_groups(specs()["groupnorm"], x, {"num_groups": 4})
    assert gn.shape == (8, 9)
    assert torch.equal(gn[0].sort().values, x[0, :3].reshape(-1).sort().values)
    assert statistic_groups(specs()["batchnorm"], x, {}).shape == (12, 6)
    assert statistic_groups(specs()["instancenorm"], x, {}).shape == (24, 3)
    assert statistic_groups(specs()["layernorm"], x, {}).shape == (24, 3)


def test_rounding_condition() -> None:
    ln = specs()["layernorm"]
    row = torch.tensor([[99.0, 101.0]])
    assert rounding_condition(ln, row, {}) == pytest.approx(101.0)
    assert rounding_condition(ln, torch.ones(1, 4), {}) == float("inf")
