"""litgpt's RMSNorm (Lightning-AI/litgpt `litgpt.model.RMSNorm`), declared as it is written.

`RMSNorm(size, dim=-1, eps=1e-6, add_unit_offset=False)`: x.float(), x·rsqrt(mean(x²) + eps), times
`weight.float()` (or `(1 + weight).float()` with add_unit_offset), cast back: computes in float32 (no float64
path). With add_unit_offset=True γ = 1 + weight (declared weight_offset=1); note that 1 + weight is added in the
parameter's dtype, before the cast to float32. Its LayerNorm is torch.nn.LayerNorm itself (config.norm_class).

litgpt is installed with `pip install --no-deps` (see docs/ecosystem.md): its metadata pins huggingface-hub < 1.4, which
transformers 5 cannot share; `litgpt.model` needs lightning, jsonargparse and psutil (in the ecosystem extra), and
works with huggingface-hub 2. Importing it runs `litgpt/__init__.py` (lightning: ~10 s).
"""

from __future__ import annotations

import importlib

from normbench.ecosystem._catalogue import ClassFactory, Entry, judged, missing, unavailable, undeclared

LIBRARY = "litgpt"
MODULE = "litgpt.model"
INSTALL = "pip install --no-deps 'litgpt>=0.5,<0.6': its metadata pins huggingface-hub<1.4, which transformers 5 " \
          "cannot share"
FP32 = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False, "bias": False,
        "affine": "always"}


def entries() -> list[Entry]:
    try:
        module = importlib.import_module(MODULE)
    except Exception as exc:
        return [unavailable(LIBRARY, exc, INSTALL if missing(exc, "litgpt") else "")]
    out = [
        judged(LIBRARY, "RMSNorm", "rmsnorm", ClassFactory(MODULE, "RMSNorm"),
               "x.float() · rsqrt(mean(x²) + eps) · weight.float(), cast back: computes in float32 (no float64 path)",
               MODULE, **FP32),
        judged(LIBRARY, "RMSNorm+add_unit_offset", "rmsnorm",
               ClassFactory(MODULE, "RMSNorm", fixed_kwargs=(("add_unit_offset", True),)),
               "add_unit_offset=True: γ = (1 + weight).float(), the 1 added in the parameter's dtype", MODULE,
               weight_offset=1.0, **FP32),
    ]
    # litgpt.model's other classes are the model's parts (GPT, Block, attention, MLPs, KVCache): only a new class
    # named like a norm is listed
    return out + [e for e in undeclared(LIBRARY, module, {"RMSNorm"}) if "Norm" in e.name.split(".", 1)[1]]
