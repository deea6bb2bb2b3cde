"""Benchmark planning from the specs' `benchmark` key, and the prepared call of every pass."""

from __future__ import annotations

import pytest
import torch
from helpers import impl, specs
from torch import nn

from normbench.bench.harness import (
    PASSES,
    ROOFLINE_FAMILY,
    BenchCase,
    parse_shape,
    peak_memory_bytes,
    plan_cases,
    prepare,
)
from normbench.builtins import reference_implementations, torch_implementations
from normbench.implementation import ImplementationError
from normbench.registry import Registry


def registry(*extra) -> Registry:
    reg = Registry()
    for i in [*torch_implementations(), *reference_implementations(), *extra]:
        reg.add(i)
    return reg


def test_every_benchmarked_family_declares_valid_cases():
    plan = plan_cases(specs(), registry())
    assert not plan.errors, plan.errors
    families = {c.family for c in plan.cases}
    assert {"layernorm", "rmsnorm", "batchnorm", "groupnorm", "instancenorm", ROOFLINE_FAMILY} <= families
    assert {c.pass_name for c in plan.cases if c.family != ROOFLINE_FAMILY} == set(PASSES)
    # the float64 references are the truth, not contenders
    assert not any(c.implementation.startswith("reference.") for c in plan.cases)
    ln = [c for c in plan.cases if c.implementation == "F.layer_norm"]
    assert all(c.baseline == "torch.nn.LayerNorm" for c in ln)
    assert len({c.id for c in plan.cases}) == len(plan.cases)


def test_filters_and_shape_override():
    plan = plan_cases(specs(), registry(), implementations=["torch.nn.RMSNorm", "reference.rmsnorm"],
                      dtypes=["float32"], passes=["inference"], shapes=[(4, 16), (2, 3, 16)], copy_check=False)
    ids = [c.id for c in plan.cases]
    assert ids == ["rmsnorm[reference.rmsnorm-4x16-float32-inference]",
                   "rmsnorm[reference.rmsnorm-2x3x16-float32-inference]",
                   "rmsnorm[torch.nn.RMSNorm-4x16-float32-inference]",
                   "rmsnorm[torch.nn.RMSNorm-2x3x16-float32-inference]"]
    # a rank the layout does not take is left out for that family only
    plan = plan_cases(specs(), registry(), families=["instancenorm", "layernorm"], shapes=[(4, 16)],
                      copy_check=False)
    assert {c.family for c in plan.cases} == {"layernorm"}


def test_copy_cases_check_the_harness_against_the_roofline():
    plan = plan_cases(specs(), registry(), implementations=["torch.nn.LayerNorm"], shapes=[(8, 32)],
                      roofline_bytes={"cpu": 4096})
    copies = [c for c in plan.cases if c.family == ROOFLINE_FAMILY]
    assert [c.shape for c in copies] == [(256,), (1024,)]  # the norms' size (8*32 floats) and the roofline's


def test_bad_benchmark_declarations_are_reported():
    import dataclasses

    spec = specs()["layernorm"]
    bad = dataclasses.replace(spec, benchmark={"shapes": [[2, 3, 4, 5]], "baseline": "no.such.impl"})
    plan = plan_cases({"layernorm": bad}, registry())
    assert any("no.such.impl" in e for e in plan.errors)
    assert any("rank 4" in e for e in plan.errors)


def test_shape_parsing():
    assert parse_shape("1024x4096") == (1024, 4096)
    for text in ("1024", "ax2", "0x3"):
        with pytest.raises(ValueError):
            parse_shape(text)


@pytest.mark.parametrize("pass_name", PASSES)
def test_every_pass_runs_the_module(pass_name):
    layernorm = next(i for i in torch_implementations() if i.name == "torch.nn.LayerNorm")
    prepared = prepare(BenchCase("layernorm", layernorm.name, (6, 32), "float32", pass_name), layernorm,
                       specs()["layernorm"])
    out = prepared.fn()
    if pass_name in ("forward", "inference"):
        assert out.shape == (6, 32)
        assert out.requires_grad == (pass_name == "forward")
        assert prepared.module.training == (pass_name == "forward")
    else:
        grad_x, grad_w, grad_b = out
        assert grad_x.shape == (6, 32) and grad_w.shape == (32,) and grad_b.shape == (32,)
        prepared.fn()  # repeatable: backward keeps its graph
    assert prepared.traffic.total > 0 and prepared.features == 32


def test_time_major_implementations_get_time_major_inputs():
    class TimeMajor(nn.LayerNorm):
        def forward(self, x):
            assert x.shape[0] == 7, "expected (T, B, C)"
            return super().forward(x)

    tbc = impl("tbc", "layernorm", lambda c, eps, affine: TimeMajor(c), token_layout="TBC")
    prepared = prepare(BenchCase("layernorm", "tbc", (2, 7, 16), "float32", "inference"), tbc, specs()["layernorm"])
    assert prepared.fn().shape == (7, 2, 16)


def test_a_module_returning_the_wrong_shape_is_an_error():
    class Truncates(nn.Module):
        def forward(self, x):
            return x[..., :-1]

    broken = impl("broken.truncates", "layernorm", lambda c, eps, affine: Truncates())
    with pytest.raises(ImplementationError, match="broken.truncates"):
        prepare(BenchCase("layernorm", "broken.truncates", (4, 8), "float32", "forward"), broken,
                specs()["layernorm"])


def test_peak_memory_counts_what_a_call_allocates():
    x = torch.randn(256, 1024)
    peak = peak_memory_bytes(lambda: (x * 2) + 1, "cpu")
    # x * 2 (1 MiB) is alive while + 1 allocates the output (1 MiB)
    assert 2 * 2**20 <= peak < 3 * 2**20
