"""The deployment objects (normbench.deploy): one registry of names and aliases for the conformance suite and the
benchmarks, one error, what each deployment declares (and that the sandbox and the plan follow it), stored
records under an older name, and the checks' own flags against what the runner does with them."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from typing import Any

import pytest
import torch
from helpers import shipped, specs
from torch import nn

from normbench import deploy, sandbox
from normbench.bench import variants_bench
from normbench.checks.base import CHECKS, CheckContext, register_check
from normbench.deploy.base import Deployment
from normbench.registry import Registry
from normbench.runner import PlanItem, build_plan, judge
from normbench.skip import Skip
from normbench.store.validate import canonical_deployments
from normbench.variants import skip_reason

# -- names, aliases, the registry -----------------------------------------------------------------------------


def test_every_name_and_alias_resolves_to_one_object_shared_by_both_sides():
    assert [d.name for d in deploy.all()] == ["eager", "compile", "export"]
    assert deploy.get("onnxruntime") is deploy.get("export") is deploy.EXPORT
    assert deploy.canonical("onnxruntime") == "export" and deploy.canonical(None) == "eager"
    assert deploy.names(aliases=True) == ["eager", "compile", "export", "onnxruntime"]
    # the conformance suite's and the benchmarks' old entry points answer with the same objects and names
    from normbench import variants

    assert variants.VARIANTS == variants_bench.VARIANTS == ("eager", "compile", "export")
    assert variants.check_variant("onnxruntime") == variants_bench.check_variant("onnxruntime") == "export"


def test_an_unknown_name_is_an_error_naming_the_accepted_ones():
    with pytest.raises(deploy.UnknownDeploymentError,
                       match=r"unknown variant 'tvm'; known variants: eager, compile, export \(alias onnxruntime\)"):
        deploy.get("tvm")
    with pytest.raises(ValueError, match="unknown variant 'tvm'"):  # as the benchmarks' ValueError did
        variants_bench.check_variant("tvm")


def test_a_name_two_deployments_claim_is_refused():
    class Other(Deployment):
        name = "aot"
        aliases = ("onnxruntime",)
        title = "another runtime"

    with pytest.raises(ValueError, match="'onnxruntime' is claimed by <deployment export> and <deployment aot>"):
        deploy.index((*deploy.all(), Other()))
    assert set(deploy.index(deploy.all())) == {"eager", "compile", "export", "onnxruntime"}


def test_one_error_for_both_sides_and_the_old_names_are_it():
    from normbench import variants

    assert variants.VariantUnavailable is variants_bench.VariantUnavailable is deploy.DeploymentUnavailable
    assert issubclass(deploy.DeploymentUnavailable, Skip)  # one explained item in the conformance suite
    # not a RuntimeError: second_order catches the module's own RuntimeErrors and must not swallow this one
    assert not issubclass(deploy.DeploymentUnavailable, RuntimeError)


# -- what each deployment declares, and who reads it ------------------------------------------------------------


def test_each_deployment_declares_what_the_plan_and_the_benchmarks_read():
    eager, compiled, exported = deploy.EAGER, deploy.COMPILE, deploy.EXPORT
    assert eager.default and not compiled.default and not exported.default
    assert exported.inference_only and not compiled.inference_only and exported.passes == ("forward", "inference")
    assert "bfloat16" not in exported.dtypes and compiled.dtypes is None  # numpy has no bfloat16
    assert compiled.plan_dtypes == ("float32", "bfloat16") and exported.plan_dtypes == ("float32", "float16")
    assert set(exported.plan_dtypes) <= exported.dtypes


def test_the_sandbox_follows_each_deployments_timeout_factor_and_preload():
    # normbench.sandbox reads them from the deployments; what it derives must say what the deployments do
    plain = shipped(families=False)["torch.nn.LayerNorm"]
    limits = sandbox.Limits()
    for d in deploy.all():
        assert sandbox.item_time_limit(limits, plain, d.name)[0] == limits.item_timeout * d.timeout_factor, d.name
    preloaded = tuple(d.name for d in deploy.all() if d.preload)
    assert sandbox._PRELOADED_VARIANTS == preloaded == ("compile",)
    for d in deploy.all():
        if d.preload:
            # the sandbox imports normbench.preload.<name>; the module must exist (a wheel once lost it)
            assert d.preload == f"normbench.preload.{d.name}" and importlib.util.find_spec(d.preload) is not None


def test_wrap_keeps_the_module_and_its_class_name_and_eager_is_the_module_itself():
    module = nn.LayerNorm(4)
    assert deploy.EAGER.wrap(module) is module and type(module) is nn.LayerNorm
    wrapped = deploy.COMPILE.wrap(module)
    assert wrapped is module and type(module).__name__ == "LayerNorm" and deploy.base_class(module) is nn.LayerNorm
    assert type(module)._normbench_variant == "compile"


class _Slotted:
    """A module-like object with __slots__: the deployed subclass has a __dict__, so the class swap is refused."""

    __slots__ = ("x",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_module_whose_class_cannot_be_swapped_is_unavailable_with_the_reason():
    with pytest.raises(deploy.DeploymentUnavailable, match="compile variant unavailable: cannot wrap _Slotted"):
        deploy.COMPILE.wrap(_Slotted())  # type: ignore[arg-type]


# -- an unavailable dependency ----------------------------------------------------------------------------------


def test_export_without_onnxruntime_is_unavailable_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError

    class Fresh(nn.Module):  # a class of its own: no exported graph cached from another test
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(deploy.DeploymentUnavailable, match=r"onnxruntime is not installed \(pip install"):
        deploy.EXPORT.build(Fresh(), torch.ones(2, 3), pass_name="inference")
    with pytest.raises(deploy.DeploymentUnavailable, match=r"export variant unavailable: .*normbench\[deploy\]"):
        deploy.EXPORT.wrap(Fresh())(torch.ones(2, 3))


def test_export_refuses_a_backward_pass_before_building():
    with pytest.raises(deploy.DeploymentUnavailable, match="inference only .*'backward' cannot be built"):
        deploy.EXPORT.build(nn.LayerNorm(4), torch.ones(2, 4), pass_name="backward")


def test_a_compiler_that_fails_is_unavailable_with_its_error(monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda *a, **k: broken)
    with pytest.raises(deploy.DeploymentUnavailable, match="torch.compile failed: RuntimeError: no C\\+\\+ compiler"):
        deploy.COMPILE.build(nn.LayerNorm(4), torch.ones(2, 4), pass_name="inference")

    class Fresh(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    with pytest.raises(deploy.DeploymentUnavailable, match="compile variant unavailable: torch.compile failed on "
                                                           ".*Fresh where the eager forward runs: RuntimeError"):
        deploy.COMPILE.wrap(Fresh())(torch.ones(2))


# -- stored records under an older name ----------------------------------------------------------------------


def _bench_entry(case_id: str, variant: str | None, median: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": case_id, "median_s": median}
    if variant is not None:
        entry["variant"] = variant
    return entry


def test_a_benchmark_stored_as_onnxruntime_reads_as_export_and_pairs_with_a_new_one():
    old = "layernorm[torch.nn.LayerNorm-8x64-float32-inference-onnxruntime]"
    new = "layernorm[torch.nn.LayerNorm-8x64-float32-inference-export]"
    eager = "layernorm[torch.nn.LayerNorm-8x64-float32-inference]"
    entries = {eager: _bench_entry(eager, None, 1.0), old: _bench_entry(old, "onnxruntime", 2.0)}
    read = canonical_deployments(entries)
    assert list(read) == [eager, new] and read[new]["id"] == new and read[new]["variant"] == "export"
    assert read[eager] is entries[eager]
    # both present (a merge of an old and a new run): the canonical one, written by this version, stays
    both = canonical_deployments({**entries, new: _bench_entry(new, "export", 3.0)})
    assert list(both) == [eager, new] and both[new]["median_s"] == 3.0
    claim = {"id": "folded_norm_speed[onnxruntime]", "details": {"variant": "onnxruntime"}}
    assert canonical_deployments({claim["id"]: claim})["folded_norm_speed[export]"]["details"]["variant"] == "export"
    # a name this version does not know stays as stored
    assert deploy.record_name({"variant": "tvm"}) == "tvm" and deploy.canonical_id("a[b-tvm]") == "a[b-tvm]"


# -- the checks' flags against what the runner does -----------------------------------------------------------


class _NoGrad(Deployment):
    """An inference-only deployment without a compiler: the forward runs under no_grad, so nothing it returns can be
    differentiated, as an ONNX Runtime output cannot. What export's inference_only means, in milliseconds."""

    name = "no_grad_probe"
    title = "forward under torch.no_grad"
    inference_only = True
    plan_dtypes = ("float32", "float64")

    def _forward(self, cls: type[nn.Module]) -> Any:
        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            with torch.no_grad():
                return cls.forward(module, *args, **kwargs)
        return forward


#: an implementation whose spec holds the check and on which it runs (the first torch one otherwise)
_JUDGED_ON = {"fused_residual": "normbench.FusedAddLayerNorm", "stateful_trajectory": "normbench.MABN"}


def _item(check: str, variant: str) -> PlanItem:
    impls = shipped()
    loaded = specs()
    candidates = [impls[_JUDGED_ON[check]]] if check in _JUDGED_ON else \
        sorted((i for i in impls.values() if i.name.startswith("torch.")), key=lambda i: i.name)
    for impl in candidates:
        for prop in loaded[impl.family].properties:
            if prop.check == check:
                dtype = "float64" if "float32" not in (prop.dtypes or CHECKS[check].default_dtypes) else "float32"
                return PlanItem(loaded[impl.family], impl, prop, next(iter(prop.expect)), dtype, variant=variant)
    raise AssertionError(f"no implementation to judge {check} on")


def _needs_gradients(item: PlanItem) -> bool:
    """Whether the check's verdict on `item` rests on differentiating through the module: under the no-grad probe
    it raises autograd's error, or observes something else than in eager mode."""
    def observe(variant: str) -> str:
        ctx = CheckContext(impl=item.impl, spec=item.spec, prop=item.prop, dtype=getattr(torch, item.dtype),
                           mode=item.mode, variant=variant)
        try:
            return str(CHECKS[item.prop.check].fn(ctx).holds)
        except RuntimeError as exc:
            return "needs autograd" if "does not require grad" in str(exc) else f"raised {exc}"
    return observe(_NoGrad.name) != observe(deploy.EAGER.name)


def flag_problems(checks: list[str]) -> list[str]:
    """Each check whose `differentiates` flag disagrees with what the runner does under an inference-only
    deployment: flagged, it is skipped up front, so it must need gradients (else an item is lost for nothing);
    not flagged, it is judged, so its verdict must be the eager one or the runner's own inference-only skip (else
    a deployment without autograd gives it a verdict it did not earn)."""
    problems = []
    for check in checks:
        info = CHECKS[check]
        if info.differentiates is not None:
            if not _needs_gradients(_item(check, deploy.EAGER.name)):
                problems.append(f"{check}: flagged differentiates={info.differentiates!r}, but it judges the same "
                                "without gradients")
            continue
        probe, eager = judge(_item(check, _NoGrad.name)), judge(_item(check, deploy.EAGER.name))
        runtime_skip = probe.verdict == "skip" and "inference-only" in probe.summary
        if not runtime_skip and probe.verdict != eager.verdict:
            problems.append(f"{check}: not flagged differentiates, and without gradients it is {probe.verdict} where "
                            f"eager is {eager.verdict}: {probe.summary[:200]}")
    return problems


@pytest.fixture
def no_grad_probe(monkeypatch):
    probe = _NoGrad()
    monkeypatch.setitem(deploy._BY_NAME, probe.name, probe)
    return probe


def _judged_under_a_deployment() -> list[str]:
    """The checks a deployment's bounded plan judges or skips up front: the ones whose flags matter there."""
    return sorted(n for n, i in CHECKS.items() if i.variants is None and (i.deployment_sensitive or i.differentiates))


def test_every_check_flag_agrees_with_what_the_runner_does(no_grad_probe):
    assert flag_problems(_judged_under_a_deployment()) == []


def test_a_check_flagged_wrongly_is_caught(no_grad_probe, monkeypatch):
    # gradcheck unflagged: a deployment without autograd would judge it, and it would fail there
    monkeypatch.setitem(CHECKS, "gradcheck", dataclasses.replace(CHECKS["gradcheck"], differentiates=None))
    # forward_equivalence flagged: it would be skipped under export though it needs no gradient
    monkeypatch.setitem(CHECKS, "forward_equivalence",
                        dataclasses.replace(CHECKS["forward_equivalence"], differentiates="compares outputs"))
    problems = flag_problems(["gradcheck", "forward_equivalence", "gradient_equivalence"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("gradcheck: not flagged differentiates, and without gradients it is fail")
    assert problems[1].startswith("forward_equivalence: flagged differentiates='compares outputs', but it judges")


def test_the_flags_decide_the_bounded_plan_and_the_up_front_skips():
    registry = Registry()
    for name, impl in shipped(families=False).items():
        if name in ("torch.nn.LayerNorm", "torch.nn.BatchNorm1d"):
            registry.add(impl)
    for variant in ("compile", "export"):
        d = deploy.get(variant)
        items = build_plan(specs(), registry, variants=[variant])
        for item in items:
            info = CHECKS[item.prop.check]
            assert info.variants is not None or info.deployment_sensitive, item.test_id
            assert item.dtype in d.plan_dtypes and (item.dtype == "float32" or info.accuracy), item.test_id
        sensitive = {n for n, i in CHECKS.items() if i.deployment_sensitive}
        assert sensitive <= {i.prop.check for i in items} | {"fused_residual", "running_statistics"}
    skipped = {i.prop.check for i in build_plan(specs(), registry, variants=["export"])
               if skip_reason("export", CHECKS[i.prop.check])}
    assert skipped == {n for n, i in CHECKS.items() if i.differentiates and i.deployment_sensitive}


def test_the_flags_are_the_lists_they_replaced():
    # normbench.variants matched these name lists before the checks carried their flags
    assert {n for n, i in CHECKS.items() if i.deployment_sensitive} == {
        "forward_equivalence", "gradient_equivalence", "weight_gradient_reduction", "adversarial_inputs",
        "constant_rows", "dtype_preservation", "running_statistics", "train_eval_consistency", "fused_residual"}
    assert {n for n, i in CHECKS.items() if i.accuracy} == {
        "forward_equivalence", "variant_matches_eager", "dtype_preservation"}
    assert {n: i.differentiates for n, i in CHECKS.items() if i.differentiates} == {
        "gradient_equivalence": "compares input gradients",
        "gradcheck": "differentiates numerically and analytically through the module",
        "weight_gradient_reduction": "compares dγ/dβ",
        "stateful_trajectory": "takes optimizer steps through the module"}


def test_accuracy_without_a_deployment_judging_the_check_is_refused():
    with pytest.raises(ValueError, match="check 'half_only': accuracy=True only matters"):
        register_check("half_only", accuracy=True)
    assert "half_only" not in CHECKS
