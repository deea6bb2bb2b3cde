"""adversarial_inputs, constant_rows, dtype_preservation: torch's modules and the references meet their specs;
each bug class of BUGS.md these checks own is flagged on a mutant; legitimate cast orders are not."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, spec_items, specs
from mutants_numerics import (
    Bf16SumLayerNorm,
    EpsOutsideLayerNorm,
    Float32OutputRMSNorm,
    GemmaRMSNorm,
    HalfSquareRMSNorm,
    LlamaRMSNorm,
    NoEpsLayerNorm,
    OnePassLayerNorm,
)

from normbench.builtins import reference_implementations, torch_implementations
from normbench.checks.numerics import LONG_REDUCTION, SHORT_REDUCTION, shape_with_reduction
from normbench.checks.toolkit.reductions import reduction_length
from normbench.inputs import Case, make_input

PROPS = ("adversarial_inputs", "constant_rows", "dtype_preservation")
IMPLS = {i.name: i for i in (*torch_implementations(), *reference_implementations())}

#: A real torch bug these checks found: CPU BatchNorm (and InstanceNorm, which calls it) in float16 stores
#: invstd in float16, so ε = 1e-12 gives invstd = 1e6 → inf and a constant channel 0·inf = NaN, where the
#: output is β (LayerNorm / GroupNorm keep it in float32 and are fine). The keras#22586 class.
TORCH_HALF_BATCHNORM_NAN = {
    ("torch.nn.BatchNorm1d", "constant_rows", "train", "float16"),
    ("torch.nn.InstanceNorm1d", "constant_rows", "any", "float16"),
}


ITEMS = spec_items(IMPLS, PROPS)


@over_items(ITEMS)
def test_torch_and_references_meet_their_specs(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(IMPLS[name], prop, dtype, mode)
    if (name, prop, mode, dtype) in TORCH_HALF_BATCHNORM_NAN:
        assert outcome.verdict == "fail", outcome.summary
        assert "eps=1e-12" in outcome.summary and "non-finite" in outcome.summary, outcome.summary
        return
    assert outcome.verdict in ("pass", "report"), outcome.summary
    assert outcome.metrics or prop == "dtype_preservation"


def test_torch_half_batchnorm_nan_is_real() -> None:
    """The known failure above, reproduced without the suite."""
    bn = torch.nn.BatchNorm1d(4, eps=1e-12).half()
    assert torch.isnan(bn(torch.zeros(3, 4, dtype=torch.float16))).all()
    assert not torch.isnan(torch.nn.BatchNorm1d(4, eps=1e-12)(torch.zeros(3, 4))).any()


# -- adversarial inputs ------------------------------------------------------------------------------

def test_one_pass_variance_is_flagged_on_large_mean() -> None:
    """E[x²] − E[x]² in float32 on mean 2000 / std 1 (pytorch#51102)."""
    outcome = assert_flags(impl("mutant.OnePassLayerNorm", "layernorm", OnePassLayerNorm), "adversarial_inputs")
    assert outcome.counterexample is not None
    assert outcome.counterexample["trigger"].startswith("large mean")
    assert outcome.counterexample["input"]["domain"] == "large_mean"


def test_float16_squares_are_flagged_on_big_values() -> None:
    """x² in float16 overflows for |x| ≥ 256 (pytorch PR #133085); float32 has no such problem."""
    mutant = impl("mutant.HalfSquareRMSNorm", "rmsnorm", HalfSquareRMSNorm)
    outcome = assert_flags(mutant, "adversarial_inputs", dtype="float16")
    assert outcome.counterexample["input"]["domain"] in ("big", "large_mean")
    assert_passes(mutant, "adversarial_inputs", dtype="float32")


def test_bf16_accumulation_is_flagged_on_small_spread() -> None:
    outcome = assert_flags(impl("mutant.Bf16SumLayerNorm", "layernorm", Bf16SumLayerNorm), "adversarial_inputs",
                           dtype="bfloat16")
    assert outcome.counterexample["input"]["domain"] == "small_std"


def test_eps_outside_the_sqrt_is_flagged_on_tiny_variance() -> None:
    outcome = assert_flags(impl("mutant.EpsOutsideLayerNorm", "layernorm", EpsOutsideLayerNorm),
                           "adversarial_inputs")
    assert outcome.counterexample["input"]["domain"] in ("tiny_var", "scaled")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("name", "factory", "fields"), [
    ("llama", LlamaRMSNorm, {}),          # normalize in fp32, cast, multiply γ in the input dtype
    ("gemma", GemmaRMSNorm, {"weight_offset": 1.0}),  # (1 + w) in fp32, then cast
], ids=["llama", "gemma"])
def test_legitimate_cast_orders_are_not_flagged(name: str, factory: type, fields: dict, dtype: str) -> None:
    assert_passes(impl(f"correct.{name}", "rmsnorm", factory, **fields), "adversarial_inputs", dtype=dtype)


def test_gemma_without_its_weight_offset_is_flagged() -> None:
    """The same module registered without weight_offset: its γ is off by one everywhere."""
    assert_flags(impl("mutant.gemma_no_offset", "rmsnorm", GemmaRMSNorm), "adversarial_inputs")


def test_shapes_reach_the_requested_reduction_length() -> None:
    for family in ("layernorm", "batchnorm", "batchnorm_masked", "groupnorm", "instancenorm"):
        spec = specs()[family]
        params = spec.default_params()
        for target in (SHORT_REDUCTION, LONG_REDUCTION):
            shape = shape_with_reduction(spec, spec.features[0], target, params)
            length = reduction_length(spec, shape, params.get("num_groups"))
            assert target / 2 <= length <= target * 2, (family, target, shape, length)


def test_large_mean_scale_multiplies_the_mean() -> None:
    x = make_input(Case((4, 4096), "large_mean", 0, 5.0), torch.float32)
    assert abs(float(x.double().mean()) - 1e4) < 1.0


# -- constant rows -----------------------------------------------------------------------------------

def test_no_eps_guard_is_flagged_on_constant_rows() -> None:
    """(x − μ)/σ: 0/0 = NaN on constant rows (pytorch_geometric#2559)."""
    outcome = assert_flags(impl("mutant.NoEpsLayerNorm", "layernorm", NoEpsLayerNorm), "constant_rows")
    assert outcome.counterexample["input"]["domain"] in ("zeros", "constant")
    assert "non-finite" in outcome.summary


def test_eps_on_the_std_is_flagged_for_its_gradient() -> None:
    """(x − μ)/(σ + ε): the output is β, but d sqrt(var)/d var is inf at var = 0, so gradients are NaN."""
    outcome = assert_flags(impl("mutant.EpsOutsideLayerNorm", "layernorm", EpsOutsideLayerNorm), "constant_rows")
    assert "grad_input" in outcome.summary


def test_one_pass_variance_is_flagged_on_large_constants() -> None:
    """A constant 1000 in float32: E[x²] − E[x]² comes out negative, and sqrt(var + ε) is NaN."""
    outcome = assert_flags(impl("mutant.OnePassLayerNorm", "layernorm", OnePassLayerNorm), "constant_rows")
    assert outcome.counterexample["input"]["scale"] == 1000.0


def test_constant_groups_follow_the_layout() -> None:
    """Every statistic group of the constant domain is constant, for each layout's reduction."""
    from normbench.checks.toolkit.reductions import statistic_groups

    for family in ("layernorm", "batchnorm", "batchnorm_masked", "groupnorm", "instancenorm"):
        spec = specs()[family]
        shape = (4, 3, spec.features[0]) if spec.layout.features_axis == -1 else (4, spec.features[0], 3)
        x = make_input(Case(shape, "constant", 1), torch.float64, layout=spec.layout)
        groups = statistic_groups(spec, x, spec.default_params())
        assert torch.equal(groups.amax(dim=1), groups.amin(dim=1)), family
        assert groups[:, 0].unique().numel() > 1, family


# -- dtype preservation ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_float32_output_is_flagged(dtype: str) -> None:
    outcome = assert_flags(impl("mutant.Float32OutputRMSNorm", "rmsnorm", Float32OutputRMSNorm),
                           "dtype_preservation", dtype=dtype)
    assert outcome.counterexample["observed"][f"{dtype} parameters"] == "float32"


def test_llama_order_returns_float32_with_float32_weights() -> None:
    """HF LLaMA's RMSNorm: half parameters keep the dtype, float32 ones promote it (transformers#25421)."""
    outcome = assert_flags(impl("correct.llama", "rmsnorm", LlamaRMSNorm), "dtype_preservation",
                           dtype="bfloat16")
    assert outcome.metrics["output_dtype"] == {"bfloat16 parameters": "bfloat16", "float32 parameters": "float32"}
    assert_passes(impl("correct.llama", "rmsnorm", LlamaRMSNorm), "dtype_preservation", dtype="float32")
