"""The float64 truth a check compares with: a family's clean-room reference and its forward."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from normbench.spec import Spec


def load_reference(spec: Spec) -> Callable[..., nn.Module]:
    """The `build` function of normbench.reference.<spec.reference>."""
    module = importlib.import_module(f"normbench.reference.{spec.reference}")
    return module.build


def reference_forward(ref: nn.Module, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The reference output in float64 on the CPU for the same input values."""
    x64 = x.detach().to(torch.float64).cpu()
    if pad_mask is not None:
        return ref(x64, pad_mask=pad_mask.cpu())
    return ref(x64)
