"""Benchmark variants: eager, torch.compile and ONNX Runtime builds, planned, prepared and explained when impossible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normbench.bench.harness import BenchCase, plan_cases, prepare
from normbench.bench.variants_bench import VariantUnavailable, build_variant
from normbench.builtins import torch_implementations
from normbench.registry import Registry
from normbench.spec import load_specs


@pytest.fixture(scope="module")
def specs():
    return load_specs(known_checks=None).specs


def impl(name: str):
    return next(i for i in torch_implementations() if i.name == name)


def test_variants_are_planned_side_by_side_with_their_own_ids(specs):
    registry = Registry()
    for i in torch_implementations():
        registry.add(i)
    plan = plan_cases(specs, registry, implementations=["torch.nn.RMSNorm"], shapes=[(8, 64)], dtypes=["float32"],
                      passes=["inference"], variants=["eager", "onnxruntime", "compile", "export"], copy_check=False)
    # onnxruntime is export's older name: the same deployment, planned once, under its canonical name
    assert [c.id for c in plan.cases] == ["rmsnorm[torch.nn.RMSNorm-8x64-float32-inference]",
                                          "rmsnorm[torch.nn.RMSNorm-8x64-float32-inference-export]",
                                          "rmsnorm[torch.nn.RMSNorm-8x64-float32-inference-compile]"]
    with pytest.raises(ValueError, match="unknown variant 'tvm'"):
        plan_cases(specs, registry, variants=["tvm"])


@pytest.mark.deploy
def test_onnxruntime_runs_the_exported_layernorm_and_names_its_ops(specs):
    ln = impl("torch.nn.LayerNorm")
    case = BenchCase("layernorm", ln.name, (16, 64), "float32", "forward", variant="onnxruntime")
    prepared = prepare(case, ln, specs["layernorm"])
    out = torch.from_numpy(prepared.fn())
    with torch.no_grad():
        expected = prepared.module.eval()(prepared.x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert "LayerNormalization" in prepared.variant_info["onnx_ops"] and prepared.build_s > 0
    assert prepared.traffic.total == 2 * 16 * 64 * 4 + 2 * 64 * 4  # inference traffic: no gradients


@pytest.mark.parametrize("pass_name", ["backward", "forward+backward"])
def test_onnxruntime_refuses_a_backward_pass_with_the_reason(specs, pass_name):
    ln = impl("torch.nn.LayerNorm")
    with pytest.raises(VariantUnavailable, match="inference only"):
        prepare(BenchCase("layernorm", ln.name, (8, 32), "float32", pass_name, variant="onnxruntime"), ln,
                specs["layernorm"])


class ValueDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum().item() > 0:
            return x * 2
        return x


@pytest.mark.deploy
def test_a_module_that_cannot_be_exported_is_one_explained_failure():
    with pytest.raises(VariantUnavailable, match="torch.onnx.export failed"):
        build_variant("onnxruntime", ValueDependent(), torch.randn(4, 8))


@pytest.mark.deploy
def test_a_dtype_onnxruntime_cannot_run_is_explained():
    with pytest.raises(VariantUnavailable, match="bfloat16"):
        build_variant("onnxruntime", nn.LayerNorm(8).to(torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16))


def test_the_compiled_variant_is_built_before_timing_and_matches_eager(specs):
    rms = impl("torch.nn.RMSNorm")
    prepared = prepare(BenchCase("rmsnorm", rms.name, (8, 32), "float32", "inference", variant="compile"), rms,
                       specs["rmsnorm"])
    assert prepared.build_s > 0 and prepared.variant_info["backend"] == "inductor"
    with torch.inference_mode():
        torch.testing.assert_close(prepared.fn(), prepared.module(prepared.x))


def test_eager_is_the_module_itself():
    m = nn.LayerNorm(4)
    assert build_variant("eager", m, torch.randn(2, 4)).call is m


def test_every_case_gets_its_own_compiled_graph_past_dynamos_recompile_limit():
    # ten shapes of one module class: with dynamo's default limit (8) the ninth would silently run eagerly,
    # and automatic dynamic shapes would give the second a dynamic-shape kernel
    graphs = [build_variant("compile", nn.LayerNorm(8), torch.randn(n, 8), pass_name="inference").info["graphs"]
              for n in range(2, 12)]
    assert all(g >= 1 for g in graphs), graphs
