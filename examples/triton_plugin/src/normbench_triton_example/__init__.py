"""A Triton LayerNorm and RMSNorm registered with normbench (entry point ``triton-example``).

Triton kernels take CUDA tensors, so both declare ``devices=("cuda",)``: on a machine without CUDA, ``pytest suite``
gives each one explained skip, and ``pytest suite --triton-interpret`` judges them on CPU through Triton's
interpreter. Without triton installed, each is one skipped item saying so.
"""

from __future__ import annotations

from normbench import Implementation, PluginUnavailable

NAMES = {"triton_example.LayerNorm": "layernorm", "triton_example.RMSNorm": "rmsnorm"}


def implementations() -> list[Implementation | PluginUnavailable]:
    try:
        from normbench_triton_example.kernels import TritonLayerNorm, TritonRMSNorm
    except ImportError as exc:
        return [PluginUnavailable(name, f"needs triton ({exc}): pip install 'normbench[triton]'") for name in NAMES]
    # once_differentiable backward kernels: first-order gradients only
    common = {"devices": ("cuda",), "double_backward": False, "tags": ("triton",)}
    return [
        Implementation(name="triton_example.LayerNorm", family="layernorm", factory=TritonLayerNorm,
                       description="Triton, one row per program, two-pass variance in float32", **common),
        Implementation(name="triton_example.RMSNorm", family="rmsnorm", factory=TritonRMSNorm,
                       description="Triton, one row per program, γ applied in float32", **common),
    ]
