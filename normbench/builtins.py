"""The implementations normbench ships, registered through its own entry points (pyproject.toml)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from normbench.implementation import Implementation


class FunctionalLayerNorm(nn.Module):
    """`F.layer_norm` behind a module, so the functional path is judged on its own."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class FunctionalRMSNorm(nn.Module):
    """`F.rms_norm` behind a module."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _torch_layernorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


def _torch_rmsnorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.RMSNorm(num_features, eps=eps, elementwise_affine=affine)


def _torch_batchnorm(num_features: int, eps: float, affine: bool, momentum: float | None,
                     track_running_stats: bool) -> nn.Module:
    return nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=affine,
                          track_running_stats=track_running_stats)


def _torch_groupnorm(num_features: int, eps: float, affine: bool, num_groups: int) -> nn.Module:
    return nn.GroupNorm(num_groups, num_features, eps=eps, affine=affine)


def _torch_instancenorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.InstanceNorm1d(num_features, eps=eps, affine=affine)


def torch_implementations() -> list[Implementation]:
    """torch's own modules and functionals, judged like any plugin."""
    tags = ("torch",)
    return [
        Implementation(name="torch.nn.LayerNorm", family="layernorm", factory=_torch_layernorm, tags=tags),
        Implementation(name="F.layer_norm", family="layernorm", factory=FunctionalLayerNorm, tags=tags),
        Implementation(name="torch.nn.RMSNorm", family="rmsnorm", factory=_torch_rmsnorm, tags=tags),
        Implementation(name="F.rms_norm", family="rmsnorm", factory=FunctionalRMSNorm, tags=tags),
        Implementation(name="torch.nn.BatchNorm1d", family="batchnorm", factory=_torch_batchnorm, tags=tags),
        Implementation(name="torch.nn.GroupNorm", family="groupnorm", factory=_torch_groupnorm, tags=tags),
        Implementation(name="torch.nn.InstanceNorm1d", family="instancenorm", factory=_torch_instancenorm,
                       tags=tags),
    ]


def reference_implementations() -> list[Implementation]:
    """The float64 references judged as implementations: they must pass everything."""
    from normbench.reference import batchnorm, groupnorm, instancenorm, layernorm, rmsnorm

    tags = ("reference",)
    return [
        Implementation(name=f"reference.{mod.__name__.rsplit('.', 1)[-1]}",
                       family=mod.__name__.rsplit(".", 1)[-1], factory=mod.build, tags=tags)
        for mod in (layernorm, rmsnorm, batchnorm, groupnorm, instancenorm)
    ]
