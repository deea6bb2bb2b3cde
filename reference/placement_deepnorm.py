"""The DeepNorm block of reference/placement.py, as the reference of spec placement_deepnorm."""

from __future__ import annotations

from torch import nn

from .placement import PlacementBlockReference


def build(num_features: int, eps: float = 1e-5, affine: bool = True, num_heads: int = 2, encoder_layers: int = 6,
          decoder_layers: int = 0, decoder_block: bool = False) -> nn.Module:
    return PlacementBlockReference(num_features, "deepnorm", eps=eps, affine=affine, num_heads=num_heads,
                                   encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                                   decoder_block=decoder_block)
