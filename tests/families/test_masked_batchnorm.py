"""Masked BatchNorm (batchnorm_masked): built-in and reference meet the spec, plain BatchNorm shows the
padding leak the family exists to fix, and mutants that count pads are flagged."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, planned_items, run
from normbench.reference.batchnorm_masked import build as reference_build
from torch import nn

from normbench.builtins import torch_implementations
from normbench.families.masked_batchnorm import MaskedBatchNorm, implementations

_IMPLS = {i.name: i for i in implementations()}
_TORCH_BN = next(i for i in torch_implementations() if i.name == "torch.nn.BatchNorm1d")

ITEMS = planned_items(_IMPLS)


@over_items(ITEMS)
def test_builtin_and_reference_meet_the_spec(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_IMPLS[name], prop, dtype, mode)
    assert outcome.verdict in ("pass", "report", "skip"), outcome.summary


@pytest.mark.parametrize("prop", ["pad_mask_independence", "pack_pad_equivalence"])
def test_masked_holds_where_plain_batchnorm_is_violated(prop: str) -> None:
    plain = run(_TORCH_BN, prop, mode="train")
    assert plain.verdict == "pass" and plain.observed == "violated", plain.summary
    masked = assert_passes(_IMPLS["normbench.MaskedBatchNorm"], prop, mode="train")
    assert masked.observed == "holds"


# -- mutants ------------------------------------------------------------------------------------------

class PadCountingBatchNorm(MaskedBatchNorm):
    """Mutant: accepts the mask and ignores it - pads enter the statistics (pytorch#70529)."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, None)


class PadDenominatorBatchNorm(MaskedBatchNorm):
    """Mutant: pad values are zeroed out of the sums, but the mean and variance divide by B·T. No pad value
    reaches the statistics, so pad_mask_independence cannot see it; packing without pads can."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or pad_mask is None:
            return super().forward(x, pad_mask)
        keep = ~pad_mask.unsqueeze(-1)
        xr = torch.where(keep, x, torch.zeros_like(x))
        n = x.shape[0] * x.shape[1]
        mean = xr.sum((0, 1)) / n
        var = torch.where(keep, xr - mean, torch.zeros_like(x)).pow(2).sum((0, 1)) / n
        y = (xr - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return torch.where(keep, y, torch.zeros_like(y))


def _mutant(cls: type[nn.Module], name: str) -> object:
    return impl(name, "batchnorm_masked", cls, mask_kwarg="pad_mask")


def test_counting_pads_is_flagged() -> None:
    mutant = _mutant(PadCountingBatchNorm, "mutant.PadCountingBatchNorm")
    assert_flags(mutant, "pad_mask_independence", mode="train")
    assert_flags(mutant, "pack_pad_equivalence", mode="train")


def test_dividing_by_the_padded_count_is_flagged_by_pack_pad_only() -> None:
    mutant = _mutant(PadDenominatorBatchNorm, "mutant.PadDenominatorBatchNorm")
    assert_passes(mutant, "pad_mask_independence", mode="train")  # the pads' values never matter...
    outcome = assert_flags(mutant, "pack_pad_equivalence", mode="train")  # ...their number does
    assert "output" in outcome.summary


def test_mask_ignored_in_the_no_pad_case_still_passes_forward_equivalence() -> None:
    """Without pads the two mutants are plain BatchNorm: the padding checks are what catch them."""
    assert_passes(_mutant(PadCountingBatchNorm, "mutant.PadCountingBatchNorm"), "forward_equivalence",
                  mode="train")


# -- semantics ----------------------------------------------------------------------------------------

def test_running_variance_uses_the_real_token_count() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[False, False, False, True], [False, True, True, True]])
    for module in (MaskedBatchNorm(3, momentum=1.0).double(), reference_build(3, momentum=1.0)):
        module.train()
        module(x, pad_mask=mask)
        real = x[~mask]  # (4, 3)
        torch.testing.assert_close(module.running_var, real.var(dim=0, unbiased=True))
        torch.testing.assert_close(module.running_mean, real.mean(dim=0))


def test_pads_are_zero_in_train_and_mapped_in_eval() -> None:
    torch.manual_seed(0)
    module = MaskedBatchNorm(3)
    x = torch.randn(2, 4, 3)
    x[1, 2:] = float("nan")
    mask = torch.tensor([[False] * 4, [False, False, True, True]])
    y = module(x, pad_mask=mask)
    assert torch.isfinite(y).all() and (y[1, 2:] == 0).all()
    y.sum().backward()
    module.eval()
    x[1, 2:] = 5.0
    s, t = module.folding_affine()
    torch.testing.assert_close(module(x, pad_mask=mask), (x.double() * s + t).float())


def test_folding_affine_refuses_train_mode_and_untracked() -> None:
    with pytest.raises(ValueError, match="train mode"):
        MaskedBatchNorm(3).folding_affine()
    with pytest.raises(ValueError, match="track_running_stats"):
        MaskedBatchNorm(3, track_running_stats=False).eval().folding_affine()
