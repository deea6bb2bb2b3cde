"""diffusers' shared norm layers (`diffusers.models.normalization`), declared as they are written.

`RMSNorm(dim, eps, elementwise_affine=True, bias=False)` takes the mean of x² in float32, multiplies x by its rsqrt,
and, with a half-precision weight, casts to it before `* weight` (+ bias); with a float32 weight it returns float32
whatever the input. `MochiRMSNorm` is the same without the cast or bias, casting back at the end. `FP32LayerNorm` is
`nn.LayerNorm` on float32 copies of x, γ, β. `LayerNorm` is `torch.nn.LayerNorm` itself on torch >= 2.1. The
Ada* / *Zero / *Continuous norms take a conditioning embedding and are listed with that reason; every class the
module defines is accounted for (a new one is listed as undeclared). The model-specific norms elsewhere in
diffusers (diffusers.models.transformers / autoencoders) are not catalogued yet.
"""

from __future__ import annotations

import importlib

from torch import nn

from normbench.ecosystem._catalogue import ClassFactory, Entry, judged, not_judged, unavailable, undeclared

LIBRARY = "diffusers"
MODULE = "diffusers.models.normalization"
FP32 = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}
AFFINE = (("affine", "elementwise_affine"),)
CONDITIONED = ("conditioned norm: forward takes a conditioning input ({what}) from which shift / scale{gates} are "
               "predicted; no family models a conditioning input")
REASONS = {
    "AdaLayerNorm": CONDITIONED.format(what="a timestep or temb", gates=""),
    "AdaLayerNormZero": CONDITIONED.format(what="timestep, class labels or emb", gates=" and gates"),
    "AdaLayerNormZeroSingle": CONDITIONED.format(what="emb", gates=" and a gate"),
    "SD35AdaLayerNormZeroX": CONDITIONED.format(what="emb", gates=" and gates"),
    "AdaLayerNormSingle": "timestep embedder (PixArt-α's adaLN-single): returns (embedding, timestep), no "
                          "normalization of its input",
    "AdaLayerNormContinuous": CONDITIONED.format(what="conditioning_embedding", gates=""),
    "LuminaLayerNormContinuous": CONDITIONED.format(what="conditioning_embedding", gates=""),
    "LuminaRMSNormZero": CONDITIONED.format(what="emb", gates=" and gates"),
    "CogView3PlusAdaLayerNormZeroTextImage": CONDITIONED.format(what="emb, and a second (text) stream",
                                                                gates=" and gates"),
    "CogVideoXLayerNormZero": CONDITIONED.format(what="temb, and a second (text) stream", gates=" and gates"),
    "AdaGroupNorm": CONDITIONED.format(what="emb", gates=""),
    "GlobalResponseNorm": "ConvNeXt-V2's GRN: ‖x‖₂ over the spatial axes of (N, H, W, C), divided by its mean over "
                          "channels, γ·(x·n) + β + x with zero-init γ, β; no family computes it",
    "LpNorm": "F.normalize(x, p, dim, eps) = x / max(‖x‖_p, eps): a unit-norm projection with no √C and no γ "
              "(scalenorm without affine and rmsnorm's clamp convention both multiply by √C)",
    "RMSNorm+bias": "bias=True adds a β; the rmsnorm family has no β (normbench's rmsnorm contract is γ·x/rms): "
                    "declared, every item would be an error saying so",
}


def entries() -> list[Entry]:
    try:
        module = importlib.import_module(MODULE)
    except Exception as exc:
        return [unavailable(LIBRARY, exc)]
    out = [
        judged(LIBRARY, "RMSNorm", "rmsnorm", ClassFactory(MODULE, "RMSNorm", renames=AFFINE,
                                                           fixed_kwargs=(("bias", False),)),
               "x · rsqrt(mean(x²) in float32 + eps), cast to a half weight before * weight; no float64 path "
               "(bias=False, its default)", MODULE, bias=False, **FP32),
        not_judged(LIBRARY, "RMSNorm+bias", REASONS["RMSNorm+bias"], MODULE, family="rmsnorm"),
        judged(LIBRARY, "MochiRMSNorm", "rmsnorm", ClassFactory(MODULE, "MochiRMSNorm", renames=AFFINE),
               "x · rsqrt(mean(x²) in float32 + eps) * weight, cast back; no float64 path", MODULE, bias=False,
               **FP32),
        judged(LIBRARY, "FP32LayerNorm", "layernorm", ClassFactory(MODULE, "FP32LayerNorm", renames=AFFINE),
               "nn.LayerNorm whose forward runs F.layer_norm on float32 x, γ, β and casts back (no float64 path)",
               MODULE, **FP32),
    ]
    known = {"RMSNorm", "MochiRMSNorm", "FP32LayerNorm", "LayerNorm", *REASONS}
    if module.LayerNorm is nn.LayerNorm:
        out.append(not_judged(LIBRARY, "LayerNorm", "is torch.nn.LayerNorm itself (torch >= 2.1): judged as "
                              "torch.nn.LayerNorm by the default run", MODULE, family="layernorm"))
    else:  # torch < 2.1: diffusers' own LayerNorm with an optional bias
        out.append(judged(LIBRARY, "LayerNorm", "layernorm", ClassFactory(MODULE, "LayerNorm", renames=AFFINE),
                          "F.layer_norm with an optional bias", MODULE))
    out += [not_judged(LIBRARY, name, reason, MODULE) for name, reason in REASONS.items()
            if name != "RMSNorm+bias" and hasattr(module, name)]
    return out + undeclared(LIBRARY, module, known)
