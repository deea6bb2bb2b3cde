"""Benchmark cheats: correct LayerNorms that hide part of their forward time from the clock of the
process they are timed in, a cache that returns a stale output, and an honest control.

A hider patches time.perf_counter, time.perf_counter_ns and time.monotonic when its module is imported (the
attribute names the benchmark harness and torch.utils.benchmark read): every clock then runs behind the real one by
`fraction` of the time spent in the module's forward, so each timed round reads only the rest of its work.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from normbench import Implementation

_real_ns = time.perf_counter_ns
_hidden_ns = [0]
#: the fraction of each forward's duration the clocks do not see (set by the importing module)
_fraction = [0.0]


def _seen_ns() -> int:
    return _real_ns() - _hidden_ns[0]


def _install(fraction: float) -> None:
    _fraction[0] = fraction
    time.perf_counter_ns = _seen_ns
    time.perf_counter = lambda: _seen_ns() / 1e9
    time.monotonic = lambda: _seen_ns() / 1e9
    time.monotonic_ns = _seen_ns


class HidingLayerNorm(nn.Module):
    """torch's LayerNorm, whose forward moves every patched clock back by a fraction of its own duration."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.inner = nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.inner.weight, self.inner.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = _real_ns()
        out = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.inner.eps)
        _hidden_ns[0] += int((_real_ns() - start) * _fraction[0])
        return out


class StaleLayerNorm(nn.Module):
    """Computes its first output once and returns it for every later input of the same shape (a cache keyed on the
    shape): the fastest LayerNorm there is, and wrong on every fresh input."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.inner = nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.inner.weight, self.inner.bias
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self.cache:
            self.cache[key] = self.inner(x).detach()
        return self.cache[key]


def layernorm(name: str, factory: type[nn.Module]) -> Implementation:
    return Implementation(name=name, family="layernorm", factory=factory, dtypes=("float32",))


def install(fraction: float) -> None:
    """Patch the clocks (at the importing module's import) to miss `fraction` of every forward."""
    _install(fraction)


stale = layernorm("cheat.stale", StaleLayerNorm)
#: the same code path as the hiders, with the clocks patched and honest (fraction 0)
control = layernorm("cheat.control", HidingLayerNorm)

# Importing this module patches the clocks, honestly (fraction 0) until a hider's module sets its fraction.
_install(0.0)
# The test reads which processes imported it: never the benchmark process itself.
if os.environ.get("NORMBENCH_TEST_IMPORT_LOG"):
    with open(os.environ["NORMBENCH_TEST_IMPORT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
