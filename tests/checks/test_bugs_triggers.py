"""Every trigger of ../shared/BUGS.md (the bug catalogue) mapped to the check and the input case that reach it.

Each row names the bug class, the trigger, the check, and a predicate over the inputs that check really
builds (its deterministic cases, read from the check module for a real spec), so a refactor that drops a case
fails here instead of silently losing a bug class. The classes BUGS.md lists are kept in `CLASSES`; a class
with no row fails `test_every_class_is_mapped`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from helpers import run, shipped, specs

from normbench.checks import (
    containment,
    equivalence,
    frozen,
    fused,
    gradient_layout,
    honesty,
    hygiene,
    invariance,
    layout,
    masked_backward,
    modes,
    numerics,
    ranks,
    reduction,
    repeated,
    updates,
)
from normbench.checks.base import CHECKS, CheckContext, randomize_module
from normbench.implementation import Implementation
from normbench.inputs import Case

#: The bug classes of BUGS.md, in its order.
CLASSES = (
    "one-pass variance", "half squares or sums", "cast order / where gamma is applied", "zero-centred gamma",
    "eps placement or value", "strides and layout", "optional gamma / beta, backward formulas",
    "dgamma / dbeta reduction", "batch-variant reductions", "degenerate sizes", "running variance biased",
    "momentum convention", "eval and track_running_stats", "padding leaks", "fused add + norm residual",
    "frozen parameters", "incoming gradient laid out unlike x", "state kept on the module",
    "parameters cached or not registered", "second-order gradients", "masks in backward and unusual padding",
    "ranks beyond 3", "non-finite containment",
)


def _impl_for(family: str) -> Implementation:
    """The family's reference, judged as an implementation (any implementation builds the same inputs)."""
    found = [i for i in shipped().values() if i.family == family and "reference" in i.tags]
    assert found, f"no shipped reference implementation for {family}"
    return found[0]


def _ctx(family: str, check: str, dtype: str = "float32", mode: str | None = None) -> CheckContext:
    spec = specs()[family]
    prop = next((p for p in spec.properties if p.check == check), None)
    assert prop is not None, f"family {family!r} has no property checked by {check!r}"
    chosen = mode or next(iter(prop.expect))
    return CheckContext(impl=_impl_for(family), spec=spec, prop=prop, dtype=getattr(torch, dtype), mode=chosen)


def _cases(items: list[Any]) -> list[Case]:
    """The Case of every input object a check builds (Variant, Trigger, ViewCase, FusedProbe, PadProbe...)."""
    return [item if isinstance(item, Case) else item.case for item in items]


#: What each check feeds the module: its deterministic inputs, built for a context.
INPUTS: dict[str, Callable[[CheckContext], list[Any]]] = {
    "forward_equivalence": lambda ctx: equivalence._variants(ctx) + equivalence.kernel_variants(ctx),
    "gradient_equivalence": equivalence._variants,
    "adversarial_inputs": numerics._triggers,
    "constant_rows": numerics._constant_cases,
    "noncontiguous_input": layout._view_cases,
    "empty_batch": layout._empty_shapes,
    "weight_gradient_reduction": lambda ctx: [reduction._shape(ctx, int(ctx.options.get("rows",
                                                                                         reduction.DEFAULT_ROWS)))],
    "running_statistics": modes._scenarios,
    "fused_residual": fused._probes,
    "pad_mask_independence": invariance._pad_probes,
    "masked_backward": masked_backward._probes,
    "nonfinite_containment": containment._probes,
}


def _left_padded(row: list[bool]) -> bool:
    return row[0] and not row[-1]


def _gapped(row: list[bool]) -> bool:
    """A pad between two real tokens."""
    return any(row[i] and not row[i - 1] and not all(row[i:]) for i in range(1, len(row)))


def _mask_rows(ctx: CheckContext) -> list[list[list[bool]]]:
    return [p.mask.tolist() for p in masked_backward._probes(ctx)]


def _params(item: Any) -> dict[str, Any]:
    return dict(item.params)


def _reduction(shape: tuple[int, ...]) -> int:
    return shape[-1]


def _is_bias_probe(case: Case) -> bool:
    """forward_equivalence's many-rows case: ≥ 256 rows of 64 features, enough for a per-channel mean error."""
    return case.shape[-1] == 64 and torch.Size(case.shape).numel() // 64 >= 256


@dataclass(frozen=True)
class Row:
    bug_class: str
    trigger: str
    family: str
    check: str
    reached: Callable[[CheckContext], bool]
    dtype: str = "float32"
    mode: str | None = None


def _has(check: str, predicate: Callable[[Any], bool]) -> Callable[[CheckContext], bool]:
    return lambda ctx: any(predicate(item) for item in INPUTS[check](ctx))


TABLE: tuple[Row, ...] = (
    # one-pass variance E[x²]−E[x]² cancels
    Row("one-pass variance", "fp32 mean 2000 / std 1 with C = 4", "layernorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "large_mean" and t.case.scale == 1.0
             and _reduction(t.case.shape) == 4)),
    Row("one-pass variance", "fp32 mean 1e4 with C = 4096", "layernorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "large_mean"
             and 2000.0 * t.case.scale == 1e4 and _reduction(t.case.shape) == 4096)),
    Row("one-pass variance", "GroupNorm large mean (Paddle #16654)", "groupnorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "large_mean")),
    Row("one-pass variance", "variance negative → NaN: large constants", "layernorm", "constant_rows",
        _has("constant_rows", lambda t: t.case.domain == "constant" and t.case.scale >= 1000)),
    # squares or sums in fp16/bf16 before upcasting
    Row("half squares or sums", "fp16 |x| ≥ 256 (x² > 65504)", "rmsnorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "big"), dtype="float16"),
    Row("half squares or sums", "bf16 std 0.05 with small C", "layernorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "small_std" and _reduction(t.case.shape) <= 8),
        dtype="bfloat16"),
    Row("half squares or sums", "CPU BatchNorm half var_sum", "batchnorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "small_std"), dtype="bfloat16", mode="train"),
    # cast order / where γ is applied
    Row("cast order / where gamma is applied", "half input with fp32 γ and with half γ: output dtype",
        "rmsnorm", "dtype_preservation",
        lambda ctx: {"float16", "bfloat16"} <= set(CHECKS["dtype_preservation"].default_dtypes), dtype="float16"),
    Row("cast order / where gamma is applied", "γ far from 1 (randomized), many rows per channel (bias)",
        "rmsnorm", "forward_equivalence", _has("forward_equivalence", lambda v: _is_bias_probe(v.case)),
        dtype="bfloat16"),
    # zero-centred γ (1 + w): a γ rounded or offset in bf16 is a constant per-channel error, measured on the
    # many-rows probe under the spec's `bias` bound (half dtypes)
    Row("zero-centred gamma", "bf16 1 + w: per-channel mean error over many rows", "rmsnorm",
        "forward_equivalence",
        lambda ctx: ctx.tolerance("forward").bias is not None
        and any(_is_bias_probe(v.case) for v in equivalence._variants(ctx)), dtype="bfloat16"),
    # ε in the wrong place or the wrong value
    Row("eps placement or value", "all-zero rows with backward", "layernorm", "constant_rows",
        _has("constant_rows", lambda t: t.case.domain == "zeros" and t.gradients)),
    Row("eps placement or value", "tiny-variance rows at ε ∈ {1e-12, 1e-6, 1e-5, 1}", "layernorm",
        "adversarial_inputs",
        lambda ctx: {1e-12, 1e-6, 1e-5, 1.0} <= {_params(t)["eps"] for t in INPUTS["adversarial_inputs"](ctx)
                                                 if t.case.domain == "tiny_var"}),
    Row("eps placement or value", "mean square near ε for RMSNorm (|x| ~ 1e-3)", "rmsnorm", "adversarial_inputs",
        _has("adversarial_inputs", lambda t: t.case.domain == "scaled" and t.case.scale <= 1e-3)),
    # strides and layout
    Row("strides and layout", "transposed / sliced (row-padded) inputs", "layernorm", "noncontiguous_input",
        lambda ctx: {"transposed", "row_padded", "strided"} <= {vc.view for vc in layout._view_cases(ctx)}),
    Row("strides and layout", "channels_last, rank 4", "groupnorm", "noncontiguous_input",
        _has("noncontiguous_input", lambda vc: vc.view == "channels_last" and len(vc.case.shape) == 4)),
    Row("strides and layout", "rank 3", "layernorm", "noncontiguous_input",
        _has("noncontiguous_input", lambda vc: len(vc.case.shape) == 3)),
    Row("strides and layout", "C not a power of two (769)", "layernorm", "noncontiguous_input",
        _has("noncontiguous_input", lambda vc: vc.case.shape[-1] == 769)),
    Row("strides and layout", "C = 4097 (odd, past a dispatch threshold)", "layernorm", "forward_equivalence",
        _has("forward_equivalence", lambda v: v.case.shape[-1] == 4097)),
    Row("strides and layout", "C / G = 3", "groupnorm", "noncontiguous_input",
        _has("noncontiguous_input", lambda vc: vc.case.shape[1] // _params(vc)["num_groups"] == 3)),
    Row("strides and layout", "> 65536 rows", "layernorm", "forward_equivalence",
        _has("forward_equivalence", lambda v: v.case.shape[0] > 65536)),
    # optional γ / β, backward formulas
    Row("optional gamma / beta, backward formulas", "affine on and off", "layernorm", "gradient_equivalence",
        lambda ctx: {True, False} <= {_params(v)["affine"] for v in equivalence._variants(ctx)}),
    Row("optional gamma / beta, backward formulas", "C = 1, with and without affine", "layernorm",
        "constant_rows",
        lambda ctx: {True, False} <= {_params(t)["affine"] for t in numerics._constant_cases(ctx)
                                      if t.case.shape[-1] == 1}),
    Row("optional gamma / beta, backward formulas", "float64 gradcheck", "layernorm", "gradcheck",
        lambda ctx: CHECKS["gradcheck"].default_dtypes == ("float64",), dtype="float64"),
    # dγ / dβ reduction precision or races
    Row("dgamma / dbeta reduction", "M ≥ 8192 rows in bf16", "layernorm", "weight_gradient_reduction",
        lambda ctx: INPUTS["weight_gradient_reduction"](ctx)[0][0] >= 8192, dtype="bfloat16"),
    Row("dgamma / dbeta reduction", "repeated runs differ", "layernorm", "determinism",
        lambda ctx: honesty.REPEATS >= 2),
    # batch-variant reductions
    Row("batch-variant reductions", "one row alone vs batches of 255 / 256 / 300", "rmsnorm", "batch_invariance",
        lambda ctx: set(honesty.BATCH_SIZES) == {255, 256, 300}),
    # degenerate sizes
    Row("degenerate sizes", "(0, C)", "layernorm", "empty_batch",
        _has("empty_batch", lambda shape: shape[0] == 0 and len(shape) == 2)),
    Row("degenerate sizes", "zero tokens in a (B, 0, C) sequence", "layernorm", "empty_batch",
        _has("empty_batch", lambda shape: len(shape) == 3 and shape[1] == 0)),
    # running variance biased vs unbiased
    Row("running variance biased", "16 values per channel, momentum 0.1", "batchnorm", "running_statistics",
        _has("running_statistics", lambda s: s.trigger and _params(s)["momentum"] == 0.1
             and s.shape[0] == 16), mode="train"),
    # momentum convention, momentum=None
    Row("momentum convention", "momentum ∈ {0, 0.1, 1, None} over three batches", "batchnorm",
        "running_statistics",
        lambda ctx: {0.0, 0.1, 1.0, None} <= {_params(s)["momentum"] for s in modes._scenarios(ctx)}
        and modes.TRAIN_STEPS == 3, mode="train"),
    # eval and track_running_stats semantics
    Row("eval and track_running_stats", "track_running_stats=False", "batchnorm", "running_statistics",
        _has("running_statistics", lambda s: _params(s).get("track_running_stats") is False), mode="train"),
    Row("eval and track_running_stats", "train × eval: eval output from the running statistics", "batchnorm",
        "forward_equivalence", lambda ctx: set(ctx.prop.expect) == {"train", "eval"}, mode="eval"),
    # padding leaks into statistics
    Row("padding leaks", "pads filled with garbage / inf / NaN, real tokens must not move", "batchnorm_masked",
        "pad_mask_independence",
        lambda ctx: {"garbage", "+inf", "nan"} <= set(invariance.PAD_FILLS)
        and all(len(p.case.shape) == 3 for p in invariance._pad_probes(ctx))),
    # fused add + norm residual contract
    Row("fused add + norm residual", "residual aliasing x", "rmsnorm", "fused_residual",
        _has("fused_residual", lambda p: p.same)),
    Row("fused add + norm residual", "residual distinct from x", "rmsnorm", "fused_residual",
        _has("fused_residual", lambda p: not p.same)),
)

TABLE += (
    # calling contexts: how frameworks call the module
    Row("frozen parameters", "γ / β requires_grad=False (LoRA), x without grad (first layer), nothing", "layernorm",
        "frozen_parameters",
        lambda ctx: {frozenset({"x"}), frozenset({"x", "weight"}), frozenset({"x", "bias"}),
                     frozenset({"weight", "bias"}), frozenset()} <= set(frozen._subsets(["x", "weight", "bias"]))),
    Row("incoming gradient laid out unlike x", "packed x, row-padded / transposed / stride-0 (.sum()) dy",
        "rmsnorm", "gradient_layout",
        lambda ctx: {("packed", "row_padded"), ("packed", "transposed"), ("packed", "broadcast"),
                     ("packed", "sum_loss")} <= set(gradient_layout.PAIRINGS)),
    Row("incoming gradient laid out unlike x", "strided x with a packed dy", "batchnorm", "gradient_layout",
        lambda ctx: {("row_padded", "packed"), ("transposed", "packed")} <= set(gradient_layout.PAIRINGS),
        mode="train"),
    Row("state kept on the module", "two forwards before one backward; two backwards accumulate", "layernorm",
        "repeated_use", lambda ctx: set(repeated.SCENARIOS) == {"two forwards, one backward",
                                                                  "two backward passes accumulate"}),
    Row("parameters cached or not registered", "in-place γ step, new Parameter, load_state_dict, in no_grad and "
        "inference_mode too", "rmsnorm", "parameter_updates",
        lambda ctx: set(updates.UPDATE_KINDS) == {"in-place step", "new Parameter", "load_state_dict"}
        and {"grad mode", "no_grad", "inference_mode"} == set(updates.GRAD_CONTEXTS)),
    Row("parameters cached or not registered", "updates in train and in eval mode", "batchnorm",
        "parameter_updates", lambda ctx: {"train", "eval"} <= set(ctx.prop.expect), mode="eval"),
    Row("parameters cached or not registered", "state_dict round trip into a fresh module after training steps, "
        "deepcopy, .to(dtype)", "batchnorm", "module_hygiene",
        lambda ctx: hygiene.STEPS >= 1 and {"train", "eval"} <= set(ctx.prop.expect), mode="train"),
    Row("second-order gradients", "create_graph in float32 against the float64 truth", "layernorm",
        "second_order_gradients", lambda ctx: "float32" in CHECKS["second_order_gradients"].default_dtypes),
    Row("second-order gradients", "gradgradcheck in float64", "layernorm", "second_order_gradients",
        lambda ctx: "float64" in CHECKS["second_order_gradients"].default_dtypes, dtype="float64"),
    Row("masks in backward and unusual padding", "NaN / ±inf pads with backward", "batchnorm_masked",
        "masked_backward", lambda ctx: {"nan", "+inf", "-inf"} <= set(masked_backward.NONFINITE_FILLS),
        mode="train"),
    Row("masks in backward and unusual padding", "left-padded, gapped and all-pad sequences", "powernorm_v",
        "masked_backward",
        lambda ctx: any(any(_left_padded(r) for r in m) for m in _mask_rows(ctx))
        and any(any(_gapped(r) for r in m) for m in _mask_rows(ctx))
        and any(any(all(r) for r in m) and not all(all(r) for r in m) for m in _mask_rows(ctx)), mode="train"),
    Row("non-finite containment", "one +inf / NaN token leaves the other tokens", "rmsnorm",
        "nonfinite_containment",
        lambda ctx: set(containment.POISONS) == {"+inf", "nan"}
        and all(p.unit == "token" and p.case.shape[0] > 1 for p in containment._probes(ctx))),
    Row("non-finite containment", "one +inf / NaN sample leaves the other samples (per-sample families)",
        "groupnorm", "nonfinite_containment",
        lambda ctx: all(p.unit == "sample" for p in containment._probes(ctx))),
    Row("ranks beyond 3", "(B, T, H, D) QK-norm, rank 1 and rank 5", "rmsnorm", "leading_ranks",
        lambda ctx: [len(ranks._shape(ctx, r, 8)) for r in ctx.options["ranks"]] == [1, 4, 5]),
    Row("ranks beyond 3", "rank 1 and 5 for every per-token family", "scalenorm", "leading_ranks",
        lambda ctx: {1, 4, 5} <= set(ctx.options["ranks"])),
)

#: Triggers of BUGS.md no check reaches yet, with the reason; a row above makes an entry here obsolete.
UNREACHED = {
    ("degenerate sizes", "batch of one in train mode, one value per channel"):
        "no agreed expectation: torch raises, the float64 truth divides by n - 1 = 0 in the running variance",
}


def _row_id(row: Row) -> str:
    return f"{row.bug_class}: {row.trigger}"


@pytest.mark.parametrize("row", TABLE, ids=_row_id)
def test_the_check_exists_and_its_inputs_reach_the_trigger(row: Row) -> None:
    assert row.check in CHECKS, f"{row.check} is not a registered check"
    ctx = _ctx(row.family, row.check, row.dtype, row.mode)
    assert row.dtype in (ctx.prop.dtypes or CHECKS[row.check].default_dtypes), \
        f"{row.check} does not run in {row.dtype} for {row.family}"
    assert row.reached(ctx), f"{row.check} on {row.family} ({row.dtype}) no longer builds the input: {row.trigger}"


def test_every_class_is_mapped() -> None:
    mapped = {row.bug_class for row in TABLE}
    assert mapped == set(CLASSES), f"unmapped: {sorted(set(CLASSES) - mapped)}"
    assert all(cls in CLASSES for cls, _ in UNREACHED)


def test_the_bugs_file_lists_exactly_these_classes() -> None:
    # Read the catalogue where the project keeps it; its row count must match, so a new class needs a row here.
    from pathlib import Path

    # The developers' checkout (and CI's clone) has the catalogue in ../shared beside the repository; users do not.
    path = Path(__file__).resolve().parents[3] / "shared" / "BUGS.md"
    if not path.exists():
        pytest.skip(f"the bug catalogue is kept outside the repository ({path}) and is absent here")
    rows = [line for line in path.read_text().splitlines() if line.startswith("| ") and " | " in line]
    classes = [line for line in rows[1:] if not line.startswith("|---")]
    assert len(classes) == len(CLASSES)


def test_gradient_equivalence_compares_dgamma_and_dbeta_not_only_dx() -> None:
    outcome = run(shipped()["reference.layernorm"], "gradient_equivalence")
    assert {"grad_input.max_abs", "grad_weight.max_abs", "grad_bias.max_abs"} <= set(outcome.metrics)


def test_gamma_is_randomized_far_from_one() -> None:
    # The "γ far from 1" and zero-centred triggers need γ away from its ones default (and w = γ − 1 near 0).
    ctx = _ctx("rmsnorm", "forward_equivalence")
    module = torch.nn.RMSNorm(64)
    randomize_module(ctx.impl, ctx.spec, module, seed=0)
    gamma = module.weight.detach()
    assert (gamma - 1).abs().max() > 0.5 and (gamma - 1).abs().min() < 0.05
