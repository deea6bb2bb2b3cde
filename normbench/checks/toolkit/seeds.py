"""Seeds that depend only on what they are derived from, so every process draws the same cases."""

from __future__ import annotations

import zlib


def stable_seed(*parts: object) -> int:
    """A seed that depends only on the parts (test id pieces), identical across processes and runs."""
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF
