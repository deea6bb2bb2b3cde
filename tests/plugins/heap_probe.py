"""A plugin whose build says how many objects its judging process found frozen (gc.get_freeze_count): the
forkserver freezes its heap before it forks (normbench.preload.frozen_heap), so a judging process's collections
skip torch's and normbench's modules."""

from __future__ import annotations

import gc

from torch import nn

from normbench import Implementation


def _probe(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    raise RuntimeError(f"frozen objects: {gc.get_freeze_count()}")


implementation = Implementation(name="probe.heap", family="layernorm", factory=_probe)
