"""An implementation whose description is the judging process's hash of a string: what a plugin whose behaviour hangs
on the order of a set of strings sees (tests/test_hash_seed.py)."""

from __future__ import annotations

from torch import nn

from normbench.implementation import Implementation


def reports_its_hash() -> Implementation:
    return Implementation(name="hash_order.reports_its_hash", family="layernorm", factory=nn.LayerNorm,
                          description=str(hash("normbench")))
