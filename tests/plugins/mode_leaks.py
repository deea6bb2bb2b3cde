"""Plugins whose forward switches one of torch's thread-wide modes and leaves it so (a `with` that was never
closed): correct numerically, so only the check of torch's global state after an item can name them."""

from __future__ import annotations

import torch

from normbench import Implementation
from plugins.hostile import _LayerNorm

#: the context managers entered and never exited, kept alive: torch's guard restores the mode when it is freed
_ENTERED: list[torch.inference_mode] = []


class _InferenceModeOn(_LayerNorm):
    """A forward called without autograd (under no_grad, as an evaluation loop calls it) enters
    torch.inference_mode() for speed and never leaves it: the caller's later training steps get no gradients.
    Inference mode also keeps grad mode off, so only the inference mode tells it from a no_grad call."""

    def misbehave(self, x: torch.Tensor) -> None:
        if not torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            mode = torch.inference_mode()
            mode.__enter__()
            _ENTERED.append(mode)


def inference_mode_on() -> Implementation:
    return Implementation(name="mode_leaks.inference_mode_on", family="layernorm", factory=_InferenceModeOn)
