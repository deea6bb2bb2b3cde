"""The size-matched, cache-aware roofline and the cross-check that validates the table's medians."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from normbench.bench.pytest_plugin import (
    Interleaver,
    InterleavingClock,
    _discarding,
    above_roofline,
    crosscheck,
)
from normbench.bench.roofline import Roofline, RooflineLevel, cpu_cache_levels, measure_roofline, size_matched
from normbench.bench.timer import calibrate

MiB = 2**20


def roofline(l2: float = 60.0, l3: float = 40.0, dram: float = 20.0) -> Roofline:
    levels = (RooflineLevel("L2", 2 * MiB, MiB, l2, l2 * 0.9, l2 * 1.1),
              RooflineLevel("L3", 32 * MiB, 16 * MiB, l3, l3 * 0.9, l3 * 1.1),
              RooflineLevel("DRAM", None, 512 * MiB, dram, dram * 0.9, dram * 1.1))
    return Roofline("cpu", "test cpu", dram, dram * 0.9, dram * 1.1, 256 * MiB, 2, levels=levels)


def test_a_case_is_bounded_by_the_smallest_level_its_working_set_fits_in():
    roof = roofline()
    assert roof.bounding_level(MiB).name == "L2" and roof.bounding_level(MiB).copy_gbps == 60.0
    assert roof.bounding_level(2 * MiB + 1).name == "L3"
    assert roof.bounding_level(32 * MiB).name == "L3" and roof.bounding_level(32 * MiB + 1).name == "DRAM"
    assert roof.bounding_level(10**12).copy_gbps == 20.0


def test_a_level_measured_below_a_larger_one_never_becomes_the_bound():
    # call overhead made the small copy look slow: a small case must not beat its bound by being small
    roof = roofline(l2=10.0)
    level = roof.bounding_level(MiB)
    assert level.name == "L2" and level.copy_gbps == 40.0


def test_a_roofline_without_levels_is_the_dram_copy():
    roof = Roofline("cpu", "old record", 20.0, 18.0, 22.0, 256 * MiB, 2)
    assert roof.bounding_level(MiB).name == "DRAM" and roof.bounding_level(MiB).copy_gbps == 20.0


def test_size_matched_copies_are_measured_at_the_case_working_set_and_never_below_dram():
    roof = measure_roofline("cpu", 4 * MiB, budget_s=0.01, repeats=1, cache_levels=[("L2", 2 * MiB)])
    assert [lv.name for lv in roof.levels] == ["L2", "DRAM"]
    bound = size_matched(roof, 3 * MiB, budget_s=0.01, repeats=1)
    assert bound.name == "DRAM" and bound.working_set_bytes == 3 * MiB and bound.copy_gbps >= roof.copy_gbps
    slow = Roofline("cpu", "x", 1e9, 1e9, 1e9, 4 * MiB, 1, levels=roof.levels)
    assert size_matched(slow, MiB, budget_s=0.01, repeats=1).copy_gbps == 1e9  # floored at the DRAM copy


def test_a_copy_bound_is_the_faster_of_all_threads_and_one(monkeypatch):
    # Waking the second OpenMP thread can cost more than a cached copy: a kernel that stays on one thread must
    # not beat a bound measured on two.
    from types import SimpleNamespace

    from normbench.bench import roofline as rl

    per_thread_count = {1: 1e-4, 2: 4e-4}  # seconds per copy
    seen = []

    def fake_measure(fn, device, budget_s, min_rounds):
        t = per_thread_count[torch.get_num_threads()]
        seen.append(torch.get_num_threads())
        return SimpleNamespace(median=t, q1=t * 0.9, q3=t * 1.1)

    monkeypatch.setattr(rl, "measure", fake_measure)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gbps, q1, q3 = rl._copy_bandwidth(MiB, "cpu", budget_s=0.01, repeats=2)
        assert torch.get_num_threads() == 2  # restored
        assert seen == [2, 2, 1] and gbps == pytest.approx(2 * MiB / 1e-4 / 1e9) and q1 < gbps < q3
        per_thread_count[1] = 1e-3  # one thread slower (a large copy): the all-threads copy stays the bound
        assert rl._copy_bandwidth(MiB, "cpu", budget_s=0.01, repeats=1)[0] == pytest.approx(2 * MiB / 4e-4 / 1e9)
    finally:
        torch.set_num_threads(threads)


def test_cache_levels_come_from_sysfs_from_l2_up():
    levels = cpu_cache_levels(2)
    if not levels:
        pytest.skip("no cache information in sysfs here")
    assert levels[0][0] == "L2" and all(size > 0 for _, size in levels)
    assert [size for _, size in levels] == sorted(size for _, size in levels)


def test_only_cases_above_the_roofline_beyond_the_noise_are_flagged():
    within = {"id": "a", "gbps_q1": 21.0, "roofline_gbps_q3": 22.0}  # median may read 105%: inside both spreads
    beyond = {"id": "b", "gbps_q1": 30.0, "roofline_gbps_q3": 22.0}
    assert [e["id"] for e in above_roofline([within, beyond])] == ["b"]


def test_the_interleaving_clock_runs_its_hook_before_each_timed_round_only():
    clock, calls = InterleavingClock(), []
    clock.hook = lambda: calls.append(time.perf_counter())
    start = clock()
    end = clock()
    assert len(calls) == 1 and calls[0] <= start <= end  # the hook ran before the start read, outside the round
    clock()
    assert len(calls) == 2


class FakeClock:
    """A clock that only the timed call moves (`work(seconds)` is a call that advances it by that much), so that
    both timers of the cross-check read exactly the durations a test gives, however busy the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def fn() -> None:
            self.now += seconds
        return fn


#: a "binary millisecond" (2**-10 s): sums of its multiples are exact in floating point
MS = 2.0**-10


def test_the_crosscheck_agrees_with_a_table_that_timed_the_same_call():
    clock = FakeClock()
    inter = Interleaver(clock.work(2 * MS), iterations=1, clock=clock)
    for _ in range(15):
        inter.round()
    assert inter.ours == inter.theirs == [2 * MS] * 14  # both timers, on the call's own clock
    table = sorted(inter.ours)[len(inter.ours) // 2]
    check = inter.result(table, table)
    assert check["agree"] and check["rounds"] == 14 and check["table_median_s"] == table
    assert check["torch_utils_benchmark_median_s"] == 2 * MS


def test_the_crosscheck_pools_every_pass_as_the_table_does():
    # A machine that drifts between passes (here the call itself: 1 ms, then 3 ms) moves the table's pooled median;
    # a cross-check timed in the last pass only would read 3 ms against a pooled 2 ms and disagree.
    clock = FakeClock()
    inter = Interleaver(clock.work(MS), iterations=1, clock=clock)
    for _ in range(7):
        inter.round()
    inter.end_pass()
    assert inter.fn is None and inter.timer is None  # a pass's tensors do not outlive it
    inter.begin_pass(clock.work(3 * MS), warmup_rounds=1)
    for _ in range(7):
        inter.round()
    assert len(inter.ours) == len(inter.theirs) == 12  # each pass's warm-up companion left out
    for samples in (inter.ours, inter.theirs):  # both passes' rounds, each timing its own pass's call
        assert samples == [MS] * 6 + [3 * MS] * 6
    check = inter.result(statistics.median(inter.ours), 3 * MS, pass_samples=inter.ours)
    assert check["rounds"] == 12 and check["normbench_interleaved_median_s"] == statistics.median(inter.ours) == 2 * MS
    assert check["torch_utils_benchmark_median_s"] == statistics.median(inter.theirs)
    assert check["table_pass_median_s"] == 3 * MS
    assert check["agree"]  # the pooled table median (2 ms) is what both timers pooled


def test_the_crosscheck_flags_a_table_median_that_timed_something_else():
    clock = FakeClock()
    fn = clock.work(2 * MS)
    schedule = calibrate(fn, budget_s=0.02, round_s=2 * MS, warmup_s=0, clock=clock)
    assert schedule.iterations == 1
    check = crosscheck(fn, "cpu", schedule, table_median_s=MS, blocks=2, budget_s=0.02, clock=clock)  # half
    assert not check["agree"] and check["spread"] == 1.0  # the timers read 2 ms against the table's 1 ms
    assert check["normbench_interleaved_median_s"] == check["torch_utils_benchmark_median_s"] == 2 * MS
    assert crosscheck(fn, "cpu", schedule, table_median_s=2 * MS, blocks=2, budget_s=0.02, clock=clock)["agree"]
    inter = Interleaver(fn, iterations=1, clock=clock)
    for _ in range(5):
        inter.round()
    assert not inter.result(4 * MS, 4 * MS)["agree"]
    assert inter.result(2 * MS, 2 * MS)["agree"]


def test_without_a_clock_the_crosscheck_timers_keep_their_defaults():
    # normbench's loop reads time.perf_counter and torch.utils.benchmark its own default timer (which synchronizes
    # an accelerator where one is present): the clock is a seam for tests, not a change of what is measured
    from torch.utils.benchmark.utils import timer as tub_timer

    inter = Interleaver(lambda: None, iterations=1)
    assert inter.clock is None and inter.timer._timer.timer is tub_timer.timer
    clock = FakeClock()
    assert Interleaver(lambda: None, iterations=1, clock=clock).timer._timer.timer is clock


def test_the_timed_call_drops_its_output():
    assert _discarding(lambda: [1, 2, 3])() is None


def test_a_difference_inside_the_medians_notches_is_noise_and_one_beyond_is_not():
    from normbench.bench.pytest_plugin import median_notch, medians_consistent

    noisy = [1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0, 0.7, 1.4, 1.0]
    median, half = median_notch(noisy)
    assert median == 1.0 and half > 0.1
    assert medians_consistent([noisy, [x * 1.08 for x in noisy]])  # 8% apart, inside this spread
    tight = [1.0, 1.001, 0.999] * 10
    assert not medians_consistent([tight, [x * 1.08 for x in tight]])  # 8% apart with no spread: a real difference


def test_the_size_matched_bound_keeps_the_fastest_pass(monkeypatch):
    from normbench.bench import pytest_plugin as plugin

    readings = iter([30.0, 50.0, 40.0])
    monkeypatch.setattr(plugin, "size_matched",
                        lambda roof, ws, device: RooflineLevel("L3", 32 * MiB, ws, next(readings), 1.0, 1.0))
    session = plugin.BenchSession.__new__(plugin.BenchSession)
    session.bounds, session.bound_passes = {}, set()
    session.roofline = lambda device: roofline()  # type: ignore[method-assign]
    assert session.bound("cpu", MiB, 0).copy_gbps == 30.0
    assert session.bound("cpu", MiB, 0).copy_gbps == 30.0  # once per pass
    assert session.bound("cpu", MiB, 1).copy_gbps == 50.0
    assert session.bound("cpu", MiB, 2).copy_gbps == 50.0  # a slower reading never lowers the bound
