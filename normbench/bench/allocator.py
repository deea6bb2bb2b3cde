"""The CPU allocator's steady state for timing: glibc's malloc told to keep the memory it frees.

glibc returns freed memory to the OS (an allocation above the mmap threshold is unmapped when freed; the heap's
free top is trimmed above the trim threshold, both thresholds moving with the allocation history), and the next
allocation then page-faults and zeroes it again. Which calls of a norm pay that depends on the small allocations
the harness itself makes between calls, so the timers disagreed by up to 3x on the same case. Measured on this
machine's 2-core CPU (torch.nn.RMSNorm, 4096x1024 float32 forward, three 16 MiB temporaries per call,
OMP_WAIT_POLICY=PASSIVE, normbench's loop and torch.utils.benchmark interleaved call by call):

- glibc defaults: 13.6 ms against 4.5 ms in one process, 15.3 ms against 15.4 ms in the next; q1-q3 of one
  timer 1.8-7.7 ms in another run;
- thresholds pinned: 3.1 ms against 3.0 ms, and 3.2 ms against 3.2 ms, q1-q3 within ±15 %.

Pinned is the steady state a caching allocator gives (jemalloc and tcmalloc, which PyTorch's CPU performance
guides recommend, and torch's own caching allocator on CUDA): the figure is the norm's work, not the history of
the process. ``--bench-malloc default`` keeps glibc's defaults, for whoever ships with them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: below 1 GiB every norm temporary stays on the heap; the 2 GiB roofline buffers are mapped as before
PINNED_MMAP_THRESHOLD = 1 << 30
#: mallopt takes an int: the largest trim threshold it can set, so the heap's free top is never given back
PINNED_TRIM_THRESHOLD = 2**31 - 1

STEADY = "glibc malloc, freed memory kept (mmap threshold 1 GiB, no trimming)"
DEFAULT = "system default"


def pin_malloc() -> str:
    """Pin glibc's thresholds in this process; returns what the records say about the allocator."""
    if not sys.platform.startswith("linux"):
        return f"{DEFAULT} (not glibc)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return f"{DEFAULT} (no glibc mallopt)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if mallopt(M_MMAP_THRESHOLD, PINNED_MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, PINNED_TRIM_THRESHOLD) != 1:
        return f"{DEFAULT} (mallopt refused the thresholds)"
    return STEADY
