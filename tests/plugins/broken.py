"""Plugins that are broken on purpose: the suite must report each and keep judging the others."""

from __future__ import annotations

import torch
from torch import nn

from normbench import Implementation


class _Raises(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        raise RuntimeError("this factory always fails")


class _WrongShape(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 1:]  # drops a feature: the output shape differs from the input's


class _NaN(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))


def factory_raises() -> Implementation:
    return Implementation(name="broken.factory_raises", family="layernorm", factory=_Raises)


def wrong_shape() -> Implementation:
    return Implementation(name="broken.wrong_shape", family="layernorm", factory=_WrongShape)


def nan_output() -> Implementation:
    return Implementation(name="broken.nan_output", family="layernorm", factory=_NaN)


def returns_string() -> str:
    return "not an implementation"


def raises_on_call() -> list[Implementation]:
    raise ValueError("plugin setup exploded")


unknown_family = Implementation(name="broken.unknown_family", family="no_such_family", factory=_NaN)


class _Hangs(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        while True:  # a kernel that never returns
            time.sleep(0.01)


def hangs() -> Implementation:
    return Implementation(name="broken.hangs", family="layernorm", factory=_Hangs)


def library_missing() -> list:
    """A catalogue whose second library is not installed: the first is judged, the second is one skipped item."""
    from normbench import PluginUnavailable

    return [Implementation(name="broken.available", family="layernorm", factory=_NaN),
            PluginUnavailable("somelib.FusedNorm", "No module named 'somelib'")]


def library_broken() -> list:
    from normbench import PluginUnavailable

    raise PluginUnavailable("otherlib", "importing otherlib raised OSError: libcuda.so.1 not found")
