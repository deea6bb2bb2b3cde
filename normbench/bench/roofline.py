"""The memory roofline of the device a session runs on: its measured copy bandwidth, and on a GPU the nominal peak.

Every GB/s figure is also given as a percentage of a copy bandwidth measured in the same session (a plain
`dst.copy_(src)`, bytes read + written, median over rounds), because that is what this machine, with this thread
count, actually sustains; a datasheet number is shown beside it on GPUs.

On a CPU the roofline is size-matched and cache-aware: a case whose working set fits in a cache runs from that
cache, so comparing it with the DRAM copy says nothing (a 16 MiB LayerNorm read "185% of the roofline"). Once per
session the copy is measured at a working set inside every cache level from L2 up (half the level's capacity as
the threads see it) and far beyond the last-level cache (DRAM), which names the levels; each case is then bounded
by a copy of its own working set (`size_matched`: source + destination = the case's compulsory bytes, measured
once per size and session), named by the smallest level that holds it (`bounding_level`). A working set just
above a cache's capacity still partly hits it, so a bound by capacity alone would be too low there; the
size-matched copy is not. A GPU keeps the DRAM level only: its benchmarks flush the L2 before every call.
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
class RooflineLevel:
    """The copy bandwidth measured at a working set that fits in one level of the memory hierarchy."""

    #: "L2", "L3", ... or "DRAM"
    name: str
    #: the largest working set (bytes read + written) this level holds for the session's threads; None for DRAM
    capacity_bytes: int | None
    #: the working set the copy was measured at (source + destination bytes)
    working_set_bytes: int
    copy_gbps: float
    copy_gbps_q1: float
    copy_gbps_q3: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    #: cache-aware levels, smallest first, DRAM last (the DRAM level is the copy above)
    levels: tuple[RooflineLevel, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "levels": [level.as_dict() for level in self.levels]}

    def bounding_level(self, working_set_bytes: int) -> RooflineLevel:
        """The level a working set of this many bytes runs from: the smallest cache that holds it, else DRAM.

        Its bandwidth is the largest measured at that level or any larger one: a smaller working set never runs
        slower than a larger one can, so a level measured low (call overhead on a small copy, a neighbour's load)
        never becomes a bound a case can beat by being small."""
        levels = self.levels or (self.dram_level(),)
        chosen = levels[-1]
        for level in levels:
            if level.capacity_bytes is not None and working_set_bytes <= level.capacity_bytes:
                chosen = level
                break
        index = levels.index(chosen)
        best = max(levels[index:], key=lambda lv: lv.copy_gbps)
        if best is chosen:
            return chosen
        return RooflineLevel(chosen.name, chosen.capacity_bytes, best.working_set_bytes, best.copy_gbps,
                             best.copy_gbps_q1, best.copy_gbps_q3)

    def dram_level(self) -> RooflineLevel:
        return RooflineLevel("DRAM", None, 2 * self.copy_bytes, self.copy_gbps, self.copy_gbps_q1,
                             self.copy_gbps_q3)


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


def cpu_cache_levels(threads: int) -> list[tuple[str, int]]:
    """(name, capacity in bytes as `threads` threads see it) of the data/unified caches from L2 up, smallest first
    (Linux sysfs of cpu0). A private cache counts once per thread (each thread copies its own share), a shared
    one once per group of CPUs sharing it."""
    levels: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if level < 2 or kind == "Instruction":
            continue
        factor = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * factor
        except ValueError:
            continue
        sharers = _count_cpus(shared)
        instances = max(1, -(-threads // max(sharers, 1)))  # caches the threads spread over
        levels[level] = max(levels.get(level, 0), size * instances)
    return [(f"L{level}", size) for level, size in sorted(levels.items())]


def _count_cpus(cpu_list: str) -> int:
    count = 0
    for part in cpu_list.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            count += int(hi) - int(lo) + 1
        elif part:
            count += 1
    return count


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
    from normbench.store.machine import cpu_model

    return cpu_model()


def _copy_bandwidth(nbytes: int, device: str, budget_s: float, repeats: int) -> tuple[float, float, float]:
    """(median, q1, q3) GB/s of a copy of `nbytes`: the best of `repeats` medians, because a roofline is what the
    machine sustains and another process's transient load (the CPU may be shared) can only lower a measurement.

    On a CPU with several threads the copy is also timed on one thread, and the faster kept: a parallel region
    wakes the other OpenMP threads on every call, which for a copy that fits in a cache can cost more than the
    copy itself (a 0.5 MiB copy, OMP_WAIT_POLICY=PASSIVE: 15 GB/s on 2 threads, 111 GB/s on 1), while a kernel
    below torch's parallel grain size stays on one thread and would beat a bound measured on two."""
    src = torch.ones(max(nbytes // 4, 1), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()

    def copy() -> torch.Tensor:
        return dst.copy_(src)

    def best(rounds: int) -> Any:
        return min((measure(copy, device, budget_s=budget_s, min_rounds=10) for _ in range(rounds)),
                   key=lambda t: t.median)

    timing = best(repeats)
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu" and threads > 1:
        torch.set_num_threads(1)
        try:
            one = best(1)
        finally:
            torch.set_num_threads(threads)
        if one.median < timing.median:
            timing = one
    return moved / timing.median / 1e9, moved / timing.q3 / 1e9, moved / timing.q1 / 1e9


def measure_roofline(device: str = "cpu", nbytes: int | None = None, budget_s: float = 0.3,
                     repeats: int = 3, cache_levels: list[tuple[str, int]] | None = None) -> Roofline:
    """Measure this device's copy bandwidth now, with the current torch thread count: from DRAM (`nbytes` copied,
    default far beyond the last-level cache) and, on a CPU, inside every cache level (`cache_levels`, default
    from sysfs), each at half the level's capacity so that source and destination stay in it."""
    nbytes = nbytes or default_copy_bytes(device)
    gbps, q1, q3 = _copy_bandwidth(nbytes, device, budget_s, repeats)
    levels: list[RooflineLevel] = []
    if torch.device(device).type == "cpu":
        wanted = cpu_cache_levels(torch.get_num_threads()) if cache_levels is None else cache_levels
        for level_name, capacity in wanted:
            working_set = capacity // 2
            if 2 * working_set >= 2 * nbytes:
                continue  # a "cache" as large as the DRAM copy says nothing more
            lv = _copy_bandwidth(working_set // 2, device, budget_s, repeats)
            levels.append(RooflineLevel(level_name, capacity, working_set, *lv))
    levels.append(RooflineLevel("DRAM", None, 2 * (nbytes // 4) * 4, gbps, q1, q3))
    name = device_name(device)
    peak, source = (None, None)
    if torch.device(device).type == "cuda":
        peak, source = nominal_peak_gbps(name, torch.cuda.get_device_properties(torch.device(device)))
    return Roofline(device=str(torch.device(device)), device_name=name, copy_gbps=gbps, copy_gbps_q1=q1,
                    copy_gbps_q3=q3, copy_bytes=(nbytes // 4) * 4, threads=torch.get_num_threads(), peak_gbps=peak,
                    peak_source=source, levels=tuple(levels))


def size_matched(roofline: Roofline, working_set_bytes: int, device: str = "cpu", budget_s: float = 0.15,
                 repeats: int = 3) -> RooflineLevel:
    """The bound of a case moving `working_set_bytes`: a copy whose source + destination is that size, measured
    now (CPU; on a GPU the DRAM level), named after the level that holds it. Never below the DRAM copy: a copy
    reading lower than DRAM was slowed by a neighbour, not by the memory, and would let a case beat its bound."""
    named = roofline.bounding_level(working_set_bytes)
    if torch.device(device).type != "cpu" or named.name == "DRAM" and working_set_bytes >= 2 * roofline.copy_bytes:
        return named
    gbps, q1, q3 = _copy_bandwidth(max(working_set_bytes // 2, 4), device, budget_s, repeats)
    if gbps < roofline.copy_gbps:
        gbps, q1, q3 = roofline.copy_gbps, roofline.copy_gbps_q1, roofline.copy_gbps_q3
    return RooflineLevel(named.name, named.capacity_bytes, working_set_bytes, gbps, q1, q3)


def cpu_threads_available() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
