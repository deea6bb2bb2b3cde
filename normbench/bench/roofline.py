"""The memory roofline of the device a session runs on: its measured copy bandwidth, and on a GPU the nominal peak.

Every GB/s figure is also given as a percentage of the copy bandwidth measured in the same session (a plain
`dst.copy_(src)` of a tensor far larger than the last-level cache, bytes read + written, median over rounds),
because that is what this machine, with this thread count, actually sustains; a datasheet number is shown
beside it on GPUs. Shapes that fit in the cache can exceed 100%: the roofline is the DRAM's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from normbench.bench.timer import measure

MiB = 2**20

#: Nominal DRAM bandwidth (GB/s, vendor datasheets) by a substring of torch.cuda.get_device_name(); the first
#: match wins, so more specific names come first ("GH200" before "H200" before "H20", "L40S" before "L4").
GPU_PEAK_GBPS: tuple[tuple[str, float], ...] = (
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5, HBM3
    ("H800", 3350.0),
    ("H20", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB, SXM4 and PCIe
    ("A800", 2039.0),
    ("A40", 696.0),
    ("A30", 933.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("T4", 320.0),
    ("V100", 900.0),
    ("RTX 6000 Ada", 960.0),
    ("RTX A6000", 768.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("MI300X", 5300.0),
    ("MI250X", 3277.0),
)


@dataclass(frozen=True)
class Roofline:
    device: str
    device_name: str
    #: measured copy bandwidth, bytes read + written per second / 1e9 (median round)
    copy_gbps: float
    #: spread of that measurement: the copy bandwidth at the first and third quartile of the times
    copy_gbps_q1: float
    copy_gbps_q3: float
    copy_bytes: int
    threads: int
    #: nominal DRAM bandwidth (GPU), and where the number comes from
    peak_gbps: float | None = None
    peak_source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def nominal_peak_gbps(device_name: str, props: Any = None) -> tuple[float | None, str | None]:
    """The datasheet bandwidth of a GPU from the table, else from its memory clock and bus width."""
    for key, gbps in GPU_PEAK_GBPS:
        if key.lower() in device_name.lower():
            return gbps, f"datasheet ({key})"
    clock_khz = getattr(props, "memory_clock_rate", 0) or 0
    bus_bits = getattr(props, "memory_bus_width", 0) or 0
    if clock_khz and bus_bits:
        # double data rate: two transfers per clock
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "memory clock x bus width"
    return None, None


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache this process sees (Linux sysfs), or None where it cannot tell."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        factor = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * factor)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def default_copy_bytes(device: str) -> int:
    """Large enough that the copy runs from DRAM: 8x the last-level cache, at least 256 MiB (CPU) / 1 GiB (GPU)."""
    if torch.device(device).type == "cuda":
        l2 = int(getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 0) or 0)
        return max(1024 * MiB, 8 * l2)
    llc = last_level_cache_bytes() or 32 * MiB
    return min(max(256 * MiB, 8 * llc), 2048 * MiB)


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    from normbench.results import cpu_model

    return cpu_model()


def measure_roofline(device: str = "cpu", nbytes: int | None = None, budget_s: float = 0.3,
                     repeats: int = 3) -> Roofline:
    """Measure this device's copy bandwidth now, with the current torch thread count: the best of `repeats`
    medians, because a roofline is what the machine sustains and another process's transient load (the CPU may
    be shared) can only lower a measurement."""
    nbytes = nbytes or default_copy_bytes(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()

    def copy() -> torch.Tensor:
        return dst.copy_(src)

    timing = min((measure(copy, device, budget_s=budget_s, min_rounds=10) for _ in range(repeats)),
                 key=lambda t: t.median)
    name = device_name(device)
    peak, source = (None, None)
    if torch.device(device).type == "cuda":
        peak, source = nominal_peak_gbps(name, torch.cuda.get_device_properties(torch.device(device)))
    return Roofline(device=str(torch.device(device)), device_name=name, copy_gbps=moved / timing.median / 1e9,
                    copy_gbps_q1=moved / timing.q3 / 1e9, copy_gbps_q3=moved / timing.q1 / 1e9,
                    copy_bytes=moved // 2, threads=torch.get_num_threads(), peak_gbps=peak, peak_source=source)


def cpu_threads_available() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
