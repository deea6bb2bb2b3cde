"""Residual placements (Post-LN, Pre-LN, Sandwich-LN, DeepNorm) as block families: built-ins and reference
blocks meet their specs; DeepNorm's α / β formulas and which weights β scales; mutants flagged."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, planned_items, run
from normbench.reference.placement import (
    BETA_SCALED,
    PAPER_ENCODER_BETA,
    TORCHSCALE_ENCODER_BETA,
    deepnorm_coefficients,
)
from normbench.reference.placement_deepnorm import build as reference_deepnorm
from torch import nn

from normbench.checks import CHECKS
from normbench.families.placement import (
    DEEPNORM_SCALED,
    PlacementBlock,
    deepnorm_alpha_beta,
    deepnorm_block,
    implementations,
)

FAMILIES = ("placement_post_ln", "placement_pre_ln", "placement_sandwich_ln", "placement_deepnorm")
_IMPLS = {i.name: i for i in implementations()}

ITEMS = planned_items(_IMPLS)


@over_items(ITEMS)
def test_blocks_meet_their_specs(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_IMPLS[name], prop, dtype, mode)
    assert outcome.verdict in ("pass", "report", "skip"), outcome.summary


def test_residual_identity_tells_the_placements_apart() -> None:
    observed = {f: run(_IMPLS[f"normbench.blocks.{f.removeprefix('placement_')}"], "residual_identity").observed
                for f in FAMILIES}
    assert observed == {"placement_post_ln": "violated", "placement_pre_ln": "holds",
                        "placement_sandwich_ln": "violated", "placement_deepnorm": "violated"}


# -- DeepNorm coefficients ------------------------------------------------------------------------------

@pytest.mark.parametrize("coefficients", [deepnorm_coefficients, deepnorm_alpha_beta])
def test_deepnorm_alpha_beta_formulas(coefficients: object) -> None:
    f = coefficients
    # encoder-only, N = 6: α = 12^(1/4), β = 48^(-1/4)
    assert f(6, 0, False) == pytest.approx((1.8612097182041991, 0.3799178428257963), rel=1e-12)
    # decoder-only, M = 18: α = 36^(1/4) = sqrt(6), β = 144^(-1/4) = 1/sqrt(12)
    assert f(0, 18, True) == pytest.approx((math.sqrt(6), 1 / math.sqrt(12)), rel=1e-12)
    # encoder-decoder N = M = 16: encoder α = 0.81·(16^5)^(1/16), β = 0.87·(16^5)^(-1/16) (paper)
    base = 16 ** (5 / 16)
    assert f(16, 16, False) == pytest.approx((0.81 * base, 0.87 / base), rel=1e-12)
    # decoder of that encoder-decoder: α = 48^(1/4), β = 192^(-1/4)
    assert f(16, 16, True) == pytest.approx((48 ** 0.25, 192 ** -0.25), rel=1e-12)


def test_encoder_beta_constant_paper_vs_torchscale() -> None:
    paper = deepnorm_coefficients(6, 6, False)[1]
    torchscale = deepnorm_coefficients(6, 6, False, encoder_beta_constant=TORCHSCALE_ENCODER_BETA)[1]
    assert PAPER_ENCODER_BETA == 0.87 and TORCHSCALE_ENCODER_BETA == 1.15
    assert torchscale / paper == pytest.approx(1.15 / 0.87)
    assert deepnorm_alpha_beta(6, 6, False, encoder_beta_constant=1.15)[1] == pytest.approx(torchscale)
    assert reference_deepnorm(8, encoder_layers=6, decoder_layers=6).beta == pytest.approx(paper)


@pytest.mark.parametrize(("n", "m", "decoder"), [(0, 0, False), (6, 0, True), (0, 6, False), (-1, 6, True)])
def test_inconsistent_layer_counts_are_refused(n: int, m: int, decoder: bool) -> None:
    for f in (deepnorm_coefficients, deepnorm_alpha_beta):
        with pytest.raises(ValueError):
            f(n, m, decoder)


def test_beta_scales_ffn_value_and_output_not_query_key() -> None:
    assert set(BETA_SCALED) == set(DEEPNORM_SCALED) == {"w_v", "w_o", "w_ff1", "w_ff2"}
    c, n = 64, 6
    _, beta = deepnorm_coefficients(n, 0, False)
    for build in (lambda: reference_deepnorm(c, encoder_layers=n),
                  lambda: deepnorm_block(c, 1e-5, True, 2, n, 0, False)):
        torch.manual_seed(0)
        block = build()
        for name in ("w_q", "w_k", "w_v", "w_o", "w_ff1", "w_ff2"):
            w = getattr(block, name).detach().double()
            xavier = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))
            gain = float(w.std()) / xavier
            want = beta if name in BETA_SCALED else 1.0
            assert gain == pytest.approx(want, rel=0.12), (name, gain, want)


# -- mutants ----------------------------------------------------------------------------------------------

def _post_ln_as_pre_ln(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
    """Mutant: a "Pre-LN" block that is actually Post-LN."""
    return PlacementBlock(num_features, "post_ln", eps, affine, num_heads)


def _pre_ln_as_sandwich(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
    """Mutant: a "Sandwich-LN" block missing its post-norms; `weight` keeps the (4, C) shape of the contract."""
    block = PlacementBlock(num_features, "sandwich_ln", eps, affine, num_heads)
    block.placement = "pre_ln"
    block._ln = lambda h, i: PlacementBlock._ln(block, h, 2 * i)  # the pre-norms only
    return block


class _QKScaledDeepNorm(PlacementBlock):
    """Mutant: DeepNorm with β applied to the query and key projections as well."""

    def __init__(self, num_features: int, eps: float, affine: bool, num_heads: int, encoder_layers: int,
                 decoder_layers: int, decoder_block: bool) -> None:
        alpha, beta = deepnorm_alpha_beta(encoder_layers, decoder_layers, decoder_block)
        super().__init__(num_features, "deepnorm", eps, affine, num_heads, alpha=alpha, beta=beta)
        with torch.no_grad():
            self.w_q.mul_(beta)
            self.w_k.mul_(beta)


def _unscaled_deepnorm(num_features: int, eps: float, affine: bool, num_heads: int, encoder_layers: int,
                       decoder_layers: int, decoder_block: bool) -> nn.Module:
    """Mutant: DeepNorm's α without its β initialization."""
    alpha, _ = deepnorm_alpha_beta(encoder_layers, decoder_layers, decoder_block)
    return PlacementBlock(num_features, "deepnorm", eps, affine, num_heads, alpha=alpha)


def _alpha_free_deepnorm(num_features: int, eps: float, affine: bool, num_heads: int, encoder_layers: int,
                         decoder_layers: int, decoder_block: bool) -> nn.Module:
    """Mutant: β-scaled init but α = 1, i.e. plain Post-LN registered as DeepNorm."""
    _, beta = deepnorm_alpha_beta(encoder_layers, decoder_layers, decoder_block)
    return PlacementBlock(num_features, "deepnorm", eps, affine, num_heads, beta=beta)


class _UnmaskedBlock(PlacementBlock):
    """Mutant: a Pre-LN block that accepts the pad mask and attends to pad keys anyway."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def test_pre_ln_that_is_post_ln_is_flagged() -> None:
    mutant = impl("mutant.PostAsPreLN", "placement_pre_ln", _post_ln_as_pre_ln, mask_kwarg="pad_mask")
    assert_flags(mutant, "forward_equivalence")
    assert_flags(mutant, "residual_identity")
    if "normalization_statistics" in CHECKS:
        assert_flags(mutant, "normalization_statistics")


def test_sandwich_without_post_norm_is_flagged() -> None:
    mutant = impl("mutant.PreAsSandwich", "placement_sandwich_ln", _pre_ln_as_sandwich, mask_kwarg="pad_mask")
    assert_flags(mutant, "forward_equivalence")
    assert_flags(mutant, "residual_identity")  # no post-norm beta added: it is the identity


def test_deepnorm_with_beta_on_query_key_is_flagged() -> None:
    mutant = impl("mutant.QKScaledDeepNorm", "placement_deepnorm", _QKScaledDeepNorm, mask_kwarg="pad_mask")
    outcome = assert_flags(mutant, "init_scaling")
    assert "w_q (unscaled)" in outcome.summary and "w_k (unscaled)" in outcome.summary
    assert_passes(mutant, "forward_equivalence")  # the forward is right: only the initialization is wrong


def test_deepnorm_without_beta_init_is_flagged() -> None:
    mutant = impl("mutant.UnscaledDeepNorm", "placement_deepnorm", _unscaled_deepnorm, mask_kwarg="pad_mask")
    outcome = assert_flags(mutant, "init_scaling")
    assert "w_v (scaled)" in outcome.summary


def test_deepnorm_without_alpha_is_flagged() -> None:
    mutant = impl("mutant.AlphaFreeDeepNorm", "placement_deepnorm", _alpha_free_deepnorm, mask_kwarg="pad_mask")
    assert_flags(mutant, "forward_equivalence")
    assert_passes(mutant, "init_scaling")


def test_block_attending_to_pads_is_flagged() -> None:
    def factory(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
        return _UnmaskedBlock(num_features, "pre_ln", eps, affine, num_heads)

    assert_flags(impl("mutant.UnmaskedBlock", "placement_pre_ln", factory, mask_kwarg="pad_mask"),
                 "pad_mask_independence")


def test_missing_contract_parameter_is_an_error_naming_it() -> None:
    class Renamed(PlacementBlock):
        def __init__(self, num_features: int, eps: float, affine: bool, num_heads: int) -> None:
            super().__init__(num_features, "pre_ln", eps, affine, num_heads)
            self.w_out = self.w_o
            del self.w_o

        def _attention(self, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
            self.w_o = self.w_out
            try:
                return super()._attention(h, keep)
            finally:
                del self.w_o

    outcome = run(impl("mutant.Renamed", "placement_pre_ln", Renamed), "residual_identity")
    assert outcome.verdict == "error" and "'w_o'" in outcome.summary
