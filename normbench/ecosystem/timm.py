"""timm's norms (huggingface/pytorch-image-models `timm.layers`), declared as they are written (timm 1.x).

`timm.layers.norm`: `GroupNorm(num_channels, num_groups=32, eps, affine)` and `GroupNorm1` (one group) are
`F.group_norm`; `LayerNorm(num_channels, eps=1e-6, affine)` is `F.layer_norm`; `RmsNorm` is `F.rms_norm`; the *2d
classes take (N, C, H, W) and normalize C per pixel (`layout="channels_first"`, rank 4 only: they `permute(0, 2, 3,
1)` or reshape γ to (1, C, 1, 1)); the *Fp32 classes compute on float32 copies and cast back (no float64 path). The
norm + activation classes of `timm.layers.norm_act`, the EvoNorms and the filter response norms are listed with
the reason they are not judged; a class of these modules that is neither declared nor explained is listed as
undeclared, never dropped.

`import timm` imports torchvision (`timm.layers.create_norm` and `norm_act` import `torchvision.ops.misc`, and
`timm.data` its transforms): where no torchvision loads beside the installed torch (PyPI's torchvision wheels are
CUDA builds: beside the CPU torch of constraints.txt `import torchvision` raises), timm is one *unavailable* entry
with that import error, and nothing is stubbed in its place.
"""

from __future__ import annotations

import importlib

from normbench.ecosystem._catalogue import (
    ClassFactory,
    Entry,
    judged,
    missing,
    module_classes,
    not_judged,
    unavailable,
    undeclared,
)

LIBRARY = "timm"
NORM = "timm.layers.norm"
INSTALL = ("pip install 'timm>=1,<2' where PyPI's torchvision matches the installed torch (the CUDA wheels); no "
           "PyPI torchvision loads beside the CPU torch")
FP32 = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}
#: (N, C, H, W) in: C normalized per pixel; rank 4 only (permute(0, 2, 3, 1), γ reshaped to (1, C, 1, 1))
NCHW = {"layout": "channels_first", "ranks": (4,)}
#: class -> (family, note, fields)
DECLARED: dict[str, tuple[str, str, dict]] = {
    "GroupNorm": ("groupnorm", "F.group_norm(x, num_groups, weight, bias, eps)", {}),
    "GroupNorm1": ("groupnorm", "nn.GroupNorm(1, C): F.group_norm with one group", {"fixed_params": {"num_groups": 1}}),
    "LayerNorm": ("layernorm", "F.layer_norm over the last axis", {}),
    "LayerNormFp32": ("layernorm", "F.layer_norm on float32 x, γ, β, cast back (no float64 path)", FP32),
    "LayerNorm2d": ("layernorm", "(N, C, H, W): permute to NHWC, F.layer_norm over C, permute back", NCHW),
    "LayerNorm2dFp32": ("layernorm", "LayerNorm2d on float32 x, γ, β, cast back (no float64 path)", {**NCHW, **FP32}),
    "LayerNormExp2d": ("layernorm", "(N, C, H, W): F.layer_norm after a permute for contiguous x, else var_mean over "
                       "C by hand; always affine", {**NCHW, "affine": "always"}),
    "RmsNorm": ("rmsnorm", "F.rms_norm over the last axis", {"bias": False}),
    "RmsNormFp32": ("rmsnorm", "F.rms_norm on float32 x and γ, cast back (no float64 path)", {"bias": False, **FP32}),
    "RmsNorm2d": ("rmsnorm", "(N, C, H, W): x · rsqrt(mean(x², dim=1) + eps) · γ(1, C, 1, 1), in the input dtype",
                  {"bias": False, **NCHW}),
    "RmsNorm2dFp32": ("rmsnorm", "RmsNorm2d on float32 x and γ, cast back (no float64 path)",
                      {"bias": False, **NCHW, **FP32}),
}
SIMPLE = ("x · rsqrt(var(x) + eps) with torch.var's unbiased (n − 1) variance and no centring of x: neither the "
          "rmsnorm (mean x²) nor the layernorm (centred, biased variance) formula")
REASONS = {name: SIMPLE for name in ("SimpleNorm", "SimpleNormFp32", "SimpleNorm2d", "SimpleNorm2dFp32")}
#: modules whose every class is listed with one reason
OTHER_MODULES = {
    "timm.layers.norm_act": "a norm followed by drop_layer and act_layer (apply_act=True, ReLU by default): no family "
                            "models the activation (its plain norm is judged from timm.layers.norm)",
    "timm.layers.evo_norm": "EvoNorm (B: batch variance with a learned nonlinearity; S: group std with x·σ(v·x)): "
                            "no family computes it",
    "timm.layers.filter_response_norm": "filter response norm: x / sqrt(mean(x², H, W) + eps) per channel, then a "
                                        "TLU or activation: no family has the spatial-only second moment",
    "timm.layers.grn": "ConvNeXt-V2's global response norm (spatial ‖x‖₂ over its channel mean, a residual + x): no "
                       "family computes it",
    "timm.layers.split_batchnorm": "SplitBatchNorm2d: BatchNorm with separate statistics per augmentation split in "
                                   "training; the batchnorm family has one set",
}


def entries() -> list[Entry]:
    try:
        norm = importlib.import_module(NORM)
    except Exception as exc:
        return [unavailable(LIBRARY, exc, INSTALL if missing(exc, "timm", "torchvision") else "")]
    out: list[Entry] = []
    for name, (family, note, fields) in DECLARED.items():
        if not hasattr(norm, name):
            continue  # an older timm 1.x: the class is not there, so there is nothing to judge
        out.append(judged(LIBRARY, name, family, ClassFactory(NORM, name), note, NORM, **fields))
    out += [not_judged(LIBRARY, name, reason, NORM) for name, reason in REASONS.items() if hasattr(norm, name)]
    out += undeclared(LIBRARY, norm, {*DECLARED, *REASONS})
    for module_name, reason in OTHER_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except Exception:
            continue  # a timm without this module (they moved across 1.x releases)
        out += [not_judged(LIBRARY, name, reason, module_name) for name in module_classes(module)]
    return out
