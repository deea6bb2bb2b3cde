"""How many bytes a pass must move: the compulsory traffic that turns a time into GB/s.

A normalization layer is memory-bound: its arithmetic per element is a handful of flops, so its speed limit is
the memory bandwidth, and the honest unit is GB/s against the machine's copy bandwidth (DESIGN.md, Performance
notes). The model counts what a perfect kernel cannot avoid, for every family in the same way:

    forward           read x, write y                                  2·|x|  + params read
    inference (eval)  read x, write y                                  2·|x|  + params and running stats read
    backward          read x (or the saved x̂), read dy, write dx       3·|x|  + params read, their grads written
    forward+backward  both                                             5·|x|  + the parameter terms of both

|x| is the input's size in bytes. Per-row statistics (mean / rstd, a C-th of |x|) are left out: they are what a
fused kernel keeps in registers. Train-mode running statistics are read and written once per forward. A kernel
that must read its input twice (two-pass variance over a batch that does not fit in cache) moves more than
this, which is exactly what its lower % of roofline shows: the model is a bound, not a description of a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: multiples of |x| per pass (the table above).
X_TRAFFIC: dict[str, int] = {"forward": 2, "backward": 3, "forward+backward": 5, "inference": 2}
#: how often the parameters (affine weight / bias) cross memory per pass: read, plus their grads written.
PARAM_TRAFFIC: dict[str, int] = {"forward": 1, "backward": 2, "forward+backward": 3, "inference": 1}
#: running statistics (floating buffers): read+written in a train forward, read in inference.
STATE_TRAFFIC: dict[str, int] = {"forward": 2, "backward": 0, "forward+backward": 2, "inference": 1}


@dataclass(frozen=True)
class Traffic:
    x_bytes: int
    param_bytes: int
    state_bytes: int
    total: int


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bytes_moved(x: torch.Tensor, module: nn.Module | None, pass_name: str) -> Traffic:
    """Compulsory bytes for one call of `pass_name` on input `x` through `module` (None: a bare copy)."""
    if pass_name not in X_TRAFFIC:
        raise ValueError(f"unknown pass {pass_name!r}; known: {sorted(X_TRAFFIC)}")
    x_bytes = X_TRAFFIC[pass_name] * x.numel() * x.element_size()
    params = list(module.parameters()) if module is not None else []
    buffers = [b for b in module.buffers() if b.is_floating_point()] if module is not None else []
    param_bytes = PARAM_TRAFFIC[pass_name] * _nbytes(params)
    state_bytes = STATE_TRAFFIC[pass_name] * _nbytes(buffers)
    return Traffic(x_bytes, param_bytes, state_bytes, x_bytes + param_bytes + state_bytes)


def copy_bytes(x: torch.Tensor) -> int:
    """A copy reads and writes x once: the same 2·|x| as a forward, so the two are comparable."""
    return 2 * x.numel() * x.element_size()
