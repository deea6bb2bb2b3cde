"""The timer: calibration, statistics by pytest-benchmark's definitions, the CUDA path where CUDA exists."""

from __future__ import annotations

import time

import pytest
import torch
from pytest_benchmark.stats import Stats

from normbench.bench.timer import Timing, calibrate, clock_for, cpu_clock, cuda_event_clock, measure

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU timing path runs where torch sees one")


def test_calibration_warms_up_and_fills_rounds():
    calls = []
    schedule = calibrate(lambda: calls.append(1), "cpu", budget_s=0.01, min_rounds=10)
    assert len(calls) >= 3  # warm-up ran before any estimate
    assert schedule.rounds >= 10 and schedule.warmup_rounds >= 1
    # a call of ~100 ns is repeated so that one round lasts about round_s (clock resolution is irrelevant)
    assert schedule.iterations > 100 and not schedule.flush_l2 and schedule.hold_s == 0


def test_measure_recovers_a_known_duration():
    timing = measure(lambda: time.sleep(0.002), "cpu", budget_s=0.05, min_rounds=10)
    assert timing.rounds >= 10
    assert 0.0019 < timing.median < 0.004  # sleep overshoots a little, never undershoots
    assert timing.q1 <= timing.median <= timing.q3 and timing.iqr == pytest.approx(timing.q3 - timing.q1)


def test_statistics_are_pytest_benchmark_s():
    samples = (3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0)
    stats = Stats()
    for s in samples:
        stats.update(s)
    timing = Timing(samples, iterations=1)
    assert (timing.median, timing.q1, timing.q3, timing.iqr) == (stats.median, stats.q1, stats.q3, stats.iqr)
    assert timing.summary()["rounds"] == 7 and timing.summary()["median_s"] == 3.0


def test_cpu_clock_is_wall_clock():
    assert clock_for("cpu") is cpu_clock


@needs_cuda
def test_cuda_event_clock_times_gpu_work():
    from normbench.bench.timer import GpuRoundSetup

    assert clock_for("cuda") is cuda_event_clock
    x = torch.randn(64 * 2**20 // 4, device="cuda")
    y = torch.empty_like(x)
    timing = measure(lambda: y.copy_(x), "cuda", budget_s=0.05)
    assert timing.iterations == 1 and timing.median > 0
    setup = GpuRoundSetup("cuda", hold_s=1e-3)
    assert setup.cycles > 0 and setup.nbytes >= 2 * 2**20
    # a held stream does not count: the events start after the spin kernel
    cuda_event_clock.reset()
    setup()
    start = cuda_event_clock()
    y.copy_(x)
    elapsed = cuda_event_clock() - start
    assert elapsed < 1e-3
