"""Every tensor a module holds, registered or not, as a fact the plugin's process reports: what ``.to(dtype)`` left.

``module_hygiene`` asks whether ``.to(dtype)`` converted every floating tensor the module holds: its parameters and
buffers, and the plain tensor attributes (a precomputed constant, a list of tensors) that ``.to`` does not see. The
trusted process mirrors only the registered ones, so the plugin's side (normbench.remote.server) scans the module as
the check scans it beside the plugin (`tensor_attributes`) and reports each tensor's place and dtype; the trusted side
(`RemoteModule.tensor_attributes`) checks every registered one against its mirror, which it received as data, and
decides on the list itself.

What a hostile plugin's side can forge here: a registered tensor's dtype it cannot (the mirror is the bytes it sent
after the same `.to`, and a report that differs from it is a protocol error). A plain attribute, though, no other
request shows, so the report is all the trusted side has of it: a side that leaves out an unconverted constant is
believed. It cannot do so by replacing this function or swapping its code (the fingerprint after each item holds
normbench's functions and their code objects: tampering, normbench.judge_guard), only by changing what the scan
sees. That does not forge the verdict of the plugin's module; it substitutes another module, the one a server
that converted the constant itself on `.to` would serve, and is correct only under normbench's server (the
harness-detecting plugin docs/isolation.md names as out of any check's reach). The verdict is still computed here,
from what was reported, by code the plugin's process cannot touch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tensor_attributes(module: nn.Module) -> list[tuple[str, str, torch.dtype, str | None]]:
    """(submodule prefix, attribute, dtype, the dotted name of a registered parameter or buffer or None) of every
    tensor in every submodule's ``vars``: registered ones, plain attributes, tensors in a list or tuple. The order is
    the module's own (module_hygiene's messages list them so)."""
    found: list[tuple[str, str, torch.dtype, str | None]] = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            candidates: list[tuple[str, Any, bool]] = []
            if attr in ("_parameters", "_buffers"):
                candidates = [(k, v, True) for k, v in value.items() if isinstance(v, torch.Tensor)]
            elif isinstance(value, torch.Tensor):
                candidates = [(attr, value, False)]
            elif isinstance(value, list | tuple):
                candidates = [(f"{attr}[{i}]", v, False) for i, v in enumerate(value) if isinstance(v, torch.Tensor)]
            for name, tensor, registered in candidates:
                found.append((prefix, name, tensor.dtype, (f"{prefix}.{name}" if prefix else name) if registered
                              else None))
    return found
