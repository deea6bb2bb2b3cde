"""A fingerprint of the judge: torch's global state and the identity of the functions a verdict depends on.

Taken in a sandbox child before any plugin is imported and compared after every item (normbench.sandbox):
a plugin that monkeypatches ``F.layer_norm`` or ``torch.Tensor.mean``, replaces normbench's compare function
or a reference module's code, or leaves grad mode off, cannot turn its own verdict (or torch's known
failures) into a pass — the item is reported as tampering instead. Only names that existed in the first
fingerprint are compared: torch and hypothesis add attributes lazily, which changes nothing that was there.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import torch

#: torch modules and classes whose functions a check or a reference calls, directly or through torch itself
_TORCH_MODULES = ("torch", "torch.nn.functional", "torch.autograd", "torch.linalg", "torch.nn.init",
                  "torch.testing", "torch.autograd.gradcheck", "torch._C._VariableFunctions")
_TORCH_CLASSES: tuple[type, ...] = (torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Parameter,
                                    torch.autograd.Function)


def global_state() -> dict[str, Any]:
    """torch's process-wide switches that change numerics or autograd."""
    denormal = torch.tensor([1e-40], dtype=torch.float32)
    return {
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "default dtype": torch.get_default_dtype(),
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "anomaly mode": torch.is_anomaly_enabled(),
        "autocast (cpu)": torch.is_autocast_enabled("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "flush denormal": bool((denormal * 1.0).item() == 0.0),
        "default device": str(torch.get_default_device()),
    }


def _namespace(prefix: str, obj: Any) -> dict[str, int]:
    try:
        items = list(vars(obj).items())
    except TypeError:
        items = [(name, getattr(obj, name, None)) for name in dir(obj)]
    return {f"{prefix}.{name}": id(value) for name, value in items if not name.startswith("__")}


def fingerprint() -> dict[str, Any]:
    state: dict[str, Any] = {f"torch state: {k}": v for k, v in global_state().items()}
    for name in _TORCH_MODULES:
        module = sys.modules.get(name)
        if module is None and name == "torch._C._VariableFunctions":
            module = torch._C._VariableFunctions
        if module is not None:
            state.update(_namespace(name, module))
    for cls in _TORCH_CLASSES:
        state.update(_namespace(f"{cls.__module__}.{cls.__qualname__}", cls))
    for name, module in list(sys.modules.items()):
        if not (name == "normbench" or name.startswith("normbench.")) or not isinstance(module, ModuleType):
            continue
        state.update(_namespace(name, module))
        for value in list(vars(module).values()):
            if isinstance(value, type) and getattr(value, "__module__", "") == name:
                state.update(_namespace(f"{name}.{value.__qualname__}", value))
    return state


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names present before that are gone or hold another object / value now."""
    changed = []
    for key, value in before.items():
        if key not in after:
            changed.append(f"{key} was deleted")
        elif after[key] != value:
            if key.startswith("torch state: "):
                changed.append(f"{key} is {after[key]!r}, was {value!r}")
            else:
                changed.append(f"{key} was replaced")
    return changed
