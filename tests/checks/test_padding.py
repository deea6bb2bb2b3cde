"""Self-tests of pack_pad_equivalence and the padding helpers: correct norms pass, plain BatchNorm is
observed violated in train, and mutants that count pads in their outputs, state or gradients are flagged.
Also the plugin boundary: a (T, B, C) module with a True = valid mask is judged through the adapter."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, run, specs
from torch import nn

from normbench.builtins import reference_implementations, torch_implementations
from normbench.checks.base import CheckContext, Skip
from normbench.checks.padding import fill_pads, pack_pad_equivalence, pack_tokens, token_view
from normbench.families.masked_batchnorm import MaskedBatchNorm

_BUILTINS = {i.name: i for i in torch_implementations() + reference_implementations()}
_MASKED = impl("normbench.MaskedBatchNorm", "batchnorm_masked", MaskedBatchNorm, mask_kwarg="pad_mask")


# -- helpers ------------------------------------------------------------------------------------------

def test_pack_tokens_features_last_and_channel_first() -> None:
    x = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)  # (B, T, C)
    mask = torch.tensor([[False, False, True], [False, True, True]])
    layout = specs()["layernorm"].layout
    packed = pack_tokens(layout, x, mask)
    assert packed.shape == (1, 3, 2)
    torch.testing.assert_close(packed[0], torch.stack([x[0, 0], x[0, 1], x[1, 0]]))
    channel_first = specs()["batchnorm"].layout
    xc = x.transpose(1, 2).contiguous()  # (B, C, T)
    packed_c = pack_tokens(channel_first, xc, mask)
    assert packed_c.shape == (1, 2, 3)
    torch.testing.assert_close(packed_c.transpose(1, 2), packed)
    filled = fill_pads(channel_first, xc, mask, torch.full((3, 2), -7.0, dtype=torch.float64))
    assert (token_view(channel_first, filled)[mask] == -7).all()
    assert torch.equal(token_view(channel_first, filled)[~mask], token_view(channel_first, xc)[~mask])


# -- verdicts on correct implementations ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["torch.nn.LayerNorm", "torch.nn.RMSNorm", "reference.layernorm",
                                  "reference.rmsnorm"])
def test_per_token_norms_hold_trivially(name: str) -> None:
    outcome = assert_passes(_BUILTINS[name], "pack_pad_equivalence")
    assert outcome.observed == "holds" and outcome.metrics["cases"] >= 8


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_masked_batchnorm_holds(mode: str) -> None:
    assert run(_MASKED, "pack_pad_equivalence", mode=mode).observed == "holds"


def test_plain_batchnorm_is_violated_in_train_and_holds_in_eval() -> None:
    for name in ("torch.nn.BatchNorm1d", "reference.batchnorm"):
        train = run(_BUILTINS[name], "pack_pad_equivalence", mode="train")
        assert train.verdict == "pass" and train.observed == "violated", train.summary
        assert train.counterexample and {"mask_seed", "input", "pad_fraction"} <= set(train.counterexample)
        assert run(_BUILTINS[name], "pack_pad_equivalence", mode="eval").observed == "holds"


def test_plain_batchnorm_claiming_masked_semantics_is_flagged() -> None:
    """torch BatchNorm1d wrapped for (B, T, C) tokens and registered as masked BatchNorm."""

    class TokenBatchNorm(nn.BatchNorm1d):
        def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)

    assert_flags(impl("mutant.TokenBatchNorm", "batchnorm_masked", TokenBatchNorm, mask_kwarg="pad_mask"),
                 "pack_pad_equivalence", mode="train")


# -- mutants the pad-contents check cannot see ----------------------------------------------------------

class PaddedCountRunningVar(MaskedBatchNorm):
    """Mutant: outputs masked correctly, but running_var's unbiased correction uses n = B·T."""

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        super()._update_running(mean, var, self._padded_count)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._padded_count = x.shape[0] * x.shape[1]
        return super().forward(x, pad_mask)


class PadCountingBackward(MaskedBatchNorm):
    """Mutant: a correct forward whose backward normalizes with statistics over all B·T positions (pads
    zeroed), as a hand-written kernel that masks the forward but not the backward reduction would."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        right = super().forward(x, pad_mask)
        if not self.training or pad_mask is None:
            return right
        keep = ~pad_mask.unsqueeze(-1)
        xr = torch.where(keep, x, torch.zeros_like(x))
        n = x.shape[0] * x.shape[1]
        mean = xr.sum((0, 1)) / n
        var = torch.where(keep, xr - mean, torch.zeros_like(x)).pow(2).sum((0, 1)) / n
        wrong = torch.where(keep, (xr - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias,
                            torch.zeros_like(x))
        return right.detach() + (wrong - wrong.detach())  # forward: right; gradient: wrong


@pytest.mark.parametrize(("cls", "what"), [(PaddedCountRunningVar, "running_var"),
                                           (PadCountingBackward, "grad_")])
def test_mutants_invisible_to_pad_contents_are_flagged(cls: type[nn.Module], what: str) -> None:
    mutant = impl(f"mutant.{cls.__name__}", "batchnorm_masked", cls, mask_kwarg="pad_mask")
    assert_passes(mutant, "pad_mask_independence", mode="train")
    outcome = assert_flags(mutant, "pack_pad_equivalence", mode="train")
    assert what in outcome.summary, outcome.summary


# -- the plugin boundary: token layout and mask convention adapters -----------------------------------

class TimeMajorValidMaskBN(MaskedBatchNorm):
    """fairseq-style plugin: (T, B, C) input and a (B, T) mask with True = VALID token."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if valid is None else ~valid
        return super().forward(x.transpose(0, 1), pad_mask=pad).transpose(0, 1)


def test_time_major_valid_mask_plugin_is_judged_through_the_adapter() -> None:
    plugin = impl("plugin.TimeMajorValidMaskBN", "batchnorm_masked", TimeMajorValidMaskBN, mask_kwarg="valid",
                  mask_true_means="valid", token_layout="TBC")
    for prop in ("forward_equivalence", "pad_mask_independence", "pack_pad_equivalence"):
        assert_passes(plugin, prop, mode="train")


def test_a_plugin_declaring_the_wrong_mask_convention_is_flagged() -> None:
    wrong = impl("plugin.WrongConvention", "batchnorm_masked", TimeMajorValidMaskBN, mask_kwarg="valid",
                 mask_true_means="pad", token_layout="TBC")  # it means "valid"
    # The module now takes the real tokens for pads and outputs 0 there whatever they hold, so the pad-contents
    # check sees nothing move; packing the real tokens without pads shows they were never normalized.
    outcome = assert_flags(wrong, "pack_pad_equivalence", mode="train")
    assert "output" in outcome.summary


def test_skips_families_without_sequences() -> None:
    spec = specs()["layernorm"]
    flat = dataclasses.replace(spec, layout=dataclasses.replace(spec.layout, ranks=(2,)))
    prop = next(p for p in flat.properties if p.name == "pack_pad_equivalence")
    ctx = CheckContext(impl=_BUILTINS["torch.nn.LayerNorm"], spec=flat, prop=prop, dtype=torch.float32, mode="any")
    with pytest.raises(Skip, match="no rank-3"):
        pack_pad_equivalence(ctx)
