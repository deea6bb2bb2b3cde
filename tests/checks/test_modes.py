"""Self-tests of the train/eval checks: train_eval_consistency and running_statistics."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, specs
from mutants_invariance import ManualBatchNorm, MaskedTokenBatchNorm
from torch import nn

from normbench.builtins import reference_implementations, torch_implementations
from normbench.checks.base import CheckContext
from normbench.checks.modes import Scenario, _running_trial, _scenarios
from normbench.runner import PlanItem, item_dtypes, judge

PROPERTIES = ("train_eval_consistency", "running_statistics")
_BY_NAME = {i.name: i for i in torch_implementations() + reference_implementations()}


def _items() -> list[tuple[str, str, str, str]]:
    out = []
    for implementation in _BY_NAME.values():
        spec = specs()[implementation.family]
        for prop in spec.properties:
            if prop.name in PROPERTIES:
                for mode in prop.expect:
                    for dtype in item_dtypes(spec, implementation, prop):
                        out.append((implementation.name, prop.name, mode, dtype))
    return out


@over_items(_items())
def test_builtins_meet_spec_expectations(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_BY_NAME[name], prop, dtype, mode)
    assert outcome.verdict == "pass", outcome.summary


def _bn(bug: str | None) -> object:
    return impl(f"manual-bn-{bug}", "batchnorm", functools.partial(ManualBatchNorm, bug=bug))


# -- train / eval consistency ---------------------------------------------------------------------------

def test_train_eval_flags_batchnorm_whose_eval_uses_batch_statistics() -> None:
    outcome = assert_flags(_bn("eval_batch_stats"), "train_eval_consistency")
    assert outcome.verdict == "fail" and outcome.observed == "holds"
    assert run(_bn(None), "train_eval_consistency").verdict == "pass"


def test_train_eval_flags_a_layernorm_that_differs_in_eval() -> None:
    class DropoutLayerNorm(nn.LayerNorm):  # e.g. a fused dropout left on in one mode only
        def __init__(self, num_features: int, eps: float, affine: bool) -> None:
            super().__init__(num_features, eps=eps, elementwise_affine=affine)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = super().forward(x)
            return y * 1.1 if self.training else y

    assert_flags(impl("mode-ln", "layernorm", DropoutLayerNorm), "train_eval_consistency")


def test_train_eval_builds_in_train_mode_and_does_not_leak_state() -> None:
    # The same module state must be used in both modes; a train step's buffer update must not leak into
    # the eval forward. With track_running_stats=False BatchNorm is consistent, and the check must see it.
    spec = specs()["batchnorm"]
    prop = next(p for p in spec.properties if p.name == "train_eval_consistency")
    untracked = dataclasses.replace(spec.params["track_running_stats"], default=False)
    spec = dataclasses.replace(spec, params={**spec.params, "track_running_stats": untracked})
    prop = dataclasses.replace(prop, expect={"any": "holds"})
    outcome = judge(PlanItem(spec, _BY_NAME["torch.nn.BatchNorm1d"], prop, "any", "float32"))
    assert outcome.verdict == "pass", outcome.summary


def test_train_eval_warmup_option() -> None:
    # A norm that uses batch statistics for its first steps, then its running statistics in train as in
    # eval (PowerNorm-style): consistent only once warmed up.
    class WarmingNorm(ManualBatchNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            warmed = int(self.num_batches_tracked) >= 2
            if self.training and warmed:
                self.eval()
                try:
                    return super().forward(x)
                finally:
                    self.train()
            return super().forward(x)

    spec = specs()["batchnorm"]
    prop = next(p for p in spec.properties if p.name == "train_eval_consistency")
    warming = impl("warming-bn", "batchnorm", WarmingNorm)
    cold = dataclasses.replace(prop, expect={"any": "holds"})
    warm = dataclasses.replace(cold, options={"warmup_steps": 2})
    assert judge(PlanItem(spec, warming, cold, "any", "float32")).verdict == "fail"
    assert judge(PlanItem(spec, warming, warm, "any", "float32")).verdict == "pass"


# -- running statistics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bug", ["onnx_momentum", "biased_running_var", "ignore_none_momentum", "no_increment",
                                 "eval_batch_stats"])
def test_running_statistics_flags(bug: str) -> None:
    outcome = assert_flags(_bn(bug), "running_statistics")
    assert outcome.verdict == "fail" and outcome.counterexample, outcome.summary


def test_running_statistics_passes_the_correct_manual_batchnorm() -> None:
    outcome = assert_passes(_bn(None), "running_statistics")
    assert outcome.metrics["cases"] >= 6


def _ctx(implementation: object) -> CheckContext:
    spec = specs()["batchnorm"]
    prop = next(p for p in spec.properties if p.name == "running_statistics")
    return CheckContext(impl=implementation, spec=spec, prop=prop, dtype=torch.float32, mode="any")  # type: ignore[arg-type]


def test_bugs_md_trigger_values() -> None:
    # BUGS.md: 16 values per channel, momentum 0.1: running_var 1.1667 expected, 1.15 if biased.
    ctx = _ctx(_BY_NAME["torch.nn.BatchNorm1d"])
    trigger = next(s for s in _scenarios(ctx) if s.trigger)
    assert trigger.shape[0] * (trigger.shape[2] if len(trigger.shape) > 2 else 1) == 16
    good = _running_trial(ctx, trigger)
    assert good.ok
    assert good.metrics["trigger.running_var"] == pytest.approx(1.1667, abs=1e-4)
    assert good.metrics["trigger.reference_running_var"] == pytest.approx(1.1667, abs=1e-4)
    biased = _running_trial(_ctx(_bn("biased_running_var")), trigger)
    assert not biased.ok
    assert biased.metrics["trigger.running_var"] == pytest.approx(1.15, abs=1e-4)


def test_momentum_scenarios_cover_the_conventions() -> None:
    ctx = _ctx(_BY_NAME["torch.nn.BatchNorm1d"])
    scenarios: list[Scenario] = _scenarios(ctx)
    momenta = {dict(s.params)["momentum"] for s in scenarios}
    assert momenta == {0.0, 0.1, 1.0, None}
    assert any(not dict(s.params)["track_running_stats"] for s in scenarios)


def test_eval_must_not_touch_buffers() -> None:
    class EvalUpdates(ManualBatchNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training and self.track_running_stats:
                with torch.no_grad():
                    self.running_mean.mul_(0.5)
            return super().forward(x)

    outcome = assert_flags(impl("eval-updates-bn", "batchnorm", EvalUpdates), "running_statistics")
    assert "eval step running_mean" in outcome.summary


def test_untracked_must_not_keep_updating_buffers() -> None:
    # track_running_stats=False but buffers kept and updated anyway (pytorch#16793 family of confusions).
    class UntrackedButUpdating(ManualBatchNorm):
        def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                     momentum: float | None = 0.1, track_running_stats: bool = True) -> None:
            super().__init__(num_features, eps, affine, momentum, True)
            self.claims_tracking = track_running_stats

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.claims_tracking:
                y = super().forward(x)  # updates buffers in train mode
                if not self.training:  # and eval uses batch statistics, as untracked should
                    self.track_running_stats = False
                    y = super().forward(x)
                    self.track_running_stats = True
                return y
            return super().forward(x)

    outcome = assert_flags(impl("untracked-updating-bn", "batchnorm", UntrackedButUpdating), "running_statistics")
    assert "untracked" in outcome.summary


def test_masked_running_statistics_count_real_tokens_only() -> None:
    if "batchnorm_masked" not in specs():
        pytest.skip("no batchnorm_masked spec in this checkout")
    good = impl("masked-token-bn", "batchnorm_masked", MaskedTokenBatchNorm, mask_kwarg="pad_mask")
    outcome = assert_passes(good, "running_statistics")
    assert outcome.metrics["cases"] >= 8
    bad = impl("masked-token-bn-count-pads", "batchnorm_masked",
               functools.partial(MaskedTokenBatchNorm, count_pads=True), mask_kwarg="pad_mask")
    outcome = assert_flags(bad, "running_statistics")
    assert outcome.counterexample and outcome.counterexample["masked"], outcome.counterexample
    assert "running_var" in outcome.summary
