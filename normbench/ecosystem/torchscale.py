"""torchscale (microsoft/torchscale, the DeepNet authors' code): its RMSNorm and its DeepNorm blocks.

`torchscale.component.rms_norm` imports only torch. The DeepNorm blocks live in `torchscale.architecture`,
which imports fairscale and timm (and timm imports torchvision): where those do not import, the blocks are one
entry with the import error, and nothing is stubbed in their place. The distribution is installed with
`pip install --no-deps` (docs/ecosystem.md): its metadata pins timm==0.6.13, and timm pulls PyPI's torchvision, a
CUDA build that breaks every transformers import beside the CPU torch.
"""

from __future__ import annotations

import importlib

from normbench.ecosystem._catalogue import ClassFactory, Entry, declaration_of, missing, unavailable
from normbench.implementation import Implementation

LIBRARY = "torchscale"
RMS_MODULE = "torchscale.component.rms_norm"
BLOCKS = ("torchscale.architecture.encoder", "torchscale.architecture.decoder")
INSTALL = ("pip install --no-deps 'torchscale>=0.3,<0.4': its metadata pins timm==0.6.13, which pulls a torchvision "
           "that no CPU torch can load; its RMSNorm imports only torch")


def entries() -> list[Entry]:
    try:
        importlib.import_module(RMS_MODULE)
    except Exception as exc:
        return [unavailable(LIBRARY, exc, INSTALL if missing(exc, "torchscale") else "")]
    note = "x.float() then rsqrt(mean(x²) + eps), cast back, times weight: computes in float32 (no float64 path)"
    impl = Implementation(name=f"{LIBRARY}.RMSNorm", family="rmsnorm",
                          factory=ClassFactory(RMS_MODULE, "RMSNorm", renames=(("affine", "elementwise_affine"),)),
                          bias=False, dtypes=("float32", "float16", "bfloat16"), supports_gradcheck=False,
                          description=f"torchscale RMSNorm: {note}", tags=("ecosystem", LIBRARY))
    out = [Entry(name=impl.name, library=LIBRARY, status="judged", family="rmsnorm",
                 declaration=declaration_of(impl, note=note), origin=RMS_MODULE, implementation=impl)]
    for module, cls in zip(BLOCKS, ("EncoderLayer", "DecoderLayer"), strict=True):
        name = f"{LIBRARY}.{cls}"
        try:
            importlib.import_module(module)
        except Exception as exc:
            out.append(Entry(name=name, library=LIBRARY, status="unavailable", family="placement_deepnorm",
                             origin=module, reason=f"cannot import {module}: {type(exc).__name__}: {exc}"[:300]))
            continue
        out.append(Entry(name=name, library=LIBRARY, status="not judged", family="placement_deepnorm", origin=module,
                         reason="no adapter yet: the block has q/k/v biases, dropout and a (x, l_aux) return "
                                "that the placement contract's flat weights do not describe"))
    return out
