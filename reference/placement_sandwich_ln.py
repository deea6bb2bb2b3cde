"""The Sandwich-LN block of reference/placement.py, as the reference of spec placement_sandwich_ln."""

from __future__ import annotations

from torch import nn

from .placement import PlacementBlockReference


def build(num_features: int, eps: float = 1e-5, affine: bool = True, num_heads: int = 2) -> nn.Module:
    return PlacementBlockReference(num_features, "sandwich_ln", eps=eps, affine=affine, num_heads=num_heads)
