"""Timing done right: warm-up, a calibrated schedule, many rounds, median and IQR; CUDA events on a GPU.

CPU: the first calls pay one-time costs (allocator growth, page faults, kernel selection), so calibration warms
up first; a round repeats the call until it lasts `round_s` so that the clock's resolution does not matter; and
the number of rounds fills a time budget, never fewer than `min_rounds`, so the median and the quartiles are
stable. GPU: every round is ONE call timed with CUDA events (CudaEventClock), with the L2 cache flushed before
it, so a norm never reads its input from the L2 the previous call left warm, and the stream held by a spin
kernel while the host enqueues the call, so the events time the GPU's work and not Python's launch overhead.

The same schedule drives both loops that use it: pytest-benchmark's `pedantic` in suite/benchmarks (the
leaderboard) and `measure` below (roofline, claims lab). Statistics use pytest-benchmark's `Stats`, so the two
report quartiles by the same definition.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pytest_benchmark.stats import Stats

#: fallback L2 size when the device does not report one (larger than any current GPU's L2).
_DEFAULT_FLUSH_BYTES = 256 * 2**20


def cpu_clock() -> float:
    """Wall-clock seconds (time.perf_counter): the CPU benchmarks' clock."""
    return time.perf_counter()


class CudaEventClock:
    """CUDA-event timing behind a clock interface, for pytest-benchmark's `timer` and for `measure`.

    Reads come in (start, end) pairs, as every timing loop makes them: a start read records a CUDA event and
    returns at once (no synchronization, so the GPU is still busy with the L2 flush queued before it while the
    CPU launches the timed call: host launch overhead is not counted, as in triton's do_bench); the end read
    records a second event, waits for it, and returns the start value plus the GPU time between the two events.
    `end - start` is therefore exactly the event-measured GPU time. `reset()` drops a start left unpaired by a
    call that raised."""

    __name__ = "cuda_event_clock"  # how pytest-benchmark names the timer in its JSON

    def __init__(self) -> None:
        self._start: Any = None
        self._total = 0.0

    def reset(self) -> None:
        self._start = None

    def __call__(self) -> float:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        if self._start is None:
            self._start = event
            return self._total
        event.synchronize()
        self._total += self._start.elapsed_time(event) / 1e3
        self._start = None
        return self._total


cuda_event_clock = CudaEventClock()


def clock_for(device: str) -> Callable[[], float]:
    return cuda_event_clock if torch.device(device).type == "cuda" else cpu_clock


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class GpuRoundSetup:
    """Run before each timed GPU call: overwrite a buffer twice the L2 size (so the call never reads what the previous
    one left in L2), then hold the stream with a spin kernel for `hold_s`, so that the CPU has enqueued the whole
    call (module dispatch, autograd) before the start event runs: the events then time the GPU's work only, not
    the host's launch overhead (nvbench's blocking-kernel technique)."""

    _cycles_per_s: dict[str, float] = {}

    def __init__(self, device: str, hold_s: float = 0.0) -> None:
        props = torch.cuda.get_device_properties(torch.device(device))
        l2 = int(getattr(props, "L2_cache_size", 0) or 0)
        self.nbytes = 2 * l2 if l2 else _DEFAULT_FLUSH_BYTES
        self.buffer = torch.empty(self.nbytes // 4, dtype=torch.int32, device=device)
        self.sleep = getattr(torch.cuda, "_sleep", None)
        self.cycles = int(hold_s * self._spin_rate(device)) if hold_s > 0 and self.sleep is not None else 0

    @classmethod
    def _spin_rate(cls, device: str) -> float:
        """Cycles per second of torch.cuda._sleep on this device, measured once with events."""
        key = str(torch.device(device))
        if key not in cls._cycles_per_s:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            cycles = 10_000_000
            torch.cuda._sleep(cycles)  # warm-up
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            end.synchronize()
            cls._cycles_per_s[key] = cycles / (start.elapsed_time(end) / 1e3)
        return cls._cycles_per_s[key]

    def __call__(self) -> None:
        self.buffer.zero_()
        if self.cycles:
            self.sleep(self.cycles)


@dataclass(frozen=True)
class Schedule:
    """How one function is timed: `rounds` samples of `iterations` calls each, after `warmup_rounds`."""

    warmup_rounds: int
    rounds: int
    iterations: int
    flush_l2: bool
    #: seconds per call seen while calibrating (a first estimate, not a result)
    per_call_estimate_s: float
    #: GPU: how long the stream is held before each call, to cover the host's time to enqueue it
    hold_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def calibrate(fn: Callable[[], Any], device: str = "cpu", *, budget_s: float = 0.25, round_s: float = 0.002,
              min_rounds: int = 10, max_rounds: int = 2000, warmup_s: float = 0.05,
              clock: Callable[[], float] | None = None) -> Schedule:
    """Warm `fn` up and choose a schedule: rounds of >= `round_s` (CPU) filling `budget_s`, >= `min_rounds`.

    `clock` times each call (default: the device's, `clock_for(device)`); the warm-up window and the host's
    enqueue time stay on time.perf_counter. Tests pass a fake clock that `fn` advances by a known duration."""
    clock = clock_for(device) if clock is None else clock
    cuda = torch.device(device).type == "cuda"
    cuda_event_clock.reset()
    times: list[float] = []
    host: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < warmup_s and len(times) < 100):
        t0 = clock()
        h0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - h0)
        times.append(clock() - t0)
    synchronize(device)
    per_call = max(statistics.median(times[1:]), 1e-9)  # the first call paid the one-time costs
    # GPU: hold the stream 2x as long as the host takes to enqueue a call (at least 50 us, at most 20 ms).
    hold = min(max(2 * statistics.median(host[1:]), 50e-6), 0.02) if cuda else 0.0
    # On a GPU the L2 is flushed before each call, so a round is one call; on a CPU a round repeats the call
    # until the clock's resolution (tens of ns) is far below the round.
    iterations = 1 if cuda else max(1, math.ceil(round_s / per_call))
    rounds = min(max(math.ceil(budget_s / (per_call * iterations)), min_rounds), max_rounds)
    return Schedule(warmup_rounds=1, rounds=rounds, iterations=iterations, flush_l2=cuda,
                    per_call_estimate_s=per_call, hold_s=hold)


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one sample per round; statistics by pytest-benchmark's definitions."""

    samples: tuple[float, ...]
    iterations: int

    @property
    def _stats(self) -> Stats:
        stats = Stats()
        for s in self.samples:
            stats.update(s)
        return stats

    @property
    def median(self) -> float:
        return float(self._stats.median)

    @property
    def q1(self) -> float:
        return float(self._stats.q1)

    @property
    def q3(self) -> float:
        return float(self._stats.q3)

    @property
    def iqr(self) -> float:
        return float(self._stats.iqr)

    @property
    def rounds(self) -> int:
        return len(self.samples)

    def summary(self) -> dict[str, float | int]:
        """The stored statistics (seconds per call)."""
        return summarize(self._stats, self.iterations)


def summarize(stats: Stats, iterations: int) -> dict[str, float | int]:
    """The statistics normbench stores, from a pytest-benchmark `Stats` (seconds per call)."""
    return {"median_s": float(stats.median), "q1_s": float(stats.q1), "q3_s": float(stats.q3),
            "iqr_s": float(stats.iqr), "min_s": float(stats.min), "mean_s": float(stats.mean),
            "rounds": int(stats.rounds), "iterations": int(iterations)}


def measure(fn: Callable[[], Any], device: str = "cpu", schedule: Schedule | None = None, *,
            clock: Callable[[], float] | None = None, **calibrate_options: Any) -> Timing:
    """Time `fn` on `device` with `schedule` (calibrated here when not given), reading `clock` (default: the
    device's, `clock_for(device)`) around each round."""
    schedule = schedule or calibrate(fn, device, clock=clock, **calibrate_options)
    clock = clock_for(device) if clock is None else clock
    cuda_event_clock.reset()
    flush = GpuRoundSetup(device, schedule.hold_s) if schedule.flush_l2 else None
    for _ in range(schedule.warmup_rounds):
        if flush is not None:
            flush()
        for _ in range(schedule.iterations):
            fn()
    synchronize(device)
    samples = []
    for _ in range(schedule.rounds):
        if flush is not None:
            flush()
        t0 = clock()
        for _ in range(schedule.iterations):
            fn()
        samples.append((clock() - t0) / schedule.iterations)
    return Timing(tuple(samples), schedule.iterations)
