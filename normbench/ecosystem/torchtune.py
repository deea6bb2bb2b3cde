"""torchtune's norms (pytorch/torchtune), declared as they are written.

`torchtune.modules.RMSNorm` runs `F.rms_norm(x.float(), weight=scale)` and casts back: it computes in float32 (no
float64 path) and keeps γ at `scale`. `Fp32LayerNorm` is `nn.LayerNorm` whose forward runs `F.layer_norm` on
float32 copies of x, γ and β. `torchtune.models.gemma.GemmaRMSNorm` stores γ − 1 at `scale` (zeros at init) and
adds the 1 in float32. Importing any of them runs `torchtune/__init__.py`, which requires torchao (a torchao that
still has `torchao.dtypes.nf4tensor`: < 0.18 for torchtune 0.6).
"""

from __future__ import annotations

import importlib

from normbench.ecosystem._catalogue import ClassFactory, Entry, judged, not_judged, unavailable, undeclared

LIBRARY = "torchtune"
RMS = "torchtune.modules.rms_norm"
LAYER = "torchtune.modules.layer_norm"
GEMMA = "torchtune.models.gemma.rms_norm"
GEMMA2 = "torchtune.models.gemma2._component_builders"
FP32 = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}


def entries() -> list[Entry]:
    try:
        modules = {name: importlib.import_module(name) for name in (RMS, LAYER, GEMMA)}
    except Exception as exc:
        return [unavailable(LIBRARY, exc)]
    out = [
        judged(LIBRARY, "RMSNorm", "rmsnorm", ClassFactory(RMS, "RMSNorm"),
               "F.rms_norm(x.float(), weight=scale).to(x.dtype): γ at `scale`, computes in float32 (no float64 path)",
               RMS, weight_attr="scale", bias=False, affine="always", **FP32),
        judged(LIBRARY, "Fp32LayerNorm", "layernorm",
               ClassFactory(LAYER, "Fp32LayerNorm", renames=(("affine", "elementwise_affine"),)),
               "nn.LayerNorm whose forward runs F.layer_norm on float32 x, γ, β and casts back (no float64 path)",
               LAYER, **FP32),
        judged(LIBRARY, "GemmaRMSNorm", "rmsnorm", ClassFactory(GEMMA, "GemmaRMSNorm"),
               "γ = 1 + scale (zeros at init), x and 1 + scale in float32, cast back (no float64 path)",
               GEMMA, weight_attr="scale", weight_offset=1.0, bias=False, affine="always", **FP32),
    ]
    known = {"RMSNorm", "Fp32LayerNorm", "GemmaRMSNorm"}
    for module in modules.values():
        out += undeclared(LIBRARY, module, known)
    try:
        gemma2 = importlib.import_module(GEMMA2)
    except Exception as exc:
        out.append(Entry(name=f"{LIBRARY}.Gemma2FinalNorm", library=LIBRARY, status="unavailable", origin=GEMMA2,
                         reason=f"cannot import {GEMMA2}: {type(exc).__name__}: {exc}"[:300]))
    else:
        if hasattr(gemma2, "Gemma2FinalNorm"):
            out.append(not_judged(LIBRARY, "Gemma2FinalNorm", "GemmaRMSNorm followed by tanh soft-capping "
                                  "(c·tanh(x/c)); no family models the cap (its GemmaRMSNorm is judged)", GEMMA2))
    return out
