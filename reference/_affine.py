"""Affine parameters shared by the references (weight = gamma, bias = beta)."""

from __future__ import annotations

import torch
from torch import nn


def affine_parameters(module: nn.Module, num_features: int, affine: bool) -> None:
    if affine:
        module.weight = nn.Parameter(torch.ones(num_features, dtype=torch.float64))
        module.bias = nn.Parameter(torch.zeros(num_features, dtype=torch.float64))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def apply_affine(module: nn.Module, y: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """y·γ + β with γ, β broadcast along `channel_axis`, in float64."""
    if module.weight is None:
        return y
    shape = [1] * y.dim()
    shape[channel_axis] = -1
    return y * module.weight.to(torch.float64).reshape(shape) + module.bias.to(torch.float64).reshape(shape)
