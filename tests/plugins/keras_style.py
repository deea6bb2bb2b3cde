"""A LayerNorm laid out as keras 3's torch backend lays out its layers: γ and β are keras-style Variables (not
tensors) whose torch Parameters sit in a ``_torch_params`` ParameterDict, so no attribute path reaches them and the
implementation declares ``params=``. Mutants of the declaration beside it."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from normbench import Implementation


class Variable:
    """What a keras Variable is to the torch backend: a handle whose `.value` is the torch Parameter."""

    def __init__(self, layer: KerasStyleLayerNorm, path: str) -> None:
        self._layer, self.path = layer, path

    @property
    def value(self) -> nn.Parameter:
        return self._layer._torch_params[self.path]


class KerasStyleLayerNorm(nn.Module):
    def __init__(self, c: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.epsilon = eps
        self._torch_params = nn.ParameterDict()
        self.gamma = self.beta = None
        if affine:
            self._torch_params["layer_norm/gamma"] = nn.Parameter(torch.ones(c))
            self._torch_params["layer_norm/beta"] = nn.Parameter(torch.zeros(c))
            self.gamma, self.beta = Variable(self, "layer_norm/gamma"), Variable(self, "layer_norm/beta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = None if self.gamma is None else self.gamma.value
        beta = None if self.beta is None else self.beta.value
        return F.layer_norm(x, x.shape[-1:], gamma, beta, self.epsilon)


class WithUnusedParameter(KerasStyleLayerNorm):
    """The same layer with a registered Parameter its forward never reads: what a wrong declaration may name."""

    def __init__(self, c: int, eps: float, affine: bool) -> None:
        super().__init__(c, eps, affine)
        self.unused = nn.Parameter(torch.ones(c))


def keras_params(module: KerasStyleLayerNorm) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    return (None, None) if module.gamma is None else (module.gamma.value, module.beta.value)


def _impl(name: str, params, factory=KerasStyleLayerNorm, **fields) -> Implementation:
    return Implementation(name=f"keras_style.{name}", family="layernorm", factory=factory, params=params, **fields)


def correct() -> Implementation:
    return _impl("LayerNorm", keras_params)


def unused_weight() -> Implementation:
    """Declares a registered Parameter the forward does not read as γ: randomized, it changes nothing."""
    return _impl("UnusedWeight", lambda m: (m.unused, None if m.beta is None else m.beta.value),
                 factory=WithUnusedParameter)
