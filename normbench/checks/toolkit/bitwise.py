"""Bitwise comparison: whether two tensors hold the same bits, how they differ when not, and whether two share
memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from normbench.remote.aliases import shared_over_there, storage_overlaps

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns as integers (so NaN == NaN and -0.0 != 0.0, as in memory)."""
    t = t.detach().contiguous()
    if t.is_floating_point():
        return t.view(_INT_OF_SIZE[t.element_size()])
    return t


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, same dtype and the same bits in every element."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


@dataclass(frozen=True)
class Deviation:
    """How two tensors that should be bitwise equal differ."""

    differing: int  # elements whose bits differ
    max_abs: float  # largest |a - b| (inf where one is NaN / inf and the other not)

    def describe(self) -> str:
        return f"{self.differing} element(s) differ, max |difference| {self.max_abs:.3g}"


def deviation(a: torch.Tensor, b: torch.Tensor) -> Deviation:
    """How `b` differs from `a`, bit for bit (in a's dtype) and in value; every element when the shapes differ."""
    if a.shape != b.shape:
        return Deviation(max(a.numel(), b.numel()), math.inf)
    differing = int((bits(a) != bits(b.to(a.dtype))).sum().item()) if a.numel() else 0
    a64 = a.detach().to(torch.float64).cpu()
    b64 = b.detach().to(torch.float64).cpu()
    same = (a64 == b64) | (torch.isnan(a64) & torch.isnan(b64))
    diff = torch.where(same, torch.zeros_like(a64), (a64 - b64).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    return Deviation(differing, float(diff.max().item()) if diff.numel() else 0.0)


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the storages of a and b overlap (a view, or the same buffer under another name): here, or, for an
    output received from a module in the plugin's process, there (the trusted judge's tensors are copies, so only
    the plugin's side can see it; normbench.remote.aliases)."""
    return storage_overlaps(a, b) or shared_over_there(a, b) or shared_over_there(b, a)
