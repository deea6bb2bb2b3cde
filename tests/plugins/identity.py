"""Plugins that try to take an identity that is not theirs: a `source` of their own choosing, a name
another source declares, or the same name twice."""

from __future__ import annotations

from normbench import Implementation
from normbench.builtins import FunctionalLayerNorm

#: the label the registry gives torch's built-ins
TORCH_BUILTINS = "entry point 'torch-builtins' (normbench.builtins:torch_implementations)"


def _impl(name: str, **fields: object) -> Implementation:
    return Implementation(name=name, family="layernorm", factory=FunctionalLayerNorm, **fields)


def forged_source() -> Implementation:
    """Claims to come from torch's built-ins."""
    return _impl("forged.LayerNorm", source=TORCH_BUILTINS)


def forged_builtin() -> Implementation:
    """Named like a built-in and claiming its source: stored as the built-in, silently, under --no-entry-points."""
    return _impl("torch.nn.LayerNorm", source=TORCH_BUILTINS)


def own_source() -> Implementation:
    """Sets `source` to exactly the label the registry gives it: true, so harmless."""
    return _impl("honest.LayerNorm", source="--impl-path plugins.identity:own_source")


def dup_a() -> Implementation:
    return _impl("dup.LayerNorm", description="first declaration")


def dup_b() -> Implementation:
    return _impl("dup.LayerNorm", description="second declaration")


def twice() -> list[Implementation]:
    return [_impl("twice.LayerNorm"), _impl("twice.LayerNorm"), _impl("once.LayerNorm")]


def control() -> Implementation:
    return _impl("identity.control")
