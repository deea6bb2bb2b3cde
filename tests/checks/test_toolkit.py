"""The check toolkit's own tests (normbench/checks/toolkit/): each helper's contract on a case it must reject and
one it must accept, so a new check can rely on it without reading the checks that used it first (as array-api-tests
keeps meta_tests/ for its helpers)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import impl, specs
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, Undeclared
from normbench.checks.toolkit.bitwise import bits, bitwise_equal, deviation, shares_memory
from normbench.checks.toolkit.comparison import affine_gradient_comparisons, comparisons_trial, doubled
from normbench.checks.toolkit.probes import (
    Probe,
    counterexample,
    feature_probes,
    fresh_forward,
    probe_strategy,
    tokens_view,
)
from normbench.checks.toolkit.reductions import (
    num_groups_of,
    reduction_length,
    rounding_condition,
    statistic_groups,
    weight_reduction_length,
)
from normbench.checks.toolkit.reference import load_reference, reference_forward
from normbench.checks.toolkit.search import Trial, find_counterexample, measured_score, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import compare
from normbench.spec import Tolerance


def _ctx(family: str = "layernorm", factory: type[nn.Module] = nn.LayerNorm, prop: str = "forward_equivalence",
         mode: str = "any", **fields: object) -> CheckContext:
    spec = specs()[family]
    chosen = next(p for p in spec.properties if p.name == prop)
    return CheckContext(impl=impl(f"toolkit.{factory.__name__}", family, factory, **fields), spec=spec, prop=chosen,
                        dtype=torch.float32, mode=mode)


# -- seeds ----------------------------------------------------------------------------------------------------------

def test_stable_seed_is_fixed_by_its_parts_alone() -> None:
    # Pinned (the value before the toolkit existed): a seed drawn from hash() (salted per process) or the clock
    # would not give this in every process, and recorded counterexamples would stop reproducing.
    assert stable_seed("torch.nn.LayerNorm", "shift_invariance", "float32", "any") == 962691857
    assert stable_seed("a", 1) == stable_seed("a", "1")  # the parts count by their text
    assert stable_seed("a", "b") != stable_seed("b", "a")
    assert 0 <= stable_seed("anything") < 2**31


# -- reductions -----------------------------------------------------------------------------------------------------

def test_reduction_length_counts_what_shares_one_statistic_in_each_layout() -> None:
    s = specs()
    assert reduction_length(s["layernorm"], (4, 3, 8)) == 8  # per token over C
    assert reduction_length(s["batchnorm"], (4, 8, 5)) == 20  # per channel over N and L
    assert reduction_length(s["instancenorm"], (4, 8, 5)) == 5  # per sample and channel over L
    assert reduction_length(s["groupnorm"], (2, 12, 5), num_groups=4) == 15  # C/G channels times L
    assert reduction_length(s["groupnorm"], (2, 12, 5)) == 60  # no num_groups: one group
    assert reduction_length(s["layernorm"], (0, 8)) == 1  # an empty input: nothing reduced, never a zero divisor


def test_weight_reduction_length_counts_every_element_of_one_channel() -> None:
    assert weight_reduction_length(specs()["layernorm"], (4, 3, 8)) == 12
    assert weight_reduction_length(specs()["batchnorm"], (4, 8, 5)) == 20
    assert weight_reduction_length(specs()["layernorm"], (0, 8)) == 1


def test_num_groups_of() -> None:
    assert num_groups_of({"num_groups": "4"}) == 4
    assert num_groups_of({"eps": 1e-5}) is None


@pytest.mark.parametrize(("family", "shape", "params"), [
    ("layernorm", (3, 2, 6), {}), ("batchnorm", (4, 5, 3), {}), ("instancenorm", (2, 5, 7), {}),
    ("groupnorm", (2, 6, 4), {"num_groups": 3}),
])
def test_statistic_groups_puts_each_statistics_members_in_one_row(family: str, shape: tuple[int, ...],
                                                                   params: dict[str, int]) -> None:
    spec = specs()[family]
    # Each element holds the index of the statistic it belongs to, computed from the layout by hand.
    c = shape[spec.layout.features_axis]
    index = torch.zeros(shape, dtype=torch.float64)
    for pos in torch.cartesian_prod(*(torch.arange(s) for s in shape)).tolist():
        sample, channel = pos[0], pos[spec.layout.features_axis]
        if spec.layout.reduce == "token":
            group = pos[0] * shape[1] + pos[1]
        elif spec.layout.reduce == "channel":
            group = channel
        elif spec.layout.reduce == "instance":
            group = sample * c + channel
        else:
            group = sample * params["num_groups"] + channel // (c // params["num_groups"])
        index[tuple(pos)] = group
    rows = statistic_groups(spec, index, params)
    assert rows.shape[0] == len(index.unique())
    assert rows.shape[0] * rows.shape[1] == index.numel()
    assert bool((rows == rows[:, :1]).all()), "a row mixes members of two statistics"
    assert sorted(rows[:, 0].tolist()) == sorted(index.unique().tolist())


def test_rounding_condition_is_the_worst_peak_over_spread() -> None:
    spec = specs()["layernorm"]
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [10.0, 12.0, 10.0, 12.0]], dtype=torch.float64)
    assert rounding_condition(spec, x, {}) == pytest.approx(12.0)  # row 2: peak 12, σ 1
    assert rounding_condition(spec, torch.ones(2, 4), {}) == math.inf  # no spread: any rounding is magnified
    assert rounding_condition(spec, torch.ones(0, 4), {}) == 0.0


# -- reference ------------------------------------------------------------------------------------------------------

def test_reference_forward_is_float64_on_the_cpu_and_takes_the_mask() -> None:
    build = load_reference(specs()["layernorm"])
    ref = build(4, eps=1e-5, affine=False)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    y = reference_forward(ref, x)
    assert y.dtype == torch.float64 and y.device.type == "cpu"
    assert torch.allclose(y, torch.nn.functional.layer_norm(x.double(), (4,), eps=1e-5))

    class Masked(nn.Module):
        def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
            assert pad_mask is not None and pad_mask.device.type == "cpu"
            return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)

    mask = torch.tensor([[False, True, False]])
    out = reference_forward(Masked(), torch.ones(1, 3, 2), pad_mask=mask)
    assert out[0, 1].abs().sum() == 0 and out[0, 0].sum() == 2


def test_load_reference_names_an_unknown_reference() -> None:
    spec = specs()["layernorm"]
    broken = dataclasses.replace(spec, reference="no_such_family")
    with pytest.raises(ModuleNotFoundError, match="no_such_family"):
        load_reference(broken)


# -- bitwise --------------------------------------------------------------------------------------------------------

def test_bits_tell_nan_equal_and_signed_zeros_apart() -> None:
    assert bitwise_equal(torch.tensor([math.nan, 1.0]), torch.tensor([math.nan, 1.0]))  # == would say no
    assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))  # == would say yes
    assert not bitwise_equal(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))
    assert not bitwise_equal(torch.zeros(2), torch.zeros(1, 2))
    assert bits(torch.tensor([1], dtype=torch.int64)).dtype == torch.int64
    assert bits(torch.tensor([1.0], dtype=torch.bfloat16)).dtype == torch.int16


def test_deviation_counts_the_differing_elements() -> None:
    a = torch.tensor([1.0, 2.0, math.nan, 0.0])
    assert deviation(a, a.clone()).differing == 0 and deviation(a, a.clone()).max_abs == 0.0
    dev = deviation(a, torch.tensor([1.0, 2.5, math.nan, -0.0]))
    assert (dev.differing, dev.max_abs) == (2, 0.5)  # -0.0 differs in its bits, by nothing in value
    assert deviation(a, torch.tensor([1.0, 2.0, 3.0, 0.0])).max_abs == math.inf  # NaN against a number
    assert deviation(a, torch.zeros(5)).differing == 5  # shapes differ: every element
    assert "1 element(s) differ" in deviation(torch.zeros(2), torch.tensor([0.0, 1.0])).describe()


def test_shares_memory_sees_views_and_not_copies() -> None:
    x = torch.randn(4, 3)
    assert shares_memory(x, x[1:])
    assert shares_memory(x.view(-1), x)
    assert not shares_memory(x, x.clone())


# -- comparison -----------------------------------------------------------------------------------------------------

def test_doubled_bounds_two_outputs_each_within_tolerance() -> None:
    assert doubled(Tolerance(rel=1.0, abs=2.0, red=3.0)) == Tolerance(rel=2.0, abs=4.0, red=6.0)
    assert doubled(Tolerance(rel=1.0, abs=2.0, red=3.0), extra_abs=5.0).abs == 9.0


def test_comparisons_trial_fails_on_any_failing_comparison_and_names_the_worst_first() -> None:
    ctx = _ctx()
    truth = torch.linspace(-1.0, 1.0, 16, dtype=torch.float64)
    tol = ctx.tolerance("forward")
    good = compare(truth.float(), truth, torch.float32, tol, 8)
    slightly = compare((truth + 1e-3).float(), truth, torch.float32, tol, 8)
    badly = compare((truth + 1.0).float(), truth, torch.float32, tol, 8)
    passing = comparisons_trial(ctx, {"a": good}, {"input": "x"})
    assert passing.ok and passing.metrics["measured"] == 1 and "failing" not in passing.counterexample
    failing = comparisons_trial(ctx, {"a": good, "b": slightly, "c": badly}, {"input": "x"}, {"eps": 1e-5})
    assert not failing.ok
    assert failing.counterexample == {"input": "x", "failing": ["c", "b"]}
    assert failing.summary.startswith("c: ") and failing.metrics["worst"] == "c" and failing.metrics["eps"] == 1e-5
    assert failing.metrics["a.tol_ratio"] == good.tol_ratio
    nothing = comparisons_trial(ctx, {}, {}, skipped=["shift=+3 (allowance too large)"])
    assert nothing.ok and nothing.metrics["measured"] == 0 and "nothing measurable" in nothing.summary


def _ln_with_grads(weight_grad: torch.Tensor | None) -> tuple[nn.Module, nn.Module]:
    module, ref = nn.LayerNorm(4), nn.LayerNorm(4).double()
    ref.weight.grad = torch.arange(4, dtype=torch.float64) + 1
    ref.bias.grad = torch.ones(4, dtype=torch.float64)
    module.weight.grad = weight_grad
    module.bias.grad = torch.ones(4)
    return module, ref


def test_affine_gradient_comparisons_compares_a_missing_gradient_as_zeros_or_raises() -> None:
    ctx = _ctx()
    module, ref = _ln_with_grads(torch.arange(4, dtype=torch.float32) + 1)
    right = affine_gradient_comparisons(ctx, module, ref, 8)
    assert set(right) == {"grad_weight", "grad_bias"} and all(c.ok for c in right.values())
    module, ref = _ln_with_grads(None)  # γ never reached by the backward
    missing = affine_gradient_comparisons(ctx, module, ref, 8)
    assert not missing["grad_weight"].ok and missing["grad_bias"].ok
    with pytest.raises(AssertionError, match="grad_weight: no gradient reached"):
        affine_gradient_comparisons(ctx, module, ref, 8, require=True)


# -- search ---------------------------------------------------------------------------------------------------------

def _threshold(limit: int) -> object:
    def evaluate(n: int) -> Trial:
        return Trial(ok=n < limit, summary=f"n={n}", metrics={"tol_ratio": n / limit}, counterexample={"n": n})
    return evaluate


def test_find_counterexample_returns_the_first_failing_explicit_case() -> None:
    ctx = _ctx()
    result = find_counterexample(ctx, _threshold(5), [1, 7, 9])
    assert not result.ok and result.trials == 2 and result.failure is not None and result.failure.counterexample == {
        "n": 7}
    passing = find_counterexample(ctx, _threshold(100), [1, 7, 3])
    assert passing.ok and passing.trials == 3 and passing.failure is None
    assert passing.worst is not None and passing.worst.summary == "n=7"  # the most tolerance used


def test_find_counterexample_shrinks_a_drawn_failure() -> None:
    ctx = _ctx()
    result = find_counterexample(ctx, _threshold(10), [], st.integers(0, 10_000).filter(lambda n: n % 2 == 0))
    # hypothesis replays its shrunk example last: the smallest even failure is reported, not the first drawn
    assert not result.ok and result.failure is not None and result.failure.counterexample == {"n": 10}
    assert find_counterexample(ctx, _threshold(10**6), [], st.integers(0, 100)).ok


def test_find_counterexample_skips_undeclared_cases_and_skips_the_item_when_none_ran() -> None:
    ctx = _ctx()

    def evaluate(n: int) -> Trial:
        if n < 0:
            raise Undeclared(f"not judged on n={n}")
        return _threshold(5)(n)  # type: ignore[operator]

    result = find_counterexample(ctx, evaluate, [-1, 2])
    assert result.ok and result.trials == 2 and ctx.not_declared == ["not judged on n=-1"]
    with pytest.raises(Undeclared, match="every case of this item is outside"):
        find_counterexample(_ctx(), evaluate, [-1, -2])


def test_find_counterexample_reraises_a_skip_met_while_drawing_and_a_checks_own_error() -> None:
    def evaluate(n: int) -> Trial:
        if n >= 3:
            raise Skip("this deployment cannot run n >= 3")
        return Trial(ok=True, summary=f"n={n}")

    with pytest.raises(Skip, match="cannot run"):
        find_counterexample(_ctx(), evaluate, [], st.integers(3, 50))
    def broken(n: int) -> Trial:
        raise ValueError("a bug in the check, not a verdict")

    with pytest.raises(ValueError, match="a bug in the check"):
        find_counterexample(_ctx(), broken, [1])


def test_search_ranks_a_trial_that_measured_nothing_below_every_measured_one() -> None:
    unmeasured = Trial(ok=True, summary="nothing measurable", metrics={"measured": 0, "tol_ratio": 9.0})
    measured = Trial(ok=True, summary="measured", metrics={"measured": 1, "tol_ratio": 0.1})
    assert measured_score(unmeasured) < measured_score(measured)
    result = search(_ctx(), lambda t: t, [unmeasured, measured], None)
    assert result.worst is measured
    plain = find_counterexample(_ctx(), lambda t: t, [unmeasured, measured])
    assert plain.worst is unmeasured  # what search exists to avoid


def test_observation_reports_the_failure_or_the_worst_and_skips_when_nothing_was_measured() -> None:
    ctx = _ctx()
    failed = observation("f(x) == g(x)", find_counterexample(ctx, _threshold(5), [1, 7]))
    assert isinstance(failed, Observation) and not failed.holds
    assert failed.summary == "f(x) == g(x) does not hold: n=7" and failed.counterexample == {"n": 7}
    assert failed.metrics["cases"] == 2
    held = observation("f(x) == g(x)", find_counterexample(ctx, _threshold(50), [1, 7]))
    assert held.holds and held.counterexample is None and "over 2 cases; worst: n=7" in held.summary
    nothing = Trial(ok=True, summary="nothing measurable: bf16", metrics={"measured": 0})
    with pytest.raises(Skip, match="not measurable in this dtype"):
        observation("f", search(ctx, lambda t: t, [nothing], None))
    with pytest.raises(Skip, match="no case to run"):
        observation("f", find_counterexample(ctx, _threshold(5), []))


def test_observation_words_its_summary_as_the_check_asks() -> None:
    ctx = _ctx()
    words = {"held": "within tolerance", "broken": "out of tolerance"}
    failed = observation("output", find_counterexample(ctx, _threshold(5), [1, 7]), **words)
    assert failed.summary == "output out of tolerance: n=7"
    held = observation("output", find_counterexample(ctx, _threshold(50), [1, 7]), **words)
    assert held.summary == "output within tolerance over 2 cases; worst: n=7"


# -- probes ---------------------------------------------------------------------------------------------------------

def test_feature_probes_give_one_seeded_probe_per_feature_count_cycling_the_ranks() -> None:
    ctx = _ctx()
    probes = feature_probes(ctx)
    assert [p.case.shape[-1] for p in probes] == list(ctx.spec.features)
    assert [len(p.case.shape) for p in probes] == [2, 3]  # layernorm's ranks, in turn
    assert [p.case.seed for p in probes] == [ctx.seed, ctx.seed + 1]
    assert dict(probes[0].params) == ctx.params()
    assert feature_probes(ctx) == probes  # deterministic
    assert [len(p.case.shape) for p in feature_probes(ctx, ranks=(3,))] == [3, 3]


def test_probe_strategy_draws_the_specs_feature_counts() -> None:
    ctx = _ctx()
    drawn: list[Probe] = []

    @ctx.hypothesis_settings(max_examples=10)
    @given(probe_strategy(ctx))
    def collect(probe: Probe) -> None:
        drawn.append(probe)

    collect()
    assert drawn and all(p.case.shape[-1] in ctx.spec.features for p in drawn)
    assert all(dict(p.params) == ctx.params() for p in drawn)


def test_counterexample_records_what_reproduces_the_probe() -> None:
    ctx = _ctx()
    probe = feature_probes(ctx)[0]
    record = counterexample(ctx, probe, shifts=[3.0])
    assert record == {**probe.as_dict(), "dtype": "float32", "mode": "any", "shifts": [3.0]}


def test_fresh_forward_leaves_the_modules_state_as_it_was() -> None:
    ctx = _ctx("batchnorm", nn.BatchNorm1d, mode="train")
    module = ctx.build(8)
    before = module.running_mean.clone()
    x = torch.randn(6, 8) + 3.0
    y, after = fresh_forward(ctx, module, x)
    assert torch.equal(module.running_mean, before)  # the module given is untouched
    assert not torch.equal(after.running_mean, before)  # the copy returned took the update
    again, _ = fresh_forward(ctx, module, x)
    assert torch.equal(y, again)  # so a second call sees the same state
    ctx.forward(module, x)  # what fresh_forward spares the caller: a plain train-mode call moves the state
    assert not torch.equal(module.running_mean, before)


def test_tokens_view_shows_any_sequence_as_batch_time_channels() -> None:
    channels_last = torch.randn(2, 5, 3)
    assert tokens_view(_ctx(), channels_last) is channels_last
    channel_first = torch.randn(2, 3, 5)  # (N, C, L)
    view = tokens_view(_ctx("batchnorm", nn.BatchNorm1d), channel_first)
    assert view.shape == (2, 5, 3) and torch.equal(view[1, 4], channel_first[1, :, 4])
