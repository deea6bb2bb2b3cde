"""x-transformers' norms (lucidrains/x-transformers), declared as they are: no wrapper where a declaration fits.

Every norm there is γ-only (no β), always owns its parameters, and hard-codes its eps: `LayerNorm` wraps
`nn.LayerNorm(dim, elementwise_affine=False)` (eps 1e-5) and multiplies by `gamma`; the RMS/Scale norms are
`F.normalize(x) * √C * g`, i.e. the rmsnorm family's "clamp" convention y = γ·√C·x / max(‖x‖₂, 1e-12).
`unit_offset=True` stores γ − 1 (the Gemma-style zero-centred weight), declared with weight_offset=1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from normbench.ecosystem._catalogue import ClassFactory, Entry, declaration_of, import_class, unavailable
from normbench.implementation import Implementation

LIBRARY = "x_transformers"
MODULE = "x_transformers.x_transformers"
#: F.normalize's default: ‖x‖₂ is clamped at 1e-12 (not an eps under the root).
CLAMP = {"eps_mode": "clamp", "eps": 1e-12}


class EffectiveScaleNorm(nn.Module):
    """x-transformers' ScaleNorm with its scalar exposed as the effective g of the scalenorm family.

    x-transformers stores g/√C (it multiplies by `self.scale = √C` in forward); the family's g is the whole
    scale. The wrapper owns `weight` = √C·g and runs the library's own forward with g = weight/√C, so the
    module's arithmetic is the library's and only the parameter is re-expressed.
    """

    def __init__(self, num_features: int, unit_offset: bool = False) -> None:
        super().__init__()
        self.inner = import_class(MODULE, "ScaleNorm")(num_features, unit_offset=unit_offset)
        self.scale = math.sqrt(num_features)
        self.unit_offset = float(unit_offset)
        self.weight = nn.Parameter((self.inner.g.detach() + self.unit_offset) * self.scale)
        del self.inner.g  # the only copy of the parameter is `weight`; the inner module reads it per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.inner, {"g": self.weight / self.scale - self.unit_offset}, (x,))


def effective_scale_norm(num_features: int) -> nn.Module:
    return EffectiveScaleNorm(num_features)


def _impl(name: str, family: str, factory: object, note: str, **fields: object) -> Entry:
    impl = Implementation(name=f"{LIBRARY}.{name}", family=family, factory=factory,  # type: ignore[arg-type]
                          description=f"x-transformers {name}: {note}", tags=("ecosystem", LIBRARY), **fields)
    return Entry(name=impl.name, library=LIBRARY, status="judged", family=family,
                 declaration=declaration_of(impl, note=note), origin=MODULE, implementation=impl)


def entries() -> list[Entry]:
    try:
        import x_transformers  # noqa: F401 - imported to know the library loads
    except Exception as exc:  # missing or broken: one entry with the reason
        return [unavailable(LIBRARY, exc)]
    unit = (("unit_offset", True),)
    out = [
        _impl("LayerNorm", "layernorm", ClassFactory(MODULE, "LayerNorm"),
              "nn.LayerNorm(elementwise_affine=False) * gamma: γ only, eps 1e-5 fixed",
              weight_attr="gamma", bias=False, affine="always", fixed_params={"eps": 1e-5}),
        _impl("LayerNorm+unit_offset", "layernorm", ClassFactory(MODULE, "LayerNorm", fixed_kwargs=unit),
              "unit_offset=True: γ = 1 + gamma", weight_attr="gamma", bias=False, affine="always",
              fixed_params={"eps": 1e-5}, weight_offset=1.0),
        _impl("RMSNorm", "rmsnorm", ClassFactory(MODULE, "RMSNorm"),
              "F.normalize(x) * √C * g: the clamp convention, ‖x‖₂ clamped at 1e-12",
              weight_attr="g", bias=False, affine="always", fixed_params=CLAMP),
        _impl("RMSNorm+unit_offset", "rmsnorm", ClassFactory(MODULE, "RMSNorm", fixed_kwargs=unit),
              "unit_offset=True: γ = 1 + g", weight_attr="g", bias=False, affine="always", fixed_params=CLAMP,
              weight_offset=1.0),
        _impl("SimpleRMSNorm", "rmsnorm", ClassFactory(MODULE, "SimpleRMSNorm"),
              "F.normalize(x) * √C, no parameters", bias=False, affine="never", fixed_params=CLAMP),
        _impl("ScaleNorm", "scalenorm", effective_scale_norm,
              "F.normalize(x) * √C * g with one scalar g; the adapter exposes weight = √C·g (the family's g)",
              bias=False, affine="always", fixed_params={"eps": 1e-12}),
    ]
    reasons = {
        "AdaptiveLayerNorm": "conditional norm: forward needs condition= (γ is predicted from it); no family "
                             "models a conditioning input",
        "AdaptiveRMSNorm": "conditional norm: forward needs condition=; no family models a conditioning input",
        "MultiheadRMSNorm": "γ of shape (heads, 1, dim) for (batch, heads, tokens, dim) inputs: no family has a "
                            "per-head γ",
        "DynamicTanh": "DyT with α at `pre_tanh_scale`: the dyt contract names its α `alpha` and has no field "
                       "to rename it",
        "Derf": "an erf-based DyT variant (α and a shift s); no family computes erf",
    }
    for cls, reason in reasons.items():
        out.append(Entry(name=f"{LIBRARY}.{cls}", library=LIBRARY, status="not judged", reason=reason,
                         origin=MODULE))
    return out
