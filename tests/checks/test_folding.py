"""foldability: eval BatchNorm is a per-channel affine map that folds into the preceding Linear; train
BatchNorm, LayerNorm, RMSNorm, GroupNorm and InstanceNorm are not; mutants whose eval map depends on the batch
or mixes channels are flagged. Also the public helpers per_channel_affine / fold_into_linear."""

from __future__ import annotations

import torch
from helpers import assert_flags, impl, over_items, run, shipped, spec_items
from mutants_numerics import BatchStatsInEvalBatchNorm
from torch import nn

from normbench.checks.folding import fold_into_linear, per_channel_affine

IMPLS = shipped(families=False)
_ITEMS = spec_items(IMPLS, ("foldability",))


@over_items(_ITEMS)
def test_torch_and_references_meet_their_specs(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(IMPLS[name], "foldability", dtype, mode)
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.observed == outcome.expect


def test_eval_batchnorm_folds_and_train_does_not() -> None:
    bn = IMPLS["torch.nn.BatchNorm1d"]
    assert run(bn, "foldability", "float32", "eval").observed == "holds"
    train = run(bn, "foldability", "float32", "train")
    assert train.observed == "violated" and "fresh" in train.summary


def test_batch_statistics_in_eval_are_flagged() -> None:
    outcome = assert_flags(impl("mutant.BatchStatsInEval", "batchnorm", BatchStatsInEvalBatchNorm), "foldability",
                           mode="eval")
    assert outcome.observed == "violated" and outcome.counterexample["mode"] == "eval"


class _ChannelMixingBatchNorm(nn.BatchNorm1d):
    """A fixed linear map in eval, but not per channel: the normalized channels are rolled by one."""

    def __init__(self, num_features: int, eps: float, affine: bool, momentum: float | None,
                 track_running_stats: bool) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).roll(1, dims=1)


def test_a_fixed_map_that_mixes_channels_is_flagged() -> None:
    assert_flags(impl("mutant.ChannelMixing", "batchnorm", _ChannelMixingBatchNorm), "foldability", mode="eval")


def test_per_channel_affine_recovers_batchnorm_eval_map() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(5).double().eval()
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    fit = per_channel_affine(bn, [torch.randn(16, 5, dtype=torch.float64)], channel_axis=1)
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fit.scale, s)
    torch.testing.assert_close(fit.shift, bn.bias.detach() - s * bn.running_mean)
    assert fit.residual < 1e-12

    linear = nn.Linear(3, 5).double()
    u = torch.randn(7, 3, dtype=torch.float64)
    folded = fold_into_linear(linear, fit.scale, fit.shift)
    with torch.no_grad():
        torch.testing.assert_close(folded(u), bn(linear(u)))


def test_per_channel_affine_leaves_a_residual_for_layernorm() -> None:
    ln = nn.LayerNorm(6).double()
    fit = per_channel_affine(ln, [torch.randn(32, 6, dtype=torch.float64)], channel_axis=-1)
    assert fit.residual > 0.1
