"""A plugin that declares CUDA only (a fused GPU kernel's wrapper): on a machine without CUDA it cannot be judged,
and the suite must say so (one skipped item, exit 0), never "no tests ran"."""

from __future__ import annotations

import torch

from normbench import Implementation


def cuda_rmsnorm() -> Implementation:
    return Implementation(name="cuda_only.RMSNorm", family="rmsnorm", factory=torch.nn.RMSNorm, devices=("cuda",))
