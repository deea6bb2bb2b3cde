"""Plugins that misbehave the way third-party kernels do: crash, exit, hang, allocate without end, change global
torch state, patch torch or normbench, print without end. Each is a LayerNorm that would otherwise be correct
(except where the misbehaviour needs a wrong output to matter), judged beside `hostile.control`, a correct one.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from normbench import Implementation


class _LayerNorm(nn.Module):
    """A correct LayerNorm; subclasses misbehave in `misbehave`, called at the start of every forward."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def misbehave(self, x: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.misbehave(x)
        # In float32 for half inputs: torch's CPU half LayerNorm accumulates dγ / dβ in half (a known failure
        # of torch.nn.LayerNorm), and the control must conform.
        compute = torch.promote_types(x.dtype, torch.float32)
        weight = None if self.weight is None else self.weight.to(compute)
        bias = None if self.bias is None else self.bias.to(compute)
        return F.layer_norm(x.to(compute), (x.shape[-1],), weight, bias, self.eps).to(x.dtype)


class _Segfault(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class _OsExit(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        os._exit(3)


class _SysExit(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        sys.exit(2)


class _KeyboardInterrupt(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        raise KeyboardInterrupt


class _NativeHang(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        # A reduction over 10¹² elements inside one C++ call: no Python signal handler runs until it returns.
        torch.ones(1).expand(10**12).sum()


class _SwallowsTimeout(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        while True:  # a retry loop that catches everything, the time limit's exception included
            try:
                time.sleep(0.05)
            except BaseException:  # noqa: BLE001, S110 - on purpose
                pass


class _AllocationBomb(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        torch.ones(20 * 2**30, dtype=torch.uint8)  # 20 GiB, touched


class _GradModeOff(_LayerNorm):
    def misbehave(self, x: torch.Tensor) -> None:
        torch.set_grad_enabled(False)  # and never turned back on


class _Identity(_LayerNorm):
    """Returns x: wrong, so that a plugin that also disarms the judge has something to hide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.misbehave(x)
        return x.clone()


class _PatchesJudge(_Identity):
    def misbehave(self, x: torch.Tensor) -> None:
        import normbench.checks.base as base
        import normbench.compare as compare

        real = compare.compare

        def lenient(actual, truth, dtype, tolerance, reduction_length=1):  # noqa: ANN001, ANN202
            return real(truth, truth, dtype, tolerance, reduction_length)

        compare.compare = lenient
        base.compare = lenient


class _Prints(_Identity):
    def misbehave(self, x: torch.Tensor) -> None:
        sys.stdout.write("x" * (10 << 20))  # 10 MB per call
        sys.stdout.flush()


def _fake_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: ANN001, ANN202
    return x.clone()


def _impl(name: str, factory: type[nn.Module]) -> Implementation:
    return Implementation(name=f"hostile.{name}", family="layernorm", factory=factory)


def control() -> Implementation:
    return _impl("control", _LayerNorm)


def segfault() -> Implementation:
    return _impl("segfault", _Segfault)


def os_exit() -> Implementation:
    return _impl("os_exit", _OsExit)


def sys_exit() -> Implementation:
    return _impl("sys_exit", _SysExit)


def keyboard_interrupt() -> Implementation:
    return _impl("keyboard_interrupt", _KeyboardInterrupt)


def native_hang() -> Implementation:
    return _impl("native_hang", _NativeHang)


def swallows_timeout() -> Implementation:
    return _impl("swallows_timeout", _SwallowsTimeout)


def allocation_bomb() -> Implementation:
    return _impl("allocation_bomb", _AllocationBomb)


def grad_mode_off() -> Implementation:
    return _impl("grad_mode_off", _GradModeOff)


def patches_judge() -> Implementation:
    return _impl("patches_judge", _PatchesJudge)


def prints() -> Implementation:
    return _impl("prints", _Prints)


def patches_torch() -> Implementation:
    """Replaces F.layer_norm when the plugin is loaded, as fused-kernel packages do; its module calls it."""
    F.layer_norm = _fake_layer_norm
    return _impl("patches_torch", _LayerNorm)


HOSTILE = ("segfault", "os_exit", "sys_exit", "keyboard_interrupt", "native_hang", "swallows_timeout",
           "allocation_bomb", "grad_mode_off", "patches_torch", "patches_judge", "prints")


def impersonator() -> Implementation:
    """Named like a built-in: its records would overwrite torch's."""
    return Implementation(name="torch.nn.LayerNorm", family="layernorm", factory=_Identity)
