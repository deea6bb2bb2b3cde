"""Self-tests of the contract fields that describe code in the wild: `bias`, `affine` and `fixed_params`.

Each field is shown to let a correct module of that shape conform without a wrapper, and to catch a wrong
declaration (a module with a β declared bias=False, a module whose eps differs from its fixed_params).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from helpers import assert_flags, assert_passes, impl, run, specs
from torch import nn

from normbench.implementation import Implementation, ImplementationError

#: the checks that compare values with the float64 truth (forward, dX, dγ, dβ) and gradcheck.
EQUIVALENCE = ("forward_equivalence", "gradient_equivalence")


# -- modules shaped like real code ------------------------------------------------------------------------

def torch_layernorm_without_bias(num_features: int, eps: float, affine: bool) -> nn.Module:
    """torch.nn.LayerNorm(bias=False): γ only (Cohere / x-transformers' LayerNorm are the same shape)."""
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine, bias=False)


class ParameterlessLayerNorm(nn.Module):
    """OLMo-style: no parameters at all and a hard-coded eps; the constructor takes only the size."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.normalized_shape = (num_features,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, 1e-5)


class ParameterlessLayerNormOtherEps(ParameterlessLayerNorm):
    """The same module hard-coding eps = 1e-2: declared with fixed_params eps=1e-5 it must fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, 1e-2)


class LlamaStyleRMSNorm(nn.Module):
    """HF LlamaRMSNorm: always owns its weight, computes in float32, casts back, then multiplies the weight.
    The constructor takes (hidden_size, eps): no `affine`."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def torch_layernorm_with_bias(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


# -- bias=False -------------------------------------------------------------------------------------------

BIAS_FREE = impl("torch.nn.LayerNorm(bias=False)", "layernorm", torch_layernorm_without_bias, bias=False)


@pytest.mark.parametrize("prop", EQUIVALENCE)
def test_layernorm_without_bias_declared_bias_false_conforms_in_float32(prop):
    outcome = assert_passes(BIAS_FREE, prop, dtype="float32")
    assert "grad_bias" not in str(outcome.metrics)  # no dβ is expected, so none is compared


def test_layernorm_without_bias_passes_gradcheck_and_float64():
    assert_passes(BIAS_FREE, "gradcheck", dtype="float64")
    assert_passes(BIAS_FREE, "forward_equivalence", dtype="float64")
    assert_passes(BIAS_FREE, "gradient_equivalence", dtype="float64")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_layernorm_without_bias_conforms_in_half_apart_from_torchs_dgamma_reduction(dtype):
    assert_passes(BIAS_FREE, "forward_equivalence", dtype=dtype)
    assert_passes(BIAS_FREE, "gradient_equivalence", dtype=dtype)
    # torch's CPU half LayerNorm dγ over 8192 rows: the known failure of torch.nn.LayerNorm, found here too.
    outcome = assert_flags(BIAS_FREE, "weight_gradient_reduction", dtype=dtype)
    assert "grad_weight" in outcome.summary and "grad_bias" not in outcome.summary


def test_layernorm_without_bias_reduction_compares_dgamma_only():
    outcome = assert_passes(BIAS_FREE, "weight_gradient_reduction", dtype="float32")
    assert "grad_weight.max_abs" in outcome.metrics and "grad_bias.max_abs" not in outcome.metrics


def test_layernorm_without_bias_undeclared_fails_on_the_missing_bias():
    # Before the field existed this was the false alarm: the truth has a β the module cannot learn.
    outcome = assert_flags(impl("undeclared", "layernorm", torch_layernorm_without_bias), "gradient_equivalence")
    assert "grad_bias" in outcome.summary


def test_a_module_with_bias_declared_bias_false_fails():
    wrong = impl("has-beta", "layernorm", torch_layernorm_with_bias, bias=False)
    outcome = assert_flags(wrong, "forward_equivalence")
    assert "declared bias=False" in outcome.summary


def test_bias_attr_none_is_rejected_with_the_hint():
    with pytest.raises(ImplementationError, match="bias_attr.*declare bias=False"):
        impl("x", "layernorm", torch_layernorm_without_bias, bias_attr=None)


# -- affine="never" and fixed_params ------------------------------------------------------------------------

PARAMETERLESS = impl("olmo-like", "layernorm", ParameterlessLayerNorm, affine="never", fixed_params={"eps": 1e-5})


@pytest.mark.parametrize("prop", [*EQUIVALENCE, "adversarial_inputs", "constant_rows", "normalization_statistics",
                                  "noncontiguous_input", "dtype_preservation"])
def test_parameterless_layernorm_with_a_fixed_eps_conforms(prop):
    assert_passes(PARAMETERLESS, prop, dtype="float32")


def test_parameterless_layernorm_is_judged_in_float64_too():
    assert_passes(PARAMETERLESS, "gradcheck", dtype="float64")
    assert_passes(PARAMETERLESS, "forward_equivalence", dtype="float64")


def test_items_that_need_affine_are_skipped_with_the_reason():
    outcome = run(PARAMETERLESS, "weight_gradient_reduction", dtype="float32")
    assert outcome.verdict == "skip"
    assert "affine='never'" in outcome.summary and "affine=True" in outcome.summary


def test_items_that_vary_a_fixed_eps_are_skipped_with_the_reason():
    outcome = run(PARAMETERLESS, "scale_invariance", dtype="float32")
    assert outcome.verdict == "skip"
    assert "hard-codes eps=1e-05" in outcome.summary


def test_the_factory_is_not_passed_fixed_params_or_affine():
    seen: list[dict[str, object]] = []

    def factory(num_features: int, **kwargs: object) -> nn.Module:
        seen.append(kwargs)
        return ParameterlessLayerNorm(num_features)

    assert_passes(impl("spy", "layernorm", factory, affine="never", fixed_params={"eps": 1e-5}),
                  "forward_equivalence")
    assert seen and all(kwargs == {} for kwargs in seen)


def test_a_module_with_another_eps_than_its_fixed_params_fails():
    wrong = impl("olmo-wrong-eps", "layernorm", ParameterlessLayerNormOtherEps, affine="never",
                 fixed_params={"eps": 1e-5})
    assert_flags(wrong, "forward_equivalence")


def test_a_parameterless_module_declared_optional_errors_with_a_hint():
    # The factory ignores affine=True, so the item cannot compare γ; the error points at affine='never'.
    def factory(num_features: int, eps: float, affine: bool) -> nn.Module:
        return ParameterlessLayerNorm(num_features)

    outcome = run(impl("no-decl", "layernorm", factory), "forward_equivalence")
    assert outcome.verdict == "error" and "affine='never'" in outcome.summary


def test_fixed_params_keys_must_be_spec_params():
    bad = impl("typo", "layernorm", ParameterlessLayerNorm, affine="never", fixed_params={"epsilon": 1e-5})
    outcome = run(bad, "forward_equivalence")
    assert outcome.verdict == "error"
    assert "'typo'" in outcome.summary and "'epsilon'" in outcome.summary


def test_fixed_params_may_not_fix_affine():
    with pytest.raises(ImplementationError, match="affine='always'"):
        impl("x", "layernorm", ParameterlessLayerNorm, fixed_params={"affine": False})


def test_affine_must_be_a_known_mode():
    with pytest.raises(ImplementationError, match="affine must be one of"):
        impl("x", "layernorm", ParameterlessLayerNorm, affine=True)


def test_from_dict_accepts_the_new_fields():
    made = Implementation.from_dict({"name": "d", "family": "layernorm", "factory": ParameterlessLayerNorm,
                                     "affine": "never", "fixed_params": {"eps": 1e-5}, "bias": False})
    assert made.fixed_params == {"eps": 1e-5} and made.affine_settings == (False,)
    assert hash(made) == hash(made)  # PlanItem hashes its implementation


# -- affine="always" --------------------------------------------------------------------------------------

LLAMA = impl("llama-like", "rmsnorm", LlamaStyleRMSNorm, affine="always", dtypes=("float32", "float16", "bfloat16"))


@pytest.mark.parametrize("prop", [*EQUIVALENCE, "normalization_statistics", "noncontiguous_input",
                                  "scale_invariance", "weight_gradient_reduction"])
def test_hf_style_rmsnorm_declared_affine_always_conforms_without_a_wrapper(prop):
    assert_passes(LLAMA, prop, dtype="float32")


def test_hf_style_rmsnorm_without_the_declaration_errors():
    # The factory takes no `affine`: without affine="always" the call itself fails.
    outcome = run(impl("llama-undeclared", "rmsnorm", LlamaStyleRMSNorm), "forward_equivalence")
    assert outcome.verdict == "error" and "affine" in outcome.summary


def test_affine_always_skips_what_needs_affine_false():
    # rmsnorm's statistics probes need both settings; forward_equivalence drops the affine=False variants.
    outcome = run(LLAMA, "forward_equivalence")
    assert outcome.verdict == "pass"
    always = impl("always-ln", "layernorm", lambda c, eps: nn.LayerNorm(c, eps=eps), affine="always")
    assert_passes(always, "constant_rows")


def test_every_family_declares_the_params_fixed_params_may_name():
    for spec in specs().values():
        assert "eps" in spec.params and "affine" in spec.params


# -- eps_mode: the F.normalize convention of RMSNorm ------------------------------------------------------

class NormalizeRMSNorm(nn.Module):
    """x-transformers' RMSNorm: F.normalize (‖x‖ clamped at 1e-12) times √C times g; always owns g."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.g


NORMALIZE = impl("x_transformers-like.RMSNorm", "rmsnorm", NormalizeRMSNorm, affine="always", weight_attr="g",
                 fixed_params={"eps_mode": "clamp", "eps": 1e-12})


@pytest.mark.parametrize("prop", [*EQUIVALENCE, "adversarial_inputs", "normalization_statistics",
                                  "noncontiguous_input"])
def test_an_f_normalize_rmsnorm_declared_clamp_conforms(prop):
    assert_passes(NORMALIZE, prop, dtype="float32")


def test_an_eps_added_rmsnorm_declared_clamp_fails():
    # torch.nn.RMSNorm adds eps under the root: declared with the clamp convention, rows whose mean square is
    # near eps (the eps = 1 variant; adversarial_inputs' |x| ~ 1e-3 with eps 1e-6) are off the clamped truth.
    wrong = impl("add-as-clamp", "rmsnorm", lambda c, eps, affine: nn.RMSNorm(c, eps=eps, elementwise_affine=affine),
                 fixed_params={"eps_mode": "clamp"})
    assert_flags(wrong, "forward_equivalence")
    assert_flags(wrong, "adversarial_inputs")
    right = impl("add", "rmsnorm", lambda c, eps, affine: nn.RMSNorm(c, eps=eps, elementwise_affine=affine))
    assert_passes(right, "adversarial_inputs")


def test_eps_mode_is_never_passed_to_a_factory_and_values_are_validated():
    from normbench.reference.rmsnorm import build

    assert "eps_mode" not in specs()["rmsnorm"].default_params()
    assert build(8, eps_mode="clamp").eps_mode == "clamp"
    bad = impl("bad-mode", "rmsnorm", NormalizeRMSNorm, affine="always", weight_attr="g",
               fixed_params={"eps_mode": "sqrt"})
    outcome = run(bad, "forward_equivalence")
    assert outcome.verdict == "error" and "'sqrt'" in outcome.summary and "'bad-mode'" in outcome.summary


# -- output arity ------------------------------------------------------------------------------------------

class ReturnsTuple(nn.Module):
    def __init__(self, num_features: int, eps: float, affine: bool, arity: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.norm.weight, self.norm.bias
        self.arity = arity

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.norm(x)
        return (y, x, y)[: self.arity]


def test_a_two_tuple_is_read_as_normed_and_residual():
    assert_passes(impl("pair", "layernorm", lambda c, eps, affine: ReturnsTuple(c, eps, affine, 2)),
                  "forward_equivalence")


@pytest.mark.parametrize("arity", [1, 3])
def test_any_other_tuple_arity_is_an_error_item_with_a_clear_message(arity):
    outcome = run(impl("odd", "layernorm", lambda c, eps, affine: ReturnsTuple(c, eps, affine, arity)),
                  "forward_equivalence")
    assert outcome.verdict == "error"
    assert f"tuple of {arity} element(s)" in outcome.summary and "(normed, residual)" in outcome.summary


def test_a_convention_default_outside_its_choices_is_a_spec_error(tmp_path):
    from pathlib import Path

    from normbench.spec import SpecError, load_spec

    text = Path(specs()["rmsnorm"].path).read_text()
    bad = tmp_path / "rmsnorm.yaml"
    bad.write_text(text.replace("default: add, choices: [add, clamp]", "default: sqrt, choices: [add, clamp]"))
    with pytest.raises(SpecError, match=r"params\.eps_mode\.default.*choices"):
        load_spec(bad)
    assert specs()["rmsnorm"].params["eps_mode"].convention


class _WrappedLayerNorm(torch.nn.Module):
    """γ at `.norm.weight` (speechbrain style), not at the top-level `weight` the declaration names."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


@pytest.mark.parametrize("prop", ["scale_invariance", "forward_equivalence"])
def test_a_weight_attr_that_is_not_found_is_an_error_not_an_unrandomized_run(prop):
    # Unrandomized (γ = 1, β = 0), a module that ignores its weight would pass the invariance items.
    outcome = run(impl("wrapped", "layernorm", _WrappedLayerNorm), prop)
    assert outcome.verdict == "error" and "no tensor attribute 'weight'" in outcome.summary


class _BiasedRMSNorm(torch.nn.Module):
    """diffusers' RMSNorm(bias=True): γ·x/rms + β, which the rmsnorm family does not define."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias


def test_a_beta_on_a_family_without_one_is_an_error_naming_it():
    outcome = run(impl("biased-rms", "rmsnorm", _BiasedRMSNorm, affine="always"), "forward_equivalence")
    assert outcome.verdict == "error" and "family 'rmsnorm' has no β" in outcome.summary


def test_a_dotted_weight_attr_reaches_a_wrapped_modules_parameters():
    wrapped = impl("wrapped-dotted", "layernorm", _WrappedLayerNorm, weight_attr="norm.weight", bias_attr="norm.bias")
    assert_passes(wrapped, "forward_equivalence")
    assert_passes(wrapped, "scale_invariance")


class _NoAutogradLayerNorm(torch.nn.Module):
    """A serving kernel: computes under no_grad, so its output never carries a graph."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.inner = torch.nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.inner.weight, self.inner.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.inner(x)


@pytest.mark.parametrize("prop", ["gradient_equivalence", "frozen_parameters", "noncontiguous_input", "empty_batch",
                                  "gradient_layout", "second_order_gradients"])
def test_inference_only_skips_what_calls_backward_with_the_reason(prop):
    declared = impl("serving", "layernorm", _NoAutogradLayerNorm, inference_only=True)
    outcome = run(declared, prop)
    assert outcome.verdict == "skip" and "inference only" in outcome.summary
    assert run(impl("serving-undeclared", "layernorm", _NoAutogradLayerNorm), prop).verdict in ("fail", "error")


def test_inference_only_still_judges_the_forward():
    declared = impl("serving", "layernorm", _NoAutogradLayerNorm, inference_only=True)
    assert_passes(declared, "forward_equivalence")
    assert_passes(declared, "shift_invariance")


def test_a_module_that_compiles_gets_the_compile_variants_time_limit():
    from normbench.sandbox import VARIANT_TIMEOUT_FACTOR, Limits, item_time_limit

    limits = Limits(item_timeout=60.0)
    plain = impl("plain", "layernorm", torch.nn.LayerNorm)
    compiling = impl("compiling", "layernorm", torch.nn.LayerNorm, compiles=True)
    assert item_time_limit(limits, plain, "eager") == (60.0, "")
    assert item_time_limit(limits, compiling, "eager") == (60.0 * VARIANT_TIMEOUT_FACTOR, "declared compiles=True")
    assert item_time_limit(limits, plain, "compile")[0] == 60.0 * VARIANT_TIMEOUT_FACTOR


class _LayerNormFp32(torch.nn.LayerNorm):
    """open_clip's LayerNormFp32: float32 statistics and parameters under half inputs, the result cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.to(torch.float32), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.to(x.dtype)


def _fp32_factory(c, eps, affine):
    return _LayerNormFp32(c, eps=eps, elementwise_affine=affine)


@pytest.mark.parametrize("prop", ["forward_equivalence", "gradient_equivalence", "dtype_preservation"])
def test_param_dtype_judges_a_module_that_keeps_float32_parameters_under_half_inputs(prop):
    declared = impl("fp32-params", "layernorm", _fp32_factory, param_dtype="float32")
    outcome = assert_passes(declared, prop, dtype="bfloat16")
    if prop == "dtype_preservation":
        assert "float32 parameters (declared param_dtype)" in outcome.summary
    # undeclared, the harness casts γ to bfloat16 and the float32 layer_norm refuses it
    assert run(impl("fp32-undeclared", "layernorm", _fp32_factory), prop, dtype="bfloat16").verdict in (
        "fail", "error")


def test_param_dtype_must_be_a_dtype():
    with pytest.raises(ImplementationError, match="param_dtype"):
        impl("bad", "layernorm", torch.nn.LayerNorm, param_dtype="fp32")


def test_ranks_declaration_skips_the_other_ranks_and_says_how_much_was_judged():
    graph = impl("graph-norm", "layernorm", lambda c, eps, affine: torch.nn.LayerNorm(c, eps=eps,
                                                                                     elementwise_affine=affine),
                 ranks=(2,))
    outcome = assert_passes(graph, "forward_equivalence")
    assert outcome.metrics["cases_not_declared"] >= 1 and "declares ranks [2]" in outcome.summary
    skipped = run(graph, "leading_ranks")  # ranks 1, 4, 5: none of them declared
    assert skipped.verdict == "skip" and "outside what the implementation declares" in skipped.summary


def test_hidden_multiple_declaration_skips_the_other_hidden_sizes():
    kernel = impl("cpu-kernel", "rmsnorm", lambda c, eps: torch.nn.RMSNorm(c, eps=eps), affine="always",
                  hidden_multiple=8)
    outcome = assert_passes(kernel, "gradient_layout")
    assert outcome.metrics["cases_not_declared"] == 1 and "hidden size 769" in outcome.summary


@pytest.mark.parametrize(("field", "value"), [("ranks", ()), ("ranks", (0,)), ("hidden_multiple", 0),
                                              ("hidden_multiple", "8")])
def test_declared_shapes_are_validated(field, value):
    with pytest.raises(ImplementationError, match=field):
        impl("bad", "layernorm", torch.nn.LayerNorm, **{field: value})


def test_a_rank_outside_the_declaration_fails_without_it():
    class Rank2Only(torch.nn.LayerNorm):
        def forward(self, x):
            if x.dim() != 2:
                raise ValueError("expected (N, C)")
            return super().forward(x)

    undeclared = impl("rank2", "layernorm", lambda c, eps, affine: Rank2Only(c, eps=eps, elementwise_affine=affine))
    assert run(undeclared, "forward_equivalence").verdict == "error"
    declared = impl("rank2-declared", "layernorm", lambda c, eps, affine: Rank2Only(c, eps=eps,
                                                                                   elementwise_affine=affine),
                    ranks=(2,))
    assert_passes(declared, "forward_equivalence")


class _LayerNorm2d(torch.nn.LayerNorm):
    """timm's LayerNorm2d: a per-token LayerNorm over C of an (N, C, H, W) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class _ChannelsLastBatchNorm(torch.nn.BatchNorm1d):
    """speechbrain's BatchNorm1d: (N, L, C) in, statistics per C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(-1, 1)).movedim(1, -1)


@pytest.mark.parametrize("prop", ["forward_equivalence", "gradient_equivalence", "shift_invariance"])
def test_a_channels_first_layernorm_is_judged_through_the_layout_declaration(prop):
    factory = lambda c, eps, affine: _LayerNorm2d(c, eps=eps, elementwise_affine=affine)  # noqa: E731
    assert_passes(impl("timm-ln2d", "layernorm", factory, layout="channels_first"), prop)
    assert run(impl("timm-ln2d-undeclared", "layernorm", factory), prop).verdict in ("fail", "error")


def test_a_channels_last_batchnorm_is_judged_through_the_layout_declaration():
    factory = lambda c, eps, affine, momentum, track_running_stats: _ChannelsLastBatchNorm(  # noqa: E731
        c, eps=eps, affine=affine, momentum=momentum, track_running_stats=track_running_stats)
    assert_passes(impl("sb-bn", "batchnorm", factory, layout="channels_last"), "forward_equivalence", mode="train")
    assert_passes(impl("sb-bn", "batchnorm", factory, layout="channels_last"), "running_statistics")


class _NestedBatchNorm(torch.nn.Module):
    """torch_geometric's BatchNorm: a wrapper whose running statistics live at `.module.running_mean`."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.module = torch.nn.BatchNorm1d(num_features, eps=eps, affine=affine, momentum=momentum,
                                           track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


@pytest.mark.parametrize("prop", ["running_statistics", "forward_equivalence", "module_hygiene"])
def test_state_attr_reaches_nested_running_statistics(prop):
    nested = impl("pyg-bn", "batchnorm", _NestedBatchNorm, state_attr="module", weight_attr="module.weight",
                  bias_attr="module.bias")
    assert_passes(nested, prop, mode=None if prop == "running_statistics" else "train")
    # undeclared, the running statistics are not found, so the eval-mode map is judged against random ones
    undeclared = impl("pyg-bn-undeclared", "batchnorm", _NestedBatchNorm, weight_attr="module.weight",
                      bias_attr="module.bias")
    assert run(undeclared, "forward_equivalence", mode="eval").verdict in ("fail", "error")
