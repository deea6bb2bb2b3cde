"""The second-order mutants as plugins, judged by the sandbox: their items are judged in the trusted process, so
double backward runs over there (a create_graph=True backward keeps the first-order gradients' graph in the
plugin's process, and a second backward through them sends the second-order gradients back). `control` and
`control64` are torch's LayerNorm; the rest are the mutants of tests/mutants_contexts.py (computing in float32, and
the ...64 ones in float64), under the declarations their self-tests give them."""

from __future__ import annotations

from mutants_contexts import (
    FUSED,
    DetachedBackwardLayerNorm,
    DetachedBackwardLayerNorm64,
    OnceDifferentiableLayerNorm,
    OnceDifferentiableLayerNorm64,
)
from torch import nn

from normbench import Implementation


def torch_layernorm(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


def _torch_layernorm_always_affine(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """What tests/checks/test_contexts.py declares double_backward=False: torch's LayerNorm, γ and β always."""
    return nn.LayerNorm(num_features, eps=eps)


FLOAT64 = {"affine": "always"}

#: name -> (factory, declaration, dtype judged)
MUTANTS = {
    "control": (torch_layernorm, {}, "float32"),
    "control64": (torch_layernorm, {}, "float64"),
    "detached": (DetachedBackwardLayerNorm, FUSED, "float32"),
    "once": (OnceDifferentiableLayerNorm, {**FUSED, "double_backward": False}, "float32"),
    "once_undeclared": (OnceDifferentiableLayerNorm, FUSED, "float32"),
    "detached_declared": (DetachedBackwardLayerNorm, {**FUSED, "double_backward": False}, "float32"),
    "torch_declared": (_torch_layernorm_always_affine, {"double_backward": False}, "float32"),
    "once64": (OnceDifferentiableLayerNorm64, {**FLOAT64, "double_backward": False}, "float64"),
    "detached64": (DetachedBackwardLayerNorm64, {**FLOAT64, "double_backward": False}, "float64"),
}


def implementations() -> list[Implementation]:
    return [Implementation(name=f"second_order.{name}", family="layernorm", factory=factory, **fields)
            for name, (factory, fields, _) in MUTANTS.items()]
