"""Plugins that attack the judge itself: each is a LayerNorm that forgets the mean (a wrong output)
and then tries to make the verdict say it conforms anyway. `control` is correct. Judged by the trusted process,
every forger fails or errs; judged beside the plugin, each of these attacks won.
"""

from __future__ import annotations

import json
import os
import stat

import torch
from torch import nn

from normbench import Implementation


class WrongLayerNorm(nn.Module):
    """x / rms · γ + β: LayerNorm without the mean subtraction (a wrong forward on any input with a mean)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.right = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.right:
            y = torch.nn.functional.layer_norm(x, x.shape[-1:], None, None, self.eps)
        else:
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y if self.weight is None else y * self.weight + self.bias


class AlwaysEqual(torch.Tensor):
    """A tensor whose arithmetic against anything comes out as zero difference: every comparison reads exact."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func in (torch.Tensor.sub, torch.sub, torch.Tensor.__sub__, torch.Tensor.__rsub__) and isinstance(
                out, torch.Tensor):
            return torch.zeros_like(out.as_subclass(torch.Tensor))
        return out


class SubclassOutput(WrongLayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).as_subclass(AlwaysEqual)


def _edit_the_registry() -> None:
    """Every check of the plugin's process passes."""
    from normbench.checks import CHECKS
    from normbench.checks.base import Observation

    for check in list(CHECKS.values()):
        object.__setattr__(check, "fn", lambda ctx: Observation(True, "forged"))  # a frozen dataclass, or not


def _swap_the_comparison_code() -> None:
    """normbench.compare.compare's code object replaced by one that compares the truth with itself."""
    import types

    import normbench.compare as compare

    fn = compare.compare
    compare._original_compare = types.FunctionType(fn.__code__, fn.__globals__, "compare", fn.__defaults__,
                                                   fn.__closure__)
    compare._original_compare.__kwdefaults__ = fn.__kwdefaults__
    fn.__code__ = _exact.__code__


def _exact(actual, truth, *args, **kwargs):
    import normbench.compare as compare

    return compare._original_compare(truth.to(actual.dtype), truth, *args, **kwargs)


class PipeForger(WrongLayerNorm):
    """Writes a well-formed passing outcome into every socket and pipe this process holds, at each forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from multiprocessing.connection import Connection

        forged = json.dumps(["outcome", {"verdict": "pass", "observed": "holds", "summary": "forged",
                                         "metrics": {}, "counterexample": None, "duration_s": 0.0}, False]).encode()
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    Connection(os.dup(fd)).send_bytes(forged)
            except OSError:
                pass
        return super().forward(x)


class HarnessDetector(WrongLayerNorm):
    """Correct only while normbench's judge is on its stack: wrong everywhere else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import sys

        frame, judged = sys._getframe(1), False
        while frame is not None:
            judged = judged or frame.f_globals.get("__name__", "").startswith("normbench.checks")
            frame = frame.f_back
        self.right = judged
        return super().forward(x)


def _impl(name: str, factory) -> Implementation:
    return Implementation(name=f"forgers.{name}", family="layernorm", factory=factory, supports_gradcheck=False,
                          dtypes=("float32",))


def control() -> Implementation:
    class Correct(WrongLayerNorm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.right = True

    return _impl("control", Correct)


def subclass_output() -> Implementation:
    return _impl("subclass_output", SubclassOutput)


def registry_editor() -> Implementation:
    _edit_the_registry()
    return _impl("registry_editor", WrongLayerNorm)


def code_swapper() -> Implementation:
    _swap_the_comparison_code()
    return _impl("code_swapper", WrongLayerNorm)


def pipe_forger() -> Implementation:
    return _impl("pipe_forger", PipeForger)


def harness_detector() -> Implementation:
    return _impl("harness_detector", HarnessDetector)


class PlainAttributeLayerNorm(nn.Module):
    """A correct LayerNorm whose γ and β are plain tensor attributes (declared registered_params=False): the
    request protocol cannot mirror them, so its items are judged beside it, saying why."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.ones(num_features) if affine else None
        self.bias = torch.zeros(num_features) if affine else None

    def _apply(self, fn, recurse=True):
        if self.weight is not None:
            self.weight, self.bias = fn(self.weight), fn(self.bias)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


def unmirrored() -> Implementation:
    return Implementation(name="forgers.unmirrored", family="layernorm", factory=PlainAttributeLayerNorm,
                          supports_gradcheck=False, dtypes=("float32",), registered_params=False)
