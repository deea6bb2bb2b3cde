"""Plugins for the load-tolerance test (tests/test_load_tolerance.py): correct, and costly in CPU time."""

from __future__ import annotations

import time

import torch

from normbench import Implementation
from plugins.hostile import _LayerNorm

#: CPU seconds the first forward in a process spends, as a kernel's one-off compilation would
WARMUP_CPU_S = 1.5


class WarmsUpLayerNorm(_LayerNorm):
    """A correct LayerNorm whose first forward in its process computes for WARMUP_CPU_S of CPU time first."""

    warmed = False

    def misbehave(self, x: torch.Tensor) -> None:
        if not WarmsUpLayerNorm.warmed:
            WarmsUpLayerNorm.warmed = True
            start = time.process_time()  # CPU time, so the work is the same on a quiet and on a loaded machine
            while time.process_time() - start < WARMUP_CPU_S:
                sum(range(1000))


def warms_up() -> Implementation:
    return Implementation(name="load.warms_up", family="layernorm", factory=WarmsUpLayerNorm)
