"""Self-tests of masked_backward and nonfinite_containment: the masks and poisoned
rows they build, the shipped norms pass, and every mutant of tests/mutants_contexts_masks.py is flagged while
declaring half dtypes and no float64 path (as a fused kernel does)."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, run, shipped, specs
from mutants_contexts_masks import (
    AllFiniteOrZeroLayerNorm,
    AmaxGuardRMSNorm,
    ForwardOnlyWherePowerNormV,
    LengthsMaskedBatchNorm,
    MulMaskPowerNormV,
    PadGradientBiasBatchNorm,
    PerSequencePowerNormV,
    SharedFloorInstanceNorm,
)

from normbench.checks import containment, masked_backward
from normbench.checks.base import CheckContext, Skip
from normbench.inputs import pad_mask
from normbench.spec import PropertySpec

FUSED_LIKE = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}
#: the families whose implementations take a pad mask and whose statistics exclude pads in train
MASKED_FAMILIES = {"batchnorm_masked", "powernorm", "powernorm_masked", "powernorm_star", "powernorm_v", "unified",
                   "mabn"}


def _ctx(name: str, check: str, mode: str, dtype: str = "float32", **options: object) -> CheckContext:
    implementation = shipped()[name]
    prop = PropertySpec(check, check, {mode: "holds"}, options=options)
    return CheckContext(impl=implementation, spec=specs()[implementation.family], prop=prop,
                        dtype=getattr(torch, dtype), mode=mode)


# -- the masks ------------------------------------------------------------------------------------------------

def _real_after_pad(row: torch.Tensor) -> bool:
    """A pad somewhere before a real token: what right padding never has."""
    seen_pad = False
    for pad in row.tolist():
        if pad:
            seen_pad = True
        elif seen_pad:
            return True
    return False


def test_mask_shapes():
    b, t, seed = masked_backward.BATCH, masked_backward.LENGTH, 7
    right = masked_backward.mask_of("right", b, t, seed)
    assert torch.equal(right, pad_mask(b, t, seed)) and not any(_real_after_pad(r) for r in right)
    left = masked_backward.mask_of("left", b, t, seed)
    for row in left:  # every pad precedes every real token, and some sequence has pads
        pads = int(row.sum())
        assert row[:pads].all() and not row[pads:].any()
    assert left.any() and (~left).any(dim=1).all()
    gapped = masked_backward.mask_of("gapped", b, t, seed)
    assert any(_real_after_pad(r) and not r[0] for r in gapped)  # a gap between real tokens
    assert (~gapped).any(dim=1).all()
    all_pad = masked_backward.mask_of("all_pad", b, t, seed)
    assert all_pad.all(dim=1).sum() == 1 and (~all_pad).any(dim=1).sum() == b - 1
    with pytest.raises(ValueError, match="unknown mask shape"):
        masked_backward.mask_of("diagonal", b, t, seed)


def test_probes_cover_every_mask_shape_and_feature_count():
    ctx = _ctx("reference.powernorm_v", "masked_backward", "train")
    probes = masked_backward._probes(ctx)
    assert {(p.shape, p.case.shape[-1]) for p in probes} == {(s, c) for s in masked_backward.MASK_SHAPES
                                                              for c in ctx.spec.features}
    assert {"nan", "+inf", "-inf"} == set(masked_backward.NONFINITE_FILLS)
    assert all(p.mask.shape == p.case.shape[:2] for p in probes)


def test_masked_backward_plans_exactly_the_masked_families():
    planned = {family for family, spec in specs().items() if any(p.check == "masked_backward"
                                                                 for p in spec.properties)}
    assert planned == MASKED_FAMILIES
    for family in MASKED_FAMILIES:
        prop = next(p for p in specs()[family].properties if p.check == "masked_backward")
        assert dict(prop.expect) == {"train": "holds"} and "eval" in prop.why


# -- masked_backward: correct modules pass ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for n, i in shipped().items() if i.family in MASKED_FAMILIES))
def test_shipped_masked_norms_pass(name):
    outcome = assert_passes(shipped()[name], "masked_backward", mode="train")
    assert outcome.metrics["cases"] == len(masked_backward.MASK_SHAPES) * len(specs()[shipped()[name].family].features)


def test_masked_batchnorm_passes_in_bfloat16():
    assert_passes(shipped()["normbench.MaskedBatchNorm"], "masked_backward", mode="train", dtype="bfloat16")


def test_masked_backward_is_a_train_property():
    with pytest.raises(Skip, match="fixed per-channel map"):
        masked_backward.masked_backward(_ctx("reference.powernorm_v", "masked_backward", "eval"))


# -- masked_backward: mutants ----------------------------------------------------------------------------------

MASK_MUTANTS = [
    # (class, family, what the summary names)
    (MulMaskPowerNormV, "powernorm_v", "pads nan"),
    (ForwardOnlyWherePowerNormV, "powernorm_v", "dgamma has"),
    (PerSequencePowerNormV, "powernorm_v", "all_pad mask"),
    (LengthsMaskedBatchNorm, "batchnorm_masked", "left mask"),
    (PadGradientBiasBatchNorm, "batchnorm_masked", "grad_bias"),
]


def _mask_mutant(cls: type, family: str):
    return impl(f"mutant.{cls.__name__}", family, cls, mask_kwarg="pad_mask", **FUSED_LIKE)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("cls", "family", "what"), MASK_MUTANTS, ids=[m[0].__name__ for m in MASK_MUTANTS])
def test_mask_mutants_are_flagged(cls, family, what, dtype):
    outcome = assert_flags(_mask_mutant(cls, family), "masked_backward", mode="train", dtype=dtype)
    assert what in outcome.summary, outcome.summary
    assert outcome.counterexample and {"mask", "mask_shape", "input"} <= set(outcome.counterexample)


@pytest.mark.parametrize(("cls", "family", "prop"), [
    (ForwardOnlyWherePowerNormV, "powernorm_v", "pad_mask_independence"),  # the forward is right
    (LengthsMaskedBatchNorm, "batchnorm_masked", "pad_mask_independence"),  # right padding is right
    (PadGradientBiasBatchNorm, "batchnorm_masked", "pack_pad_equivalence"),  # dy = 0 at its pads
    (PerSequencePowerNormV, "powernorm_v", "pack_pad_equivalence"),  # no sequence is all padding
])
def test_mask_mutants_pass_the_checks_that_came_before(cls, family, prop):
    assert_passes(_mask_mutant(cls, family), prop, mode="train")


def test_a_masked_family_module_ignoring_the_mask_is_flagged():
    """A masked BatchNorm declared without its mask keyword: pads count as tokens, NaN pads reach everything."""
    factory = shipped()["normbench.MaskedBatchNorm"].factory
    outcome = assert_flags(impl("plugin.NoMaskKwarg", "batchnorm_masked", factory), "masked_backward", mode="train")
    assert "non-finite" in outcome.summary


# -- nonfinite_containment ------------------------------------------------------------------------------------

def test_poisoned_rows():
    ctx = _ctx("torch.nn.GroupNorm", "nonfinite_containment", "any")
    probes = containment._probes(ctx)
    assert {p.unit for p in probes} == {"sample"} and len(probes) == len(ctx.spec.features)
    assert {p.unit for p in containment._probes(_ctx("reference.batchnorm", "nonfinite_containment", "eval"))} == \
        {"token"}
    assert set(containment.POISONS) == {"+inf", "nan"}
    with pytest.raises(ValueError, match="unit"):
        containment.unit_of(_ctx("reference.layernorm", "nonfinite_containment", "any", unit="row"))


@pytest.mark.parametrize(("name", "mode"), [
    ("torch.nn.LayerNorm", None), ("F.rms_norm", None), ("reference.rmsnorm", None), ("normbench.ScaleNorm", None),
    ("normbench.FusedAddRMSNorm", None), ("torch.nn.GroupNorm", None), ("torch.nn.InstanceNorm1d", None),
    ("torch.nn.BatchNorm1d", "eval"), ("normbench.MaskedBatchNorm", "eval"), ("normbench.MaskPowerNorm", "eval"),
    ("reference.unified", "eval"), ("reference.placement_pre_ln", None), ("normbench.blocks.post_ln", None),
])
def test_shipped_norms_contain_a_nonfinite_row(name, mode):
    kw = {"mode": mode} if mode else {}
    assert_passes(shipped()[name], "nonfinite_containment", **kw)
    if "bfloat16" in specs()[shipped()[name].family].tolerances:
        assert_passes(shipped()[name], "nonfinite_containment", dtype="bfloat16", **kw)


@pytest.mark.parametrize("name", ["reference.batchnorm", "reference.powernorm_v", "normbench.MaskedBatchNorm"])
def test_batch_statistics_in_train_are_observed_violated(name):
    """Why the specs plan containment in eval only: a non-finite row enters the batch statistic by definition."""
    assert not containment.nonfinite_containment(_ctx(name, "nonfinite_containment", "train")).holds


def test_a_block_with_per_token_units_is_observed_violated():
    """Why the placement specs set unit: sample: attention takes a NaN token to its whole sequence."""
    obs = containment.nonfinite_containment(_ctx("reference.placement_pre_ln", "nonfinite_containment", "any",
                                                 unit="token"))
    assert not obs.holds
    assert containment.nonfinite_containment(_ctx("reference.placement_pre_ln", "nonfinite_containment", "any",
                                                  unit="sample")).holds


CONTAINMENT_MUTANTS = [
    (AmaxGuardRMSNorm, "rmsnorm", {"bias": False}),
    (AllFiniteOrZeroLayerNorm, "layernorm", {}),
    (SharedFloorInstanceNorm, "instancenorm", {"affine": "never"}),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("cls", "family", "fields"), CONTAINMENT_MUTANTS,
                         ids=[m[0].__name__ for m in CONTAINMENT_MUTANTS])
def test_containment_mutants_are_flagged(cls, family, fields, dtype):
    mutant = impl(f"mutant.{cls.__name__}", family, cls, **FUSED_LIKE, **fields)
    outcome = assert_flags(mutant, "nonfinite_containment", dtype=dtype)
    assert "holding" in outcome.summary and outcome.counterexample["poison"] in containment.POISONS


def test_the_amax_guard_is_right_on_finite_inputs():
    """The batch-global pre-scaling is exact RMSNorm on finite inputs: only the non-finite row gives it away."""
    assert run(impl("mutant.AmaxGuardRMSNorm", "rmsnorm", AmaxGuardRMSNorm, bias=False, **FUSED_LIKE),
               "forward_equivalence").verdict == "pass"
