"""A plugin whose build says which hypothesis storage folder its judging process uses (the run's choice, which the
sandbox hands each child: normbench.sandbox.Limits.hypothesis_home) and whether it was forked with the compile
deployment's warm-up: the forkserver may have started before the run chose either (normbench_forkserver)."""

from __future__ import annotations

import sys

from hypothesis.configuration import storage_directory
from torch import nn

from normbench import Implementation


def _probe(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    warmed = "normbench.preload.compile" in sys.modules
    raise RuntimeError(f"hypothesis home: {storage_directory(intent_to_write=False).home_directory} "
                       f"compile warmed: {warmed}")


implementation = Implementation(name="probe.hypothesis", family="layernorm", factory=_probe)
