"""Self-tests of the layout checks (non-contiguous inputs, empty batches): every mutant flagged, every
shipped implementation judged as its spec expects."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, shipped, spec_items, specs
from mutants_honesty import (
    ChannelsLastGroupNorm,
    ContiguousGradLayerNorm,
    DetachedEarlyExitLayerNorm,
    EmptyBackwardLayerNorm,
    FlatEarlyExitLayerNorm,
    InnerStrideOnlyLayerNorm,
    MaxScaledLayerNorm,
    StorageOrderLayerNorm,
    UpcastEarlyExitLayerNorm,
)

from normbench.checks.layout import VIEW_KINDS, applicable_views, strided_view

PROPERTIES = ("noncontiguous_input", "empty_batch")


_BY_NAME = shipped(families=True)
_ITEMS = spec_items(_BY_NAME, PROPERTIES)


@over_items(_ITEMS)
def test_shipped_implementations_meet_spec_expectations(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_BY_NAME[name], prop, dtype, mode)
    assert outcome.verdict == "pass", outcome.summary


# -- the views themselves -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize(("shape", "axis"), [((3, 4, 5), -1), ((3, 4, 5), 1), ((2, 6, 3, 5), 1), ((4, 7), 1)])
def test_views_keep_values_and_change_layout(kind: str, shape: tuple[int, ...], axis: int) -> None:
    values = torch.randn(shape)
    if kind == "channels_last" and (len(shape) < 3 or axis % len(shape) == len(shape) - 1):
        pytest.skip("no channels_last layout distinct from the contiguous one")
    x = strided_view(values, kind, axis)
    expected = values.narrow(0, 0, 1).expand(shape) if kind == "expanded" else values
    assert x.shape == values.shape and torch.equal(x, expected)
    assert not x.is_contiguous(), (kind, x.stride())
    if kind == "channels_last" and len(shape) == 4:
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_every_layout_gets_a_view_kind_per_rank() -> None:
    for spec in specs().values():
        if "noncontiguous_input" not in {p.name for p in spec.properties}:
            continue
        for rank in spec.layout.ranks:
            kinds = applicable_views(spec.layout, rank)
            assert {"transposed", "strided", "row_padded"} <= set(kinds)
            if rank == 4:
                assert "channels_last" in kinds, spec.family


# -- non-contiguous inputs ------------------------------------------------------------------------------

def test_noncontiguous_flags_a_kernel_reading_storage_as_packed() -> None:
    outcome = assert_flags(impl("storage-order", "layernorm", StorageOrderLayerNorm), "noncontiguous_input")
    assert outcome.verdict == "fail" and outcome.observed == "violated"
    example = outcome.counterexample
    assert example and example["view"] == "transposed" and not example["layout"]["is_contiguous"]
    assert outcome.metrics["contiguous_control_ok"] is True
    assert "the layout is the cause" in outcome.summary


def test_noncontiguous_flags_a_kernel_that_checks_only_the_inner_stride() -> None:
    outcome = assert_flags(impl("inner-stride", "layernorm", InnerStrideOnlyLayerNorm), "noncontiguous_input")
    assert outcome.counterexample and outcome.counterexample["view"] == "row_padded"


def test_noncontiguous_flags_a_backward_reading_grad_output_as_packed() -> None:
    outcome = assert_flags(impl("packed-dy", "layernorm", ContiguousGradLayerNorm), "noncontiguous_input")
    assert "output" not in outcome.counterexample["failing"]  # type: ignore[index]
    assert "grad_input" in outcome.counterexample["failing"]  # type: ignore[index]


def test_noncontiguous_flags_groupnorm_mishandling_channels_last() -> None:
    outcome = assert_flags(impl("cl-groupnorm", "groupnorm", ChannelsLastGroupNorm), "noncontiguous_input")
    assert outcome.counterexample and outcome.counterexample["view"] == "channels_last"
    assert len(outcome.counterexample["input"]["shape"]) == 4


def test_noncontiguous_flags_in_bfloat16_too() -> None:
    assert_flags(impl("storage-order", "layernorm", StorageOrderLayerNorm), "noncontiguous_input",
                 dtype="bfloat16")


def test_noncontiguous_reports_measured_error_on_pass() -> None:
    outcome = assert_passes(_BY_NAME["torch.nn.LayerNorm"], "noncontiguous_input")
    # against the same module on contiguous memory: torch copies to contiguous first, so it may be exact
    assert 0 <= outcome.metrics["tol_ratio"] < 1 and outcome.metrics["cases"] >= 20


# -- empty batches --------------------------------------------------------------------------------------

def test_empty_batch_flags_a_module_that_raises() -> None:
    outcome = assert_flags(impl("max-scaled", "layernorm", MaxScaledLayerNorm), "empty_batch")
    assert outcome.observed == "violated" and "raised" in outcome.summary
    assert outcome.counterexample and outcome.counterexample["input"]["shape"][0] == 0


def test_empty_batch_flags_a_wrong_shape() -> None:
    outcome = assert_flags(impl("flat-exit", "layernorm", FlatEarlyExitLayerNorm), "empty_batch")
    assert outcome.observed == "violated" and "shape" in outcome.summary


def test_empty_batch_flags_an_output_cut_from_the_graph() -> None:
    outcome = assert_flags(impl("detached-exit", "layernorm", DetachedEarlyExitLayerNorm), "empty_batch")
    assert "detached" in outcome.summary


def test_empty_batch_flags_a_backward_that_raises() -> None:
    outcome = assert_flags(impl("empty-backward", "layernorm", EmptyBackwardLayerNorm), "empty_batch")
    assert "backward raised" in outcome.summary


def test_empty_batch_flags_a_wrong_dtype_only_where_it_is_wrong() -> None:
    upcast = impl("upcast-exit", "layernorm", UpcastEarlyExitLayerNorm)
    assert_passes(upcast, "empty_batch", dtype="float32")
    outcome = assert_flags(upcast, "empty_batch", dtype="bfloat16")
    assert "dtype" in outcome.summary


def test_empty_batch_covers_every_rank_of_the_layout() -> None:
    outcome = run(_BY_NAME["torch.nn.GroupNorm"], "empty_batch")
    shapes = outcome.metrics["shapes"]
    assert {len(s) for s in shapes} == {3, 4} and all(s[0] == 0 for s in shapes)
