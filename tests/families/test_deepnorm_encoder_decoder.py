"""DeepNorm's encoder-decoder β: the item that varies decoder_layers tells the paper's 0.87 from
torchscale's 1.15, which no item reached before."""

from __future__ import annotations

from helpers import assert_flags, assert_passes, impl
from torch import nn

from normbench.families.placement import PlacementBlock, deepnorm_alpha_beta, implementations


def _torchscale_constant(num_features: int, eps: float, affine: bool, num_heads: int, encoder_layers: int,
                         decoder_layers: int, decoder_block: bool) -> nn.Module:
    """Mutant: an encoder-decoder encoder initialized with torchscale's β = 1.15·(N⁴M)^(-1/16)."""
    alpha, beta = deepnorm_alpha_beta(encoder_layers, decoder_layers, decoder_block, encoder_beta_constant=1.15)
    return PlacementBlock(num_features, "deepnorm", eps, affine, num_heads, alpha=alpha, beta=beta)


def test_the_torchscale_constant_is_flagged_only_by_the_encoder_decoder_item():
    mutant = impl("mutant.TorchscaleBetaDeepNorm", "placement_deepnorm", _torchscale_constant, mask_kwarg="pad_mask")
    outcome = assert_flags(mutant, "init_scaling_encoder_decoder")
    assert "decoder_layers 0 -> 96" in outcome.summary and "w_v (scaled)" in outcome.summary
    assert_passes(mutant, "init_scaling")  # encoder-only: the constant is never used


def test_the_paper_constant_passes():
    builtin = {i.name: i for i in implementations()}["normbench.blocks.deepnorm"]
    outcome = assert_passes(builtin, "init_scaling_encoder_decoder")
    assert abs(outcome.metrics["w_v.reference_ratio"] - 1.10) < 0.01
