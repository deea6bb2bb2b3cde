"""Seeds that depend only on what they are derived from, so every process draws the same cases."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def stable_seed(*parts: object) -> int:
    """A seed that depends only on the parts (test id pieces), identical across processes and runs."""
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


@contextmanager
def global_rng_seeded(seed: int) -> Iterator[None]:
    """torch's global CPU generator seeded with `seed` inside, restored after: for library code that draws from it
    with no generator argument (gradgradcheck's grad_outputs), so that its draws, and the verdict, do not
    depend on what the process ran before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
