"""Deployment variants: the plan dimension, the explained items of a variant that cannot be built, and
each variant-specific property shown to fail on a mutant and to pass on torch's modules."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import impl, run, shipped, specs
from mutants_variants import export_drops_running_stats, recompiles_every_shape, sloppy_when_compiled

from normbench.checks.base import CHECKS
from normbench.pytest_plugin import known_entry_applies
from normbench.registry import Registry
from normbench.runner import PlanItem, build_plan
from normbench.variants import (
    VARIANT_PLAN_DTYPES,
    UnknownVariantError,
    VariantUnavailable,
    apply_variant,
    check_variant,
    last_export,
)

VARIANT_CHECKS = ("variant_matches_eager", "no_recompile_storm", "export_ops", "export_train_eval_semantics")


def torch_impl(name: str):
    return shipped(families=False)[name]


def _registry(*names: str) -> Registry:
    registry = Registry()
    for name in names:
        registry.add(torch_impl(name))
    return registry


# -- the plan ----------------------------------------------------------------------------------------------------

def test_eager_ids_are_unchanged_and_a_variant_is_the_last_segment():
    spec = specs()["layernorm"]
    prop = next(p for p in spec.properties if p.name == "forward_equivalence")
    ln = torch_impl("torch.nn.LayerNorm")
    eager = PlanItem(spec, ln, prop, "any", "float32")
    assert eager.test_id == "layernorm[torch.nn.LayerNorm-forward_equivalence-float32]"
    assert (PlanItem(spec, ln, prop, "any", "float32", variant="compile").test_id
            == "layernorm[torch.nn.LayerNorm-forward_equivalence-float32-compile]")


def test_the_default_plan_has_no_variant_specific_items():
    eager = build_plan(specs(), _registry("torch.nn.LayerNorm", "torch.nn.BatchNorm1d"))
    assert eager and all(item.variant == "eager" for item in eager)
    assert not [i for i in eager if i.prop.check in VARIANT_CHECKS]


def test_variant_specific_properties_are_planned_only_under_their_variant():
    registry = _registry("torch.nn.LayerNorm", "torch.nn.BatchNorm1d")
    compiled = build_plan(specs(), registry, variants=["compile"])
    exported = build_plan(specs(), registry, variants=["export"])
    assert {i.prop.check for i in compiled} >= {"variant_matches_eager", "no_recompile_storm"}
    assert not {"export_ops", "export_train_eval_semantics"} & {i.prop.check for i in compiled}
    assert {i.prop.check for i in exported} >= {"variant_matches_eager", "export_ops", "export_train_eval_semantics"}
    assert "no_recompile_storm" not in {i.prop.check for i in exported}
    # the bounded plan: the variant's dtypes only; --variant-plan full judges every property in every dtype
    assert {i.dtype for i in compiled} <= set(VARIANT_PLAN_DTYPES["compile"])
    full = build_plan(specs(), registry, variants=["compile"], full_variant_plan=True)
    assert len(full) > len(compiled)
    assert {i.prop.name for i in full} >= {"shift_invariance", "gradcheck"}


def test_the_references_are_judged_compiled_or_exported_only_in_the_full_plan():
    # the float64 references are the truth in eager mode; compiling them judges no deployed code
    registry = _registry("torch.nn.LayerNorm", "reference.layernorm")
    eager = build_plan(specs(), registry)
    assert {i.impl.name for i in eager} == {"torch.nn.LayerNorm", "reference.layernorm"}
    for variant in ("compile", "export"):
        bounded = build_plan(specs(), registry, variants=["eager", variant])
        assert {i.impl.name for i in bounded if i.variant == variant} == {"torch.nn.LayerNorm"}
        assert {i.impl.name for i in bounded if i.variant == "eager"} == {"torch.nn.LayerNorm", "reference.layernorm"}
        full = build_plan(specs(), registry, variants=[variant], full_variant_plan=True)
        assert "reference.layernorm" in {i.impl.name for i in full}


def test_a_variant_draws_fewer_kernel_threshold_sizes_and_the_same_rows():
    from normbench.checks.base import CheckContext
    from normbench.checks.equivalence import kernel_variants
    from normbench.inputs import THRESHOLD_FEATURES
    from normbench.variants import VARIANT_THRESHOLD_FEATURES

    spec = specs()["layernorm"]
    prop = next(p for p in spec.properties if p.name == "forward_equivalence")
    ln = torch_impl("torch.nn.LayerNorm")

    def cases(variant: str, profile: str = "ci") -> dict[int, object]:
        ctx = CheckContext(impl=ln, spec=spec, prop=prop, dtype=torch.float32, mode="any", variant=variant,
                           profile=profile)
        return {v.case.shape[-1]: v.case for v in kernel_variants(ctx)}

    eager, compiled = cases("eager"), cases("compile")
    assert set(eager) == {4, *THRESHOLD_FEATURES}
    assert set(compiled) == {4, *VARIANT_THRESHOLD_FEATURES} and len(compiled) < len(eager)
    assert all(compiled[c] == eager[c] for c in compiled)  # same seeds: the subset draws the same rows
    assert set(cases("compile", profile="dev")) == set(eager)  # dev / thorough draw what eager draws


def _ctx(family: str, implementation: str, prop_name: str, variant: str, profile: str = "ci"):
    from normbench.checks.base import CheckContext

    spec = specs()[family]
    prop = next(p for p in spec.properties if p.name == prop_name)
    return CheckContext(impl=shipped()[implementation], spec=spec, prop=prop, dtype=torch.float32, mode="any",
                        variant=variant, profile=profile)


def _configurations(ctx) -> set[tuple[int, bool, float]]:
    from normbench.checks.equivalence import _variants

    return {(v.case.shape[-1], dict(v.params)["affine"], dict(v.params)["eps"]) for v in _variants(ctx)}


def test_a_block_is_judged_in_its_default_configuration_under_a_variant():
    # The placement specs' variant_configurations: default: eps and affine are the block's LayerNorms', judged
    # under the variant by the layernorm family; each other configuration is a whole block's compilation.
    for prop_name in ("forward_equivalence", "gradient_equivalence"):
        eager = _configurations(_ctx("placement_pre_ln", "normbench.blocks.pre_ln", prop_name, "eager"))
        compiled = _configurations(_ctx("placement_pre_ln", "normbench.blocks.pre_ln", prop_name, "compile"))
        assert {affine for _, affine, _ in eager} == {True, False} and {eps for *_, eps in eager} > {1e-5}
        assert compiled and compiled < eager
        assert {(affine, eps) for _, affine, eps in compiled} == {(True, 1e-5)}
        dev = _configurations(_ctx("placement_pre_ln", "normbench.blocks.pre_ln", prop_name, "compile", "dev"))
        assert dev == eager  # the dev and thorough profiles lift the bound
    # A norm's own family keeps its configurations under the variant: both affine settings and the eps variant.
    norm = _configurations(_ctx("layernorm", "torch.nn.LayerNorm", "forward_equivalence", "compile"))
    assert {affine for _, affine, _ in norm} == {True, False} and 1.0 in {eps for *_, eps in norm}


def test_a_variant_sweeps_the_smallest_and_the_default_eps_on_adversarial_inputs():
    from normbench.checks.numerics import EPS_VALUES, _triggers

    def eps_of(variant: str, implementation: str = "torch.nn.LayerNorm", family: str = "layernorm") -> set[float]:
        return {dict(t.params)["eps"] for t in _triggers(_ctx(family, implementation, "adversarial_inputs", variant))}

    assert eps_of("eager") == set(EPS_VALUES)
    assert eps_of("compile") == eps_of("export") == {1e-12, 1e-5}
    # the default is the implementation's: PartialRMSNorm's 1e-8
    assert eps_of("compile", "normbench.PartialRMSNorm", "prmsnorm") == {1e-12, 1e-8}


def test_under_a_variant_one_implementation_s_items_share_an_xdist_worker():
    from normbench.xdist_schedule import ImplementationScheduling

    sched = ImplementationScheduling.__new__(ImplementationScheduling)
    sched._scopes = {"layernorm[a-forward_equivalence-float32-compile]": "a-compile",
                     "layernorm[a-constant_rows-bfloat16-compile]": "a-compile",
                     "rmsnorm[b-forward_equivalence-float32-compile]": "b-compile"}
    scope = sched._split_scope
    assert (scope("suite/conformance.py::layernorm[a-forward_equivalence-float32-compile]")
            == scope("suite/conformance.py::layernorm[a-constant_rows-bfloat16-compile]") == "a-compile")
    assert scope("suite/conformance.py::rmsnorm[b-forward_equivalence-float32-compile]") == "b-compile"
    assert scope("suite/conformance.py::problem0") == "suite/conformance.py::problem0"


def test_several_variants_in_one_plan_keep_distinct_ids():
    plan = build_plan(specs(), _registry("torch.nn.RMSNorm"), variants=["eager", "compile", "export"])
    ids = [i.test_id for i in plan]
    assert len(ids) == len(set(ids))
    assert {i.variant for i in plan} == {"eager", "compile", "export"}


def test_an_unknown_variant_is_a_clear_error():
    with pytest.raises(UnknownVariantError, match="unknown variant 'onnx'.*eager, compile, export"):
        check_variant("onnx")
    with pytest.raises(UnknownVariantError):
        build_plan(specs(), _registry("torch.nn.RMSNorm"), variants=["onnx"])


def test_every_variant_check_is_registered_with_its_variants():
    assert CHECKS["variant_matches_eager"].variants == ("compile", "export")
    assert CHECKS["no_recompile_storm"].variants == ("compile",)
    assert CHECKS["export_ops"].variants == CHECKS["export_train_eval_semantics"].variants == ("export",)
    assert CHECKS["forward_equivalence"].variants is None


def test_known_failures_found_in_eager_mode_do_not_apply_to_a_variant():
    eager_entry = "layernorm[torch.nn.LayerNorm-weight_gradient_reduction-float16"
    assert known_entry_applies(eager_entry, "eager")
    assert not known_entry_applies(eager_entry, "compile")
    compiled_entry = "layernorm[torch.nn.LayerNorm-forward_equivalence-bfloat16-compile]"
    assert known_entry_applies(compiled_entry, "compile")
    assert not known_entry_applies(compiled_entry, "eager")
    assert not known_entry_applies(compiled_entry, "export")
    # a property whose name contains a variant's name is not a variant segment
    assert known_entry_applies("layernorm[torch.nn.LayerNorm-export_ops-float32-export]", "export")


# -- the compile variant -----------------------------------------------------------------------------------------

def test_a_compiled_path_that_diverges_from_eager_is_flagged():
    sloppy = impl("mutant.sloppy_when_compiled", "layernorm", sloppy_when_compiled)
    outcome = run(sloppy, "variant_matches_eager", variant="compile")
    assert outcome.verdict == "fail", outcome.summary
    assert outcome.key is not None and outcome.key.variant == "compile"
    assert "ulp apart" in outcome.summary and outcome.metrics["bitwise"] is False
    # the same module in eager mode is torch's LayerNorm: the divergence exists only where it is deployed
    assert run(sloppy, "forward_equivalence").verdict == "pass"
    assert run(sloppy, "forward_equivalence", variant="compile").verdict == "fail"


def test_compiled_torch_layernorm_matches_eager_and_reports_the_ulp_distance():
    outcome = run(torch_impl("torch.nn.LayerNorm"), "variant_matches_eager", variant="compile")
    assert outcome.verdict == "pass", outcome.summary
    assert any(k.endswith(".max_ulp") for k in outcome.metrics)
    assert 0 <= outcome.metrics["tol_ratio"] <= 1


def test_a_module_that_recompiles_on_every_shape_is_flagged():
    outcome = run(impl("mutant.recompiles", "layernorm", recompiles_every_shape), "no_recompile_storm",
                  variant="compile")
    assert outcome.verdict == "fail", outcome.summary
    assert outcome.metrics["recompiles"] > outcome.metrics["bound"]


def test_torch_layernorm_compiles_once_per_shape_class():
    outcome = run(torch_impl("torch.nn.LayerNorm"), "no_recompile_storm", variant="compile")
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.metrics["recompiles"] <= outcome.metrics["bound"]


def test_a_compiled_module_keeps_its_attributes_and_survives_deepcopy():
    import copy

    module = apply_variant(torch.nn.LayerNorm(4), "compile")
    assert isinstance(module, torch.nn.LayerNorm) and type(module).__name__ == "LayerNorm"
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.weight.mul_(2)  # the copy must run with its own parameters, not the original's
    x = torch.randn(3, 4)
    assert torch.allclose(twin(x), 2 * module(x) - module.bias, atol=1e-5)


# -- the export variant ------------------------------------------------------------------------------------------
# (these build the graphs: @pytest.mark.deploy skips them, with the reason, without the deploy extra)

@pytest.mark.deploy
def test_an_export_that_drops_the_eval_running_statistics_is_flagged():
    outcome = run(impl("mutant.export_drops_stats", "batchnorm", export_drops_running_stats),
                  "export_train_eval_semantics", variant="export")
    assert outcome.verdict == "fail", outcome.summary
    assert "folded map of the running statistics" in outcome.summary


@pytest.mark.deploy
def test_torch_batchnorm_eval_export_is_the_folded_map_and_a_train_export_is_refused():
    outcome = run(torch_impl("torch.nn.BatchNorm1d"), "export_train_eval_semantics", variant="export")
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.metrics["train_export"] == "refused"
    assert "running_mean" in outcome.summary


@pytest.mark.deploy
def test_the_onnx_op_set_is_recorded():
    ln = run(torch_impl("torch.nn.LayerNorm"), "export_ops", variant="export")
    assert ln.verdict == "report" and ln.metrics["onnx_norm_op"] == "LayerNormalization"
    rms = run(torch_impl("torch.nn.RMSNorm"), "export_ops", variant="export")
    assert rms.metrics["decomposed"] is True and "ReduceMean" in rms.metrics["onnx_ops"]


@pytest.mark.deploy
def test_items_that_need_autograd_skip_under_export_with_the_reason():
    ln = torch_impl("torch.nn.LayerNorm")
    upfront = run(ln, "gradient_equivalence", variant="export")
    assert upfront.verdict == "skip" and "export variant is inference-only" in upfront.summary
    # determinism differentiates as a part: it runs, and its backward becomes the same explained skip
    partial = run(ln, "determinism", variant="export")
    assert partial.verdict == "skip" and "inference-only" in partial.summary


@pytest.mark.deploy
def test_a_variant_that_cannot_be_built_is_one_explained_skip():
    bn = torch_impl("torch.nn.BatchNorm1d")
    train = run(bn, "forward_equivalence", mode="train", variant="export")
    assert train.verdict == "skip" and "refuses a train-mode module" in train.summary
    bf16 = run(torch_impl("torch.nn.LayerNorm"), "forward_equivalence", dtype="bfloat16", variant="export")
    assert bf16.verdict == "skip" and "bfloat16" in bf16.summary
    module = apply_variant(torch.nn.InstanceNorm1d(4).double(), "export")
    with pytest.raises(VariantUnavailable, match="ONNX Runtime refused the graph"):
        module(torch.randn(2, 4, 3, dtype=torch.float64))


@pytest.mark.deploy
def test_an_exported_module_follows_its_weights_and_its_mode():
    bn = torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    eager = bn.eval()(x := torch.randn(5, 4))
    module = apply_variant(bn, "export")
    assert torch.allclose(module(x), eager, atol=1e-6)
    with torch.no_grad():
        module.weight.mul_(3)  # the same graph, fed the new weight: no stale export
    assert torch.allclose(module(x), 3 * (eager - module.bias) + module.bias, atol=1e-5)
    assert last_export(module).ops == ("BatchNormalization",)


# -- the suite, end to end (the bounded subset CI runs) ----------------------------------------------------------

@pytest.mark.slow
def test_the_suite_runs_a_compile_subset_and_records_the_variant(tmp_path):
    from factories.suite_runs import run_suite

    eager = run_suite("--results-dir", str(tmp_path), "--impl", "torch.nn.LayerNorm",
                      "-k", "forward_equivalence-float32")
    assert eager.returncode == 0, eager.stdout[-3000:]
    proc = run_suite("--results-dir", str(tmp_path), "--variant", "compile", "--impl", "torch.nn.LayerNorm",
                     "-k", "forward_equivalence-float32 or variant_matches_eager-float32", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "forward_equivalence-float32-compile" in proc.stdout
    (record,) = (tmp_path / "raw").rglob("conformance.json")
    outcomes = json.loads(record.read_text())["outcomes"]
    judged = {tid: o for tid, o in outcomes.items() if o["verdict"] != "unjudged"}
    compiled = {tid: o for tid, o in judged.items() if o["variant"] == "compile"}
    assert set(compiled) == {"layernorm[torch.nn.LayerNorm-forward_equivalence-float32-compile]",
                             "layernorm[torch.nn.LayerNorm-variant_matches_eager-float32-compile]"}
    assert all(o["verdict"] == "pass" for o in compiled.values())
    # the compile run kept the eager outcome the first run stored
    assert judged["layernorm[torch.nn.LayerNorm-forward_equivalence-float32]"]["variant"] == "eager"
