"""The item clock (normbench.item_clock): wall time less the waits for a CPU, with a wall backstop. Fake clocks
throughout: no test here sleeps or reads the real time."""

import os
from pathlib import Path

import pytest

from normbench.item_clock import WALL_BACKSTOP, ItemClock, own_waits


class World:
    """A fake machine: wall time, and how long each of the two main threads has waited for a CPU."""

    def __init__(self) -> None:
        self.now = 0.0
        self.ours = 0.0
        self.theirs = 0.0
        self.readable_at = float("inf")
        #: the share of each wall second the implementation's thread spends waiting for a CPU (the load)
        self.waiting_share = 0.0
        self.reads = 0

    def clock(self, limit: float, readable: bool = True) -> ItemClock:
        def theirs(pid: int) -> float | None:
            self.reads += 1
            return self.theirs if readable else None

        return ItemClock(limit, 1234, wall=lambda: self.now, ours=lambda: self.ours, theirs=theirs)

    def poll(self, timeout: float = 0.0) -> bool:
        """Time passes until the reply arrives or the timeout is over, the thread waiting its share of it."""
        step = min(timeout, max(0.0, self.readable_at - self.now))
        self.now += step
        self.theirs += step * self.waiting_share
        return self.now >= self.readable_at


def test_a_reply_in_time_is_waited_for_with_no_schedstat_read():
    world = World()
    clock = world.clock(60.0)
    reads = world.reads
    world.readable_at = 0.002
    assert clock.wait(world)
    assert world.reads == reads  # a fast request costs no /proc read


def test_on_a_quiet_machine_the_limit_is_the_wall_time():
    world = World()
    clock = world.clock(10.0)
    assert not clock.wait(world)
    assert world.now == pytest.approx(10.0, abs=0.05)
    assert "10 s" in clock.describe()


def test_a_loaded_machine_stretches_the_wall_time_not_the_limit():
    world = World()
    world.waiting_share = 0.75  # a quarter of a core: a load of about 8 on 2 cores
    world.readable_at = 30.0  # 7.5 s of its own time, 30 s of wall time
    clock = world.clock(10.0)
    assert clock.wait(world)
    assert clock.used() == pytest.approx(7.5)


def test_a_limit_measured_in_wall_time_would_have_killed_the_same_item():
    # the control of the test above: the same item on a plain wall clock (no schedstat) times out
    world = World()
    world.waiting_share = 0.75
    world.readable_at = 30.0
    clock = world.clock(10.0, readable=False)
    assert not clock.adjusted
    assert not clock.wait(world)
    assert world.now == pytest.approx(10.0, abs=0.05)


def test_a_process_that_only_waits_for_a_cpu_is_ended_by_the_backstop():
    world = World()
    world.waiting_share = 1.0  # starved (by spinning threads of its own, say): its own time never grows
    clock = world.clock(2.0)
    assert not clock.wait(world)
    assert world.now == pytest.approx(2.0 * WALL_BACKSTOP, abs=0.05)
    assert "backstop" in clock.describe()


def test_a_sleeping_process_is_ended_at_the_limit():
    # sleeping is not waiting for a CPU: it counts, so a hang that sleeps ends as soon as one that spins
    world = World()
    clock = world.clock(3.0)
    assert not clock.wait(world)
    assert world.now == pytest.approx(3.0, abs=0.05)


def test_the_time_used_never_goes_back():
    world = World()
    clock = world.clock(10.0)
    world.now = 4.0
    assert clock.used() == 4.0
    world.now, world.ours, world.theirs = 5.0, 3.0, 3.0  # both threads waiting at once for 3 s: 6 s of waits
    assert clock.used() == 4.0


def test_a_reaped_process_keeps_what_it_had_used_and_the_wall_since():
    world = World()
    readable = {"yes": True}
    clock = ItemClock(10.0, 1, wall=lambda: world.now, ours=lambda: 0.0,
                      theirs=lambda pid: world.theirs if readable["yes"] else None)
    world.now, world.theirs = 6.0, 4.0
    assert clock.used() == 2.0
    readable["yes"] = False
    world.now = 7.0
    assert clock.used() == 3.0


def test_where_the_kernel_keeps_schedstat_the_real_clock_is_load_adjusted():
    # Linux with sched_info: the run discounts waits for a CPU; elsewhere the clock is the wall clock, and says so
    if not Path("/proc/thread-self/schedstat").exists():
        assert not ItemClock(1.0, os.getpid()).adjusted
        return
    assert own_waits() is not None and own_waits() >= 0.0
    assert ItemClock(1.0, os.getpid()).adjusted
