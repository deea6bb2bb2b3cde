"""The timer: calibration, statistics by pytest-benchmark's definitions, the CUDA path where CUDA exists."""

from __future__ import annotations

import itertools

import pytest
import torch
from pytest_benchmark.stats import Stats

from normbench.bench.timer import Timing, calibrate, clock_for, cpu_clock, cuda_event_clock, measure

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU timing path runs where torch sees one")


#: a "binary millisecond" (2**-10 s): sums of its multiples are exact in floating point, so a fake clock advanced
#: by them reads exactly the durations a test gave it
MS = 2.0**-10


class FakeClock:
    """A clock that only the timed call moves: `call(duration, first=...)` returns a function that advances it by
    `first` on its first run and by `duration` on every other. What a test asserts then cannot depend on how busy
    the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def call(self, duration: float, first: float | None = None):
        steps = itertools.chain([] if first is None else [first], itertools.repeat(duration))

        def fn() -> None:
            self.now += next(steps)
        return fn


def test_calibration_warms_up_and_fills_rounds():
    clock, calls = FakeClock(), []
    step = clock.call(100e-9)
    schedule = calibrate(lambda: calls.append(step()), "cpu", budget_s=0.01, min_rounds=10, clock=clock)
    assert len(calls) >= 3  # warm-up ran before any estimate
    assert schedule.rounds >= 10 and schedule.warmup_rounds >= 1
    assert schedule.per_call_estimate_s == pytest.approx(100e-9)
    # a call of 100 ns is repeated so that one round lasts round_s (2 ms: clock resolution is irrelevant)
    assert schedule.iterations == pytest.approx(20_000, abs=1) and not schedule.flush_l2 and schedule.hold_s == 0


def test_measure_recovers_a_known_duration():
    # 2 ms per call after a first call that pays 50 ms of one-time costs: calibration leaves the first call out,
    # a round is one call (round_s), the rounds fill the budget, and the median is the known duration.
    # warmup_s=0: calibration makes exactly its three calls (its warm-up window is wall-clock time).
    clock = FakeClock()
    timing = measure(clock.call(2 * MS, first=50 * MS), "cpu", budget_s=50 * MS, round_s=2 * MS, warmup_s=0,
                     min_rounds=10, clock=clock)
    assert timing.iterations == 1 and timing.rounds == 25
    assert timing.median == 2 * MS and timing.samples == (2 * MS,) * 25
    assert timing.q1 <= timing.median <= timing.q3 and timing.iqr == pytest.approx(timing.q3 - timing.q1)


def test_a_round_of_several_calls_is_timed_per_call():
    # 0.25 ms calls in 2 ms rounds: eight calls a round, each sample the round's time divided by eight
    clock = FakeClock()
    timing = measure(clock.call(MS / 4), "cpu", budget_s=40 * MS, round_s=2 * MS, warmup_s=0, min_rounds=10,
                     clock=clock)
    assert timing.iterations == 8 and timing.rounds == 20 and set(timing.samples) == {MS / 4}


def test_measure_reads_the_device_clock_by_default(monkeypatch):
    from normbench.bench import timer

    clock = FakeClock()
    monkeypatch.setattr(timer, "cpu_clock", clock)  # what clock_for("cpu") returns: the default path
    timing = measure(clock.call(4 * MS), "cpu", budget_s=8 * MS, round_s=MS, warmup_s=0, min_rounds=10)
    assert timing.rounds == 10 and timing.median == 4 * MS


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
