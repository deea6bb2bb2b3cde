"""Plugins for the load-tolerance test (tests/test_load_tolerance.py): correct, and costly in CPU time."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from normbench import Implementation

#: CPU seconds the first forward in a process spends, as a kernel's one-off compilation would
WARMUP_CPU_S = 1.5


class WarmsUpLayerNorm(nn.Module):
    """A correct LayerNorm whose first forward in its process computes for WARMUP_CPU_S of CPU time first."""

    warmed = False

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not WarmsUpLayerNorm.warmed:
            WarmsUpLayerNorm.warmed = True
            start = time.process_time()  # CPU time, so the work is the same on a quiet and on a loaded machine
            while time.process_time() - start < WARMUP_CPU_S:
                sum(range(1000))
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


def warms_up() -> Implementation:
    return Implementation(name="load.warms_up", family="layernorm", factory=WarmsUpLayerNorm)
