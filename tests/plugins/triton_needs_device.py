"""A Triton library that refuses to import without a GPU driver (as flag_gems does): under --triton-interpret it is
one skipped entry naming the error, not a broken plugin."""

from __future__ import annotations

import torch
import triton

from normbench import Implementation

DEVICE = triton.runtime.driver.active.get_current_target()  # raises "0 active drivers" on a machine without a GPU


def implementations() -> list[Implementation]:
    return [Implementation(name="triton_needs_device.RMSNorm", family="rmsnorm", factory=torch.nn.RMSNorm,
                           devices=("cuda",))]
