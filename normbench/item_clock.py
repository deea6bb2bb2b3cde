"""The clock an item's time limit is measured on: wall time less the time the item waited for a CPU.

A busy machine must slow a run, not change its verdicts. A limit in wall seconds does change them: on 2 cores with
a load of 8 every process gets about a quarter of a core, so an item that takes 20 s quiet takes 80 s there and a
60 s limit kills it. The kernel counts, per thread, the time it was runnable but waiting for a CPU (the second field
of /proc/PID/schedstat, the scheduler's run-queue delay; see the kernel's Documentation/scheduler/sched-stats.rst).
An item alternates between two threads: the implementation's process computes while the judging process waits for
its reply, and the judging process computes (the float64 truth, the comparisons of a trusted item) while the
implementation's waits for the next request. So the item's wall time less both main threads' run-queue delay is
the time the item would have taken on a quiet machine: the same as the wall time there, and close to it under any
load. Measured here: a 1 s computation beside 8 CPU hogs on 2 cores took 10.25 s of wall time, and 9.25 s of it
waiting for a CPU, which leaves 1.00 s.

What still grows with the load: an item whose work runs on several threads (torch's intra-op pool) waits for its
slowest thread, and the main thread's wait for a worker that itself waits for a CPU is counted. A plugin cannot
use this to run forever (starving its own main thread with spinning threads of its own, say): the item also ends
after `WALL_BACKSTOP` times its limit in plain wall seconds.

Where the run-queue delays cannot be read (no /proc, no schedstat in the kernel, /proc mounted with hidepid), the
clock is the wall clock, as before, and the timeout's message says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

#: the plain wall-clock backstop, as a multiple of the limit (see the module's docstring)
WALL_BACKSTOP = 5.0

#: the shortest wait between two readings of the run-queue delays near the limit
_MIN_SLICE = 0.01


def runqueue_wait(path: str) -> float | None:
    """Seconds the thread of `path` (a /proc schedstat file) has waited for a CPU, or None where unreadable."""
    try:
        with open(path, "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def child_waits(pid: int) -> float | None:
    """The run-queue delay of process `pid`'s main thread (the one that answers the judging process's requests)."""
    return runqueue_wait(f"/proc/{pid}/schedstat")


def own_waits() -> float | None:
    """The run-queue delay of the calling thread: the judging process's."""
    return runqueue_wait("/proc/thread-self/schedstat")


class Readable(Protocol):
    def poll(self, timeout: float = ...) -> bool: ...


class ItemClock:
    """The time one item has used against its `limit` (see the module's docstring)."""

    def __init__(self, limit: float, pid: int | None, backstop: float = WALL_BACKSTOP, *,
                 wall: Callable[[], float] = time.monotonic, ours: Callable[[], float | None] = own_waits,
                 theirs: Callable[[int], float | None] = child_waits) -> None:
        self.limit = limit
        self.backstop_s = limit * backstop
        self._wall, self._ours, self._theirs, self._pid = wall, ours, theirs, pid
        self._wall0 = wall()
        self._waits0 = self._waits()
        #: whether the limit discounts the waits for a CPU (False: it is plain wall time)
        self.adjusted = self._waits0 is not None
        self._seen, self._seen_at = 0.0, 0.0
        self.ran_out = ""

    def _waits(self) -> float | None:
        ours = self._ours()
        theirs = self._theirs(self._pid) if self._pid is not None else None
        return None if ours is None or theirs is None else ours + theirs

    def wall(self) -> float:
        return self._wall() - self._wall0

    def used(self) -> float:
        """The item's time so far: wall seconds less the waits for a CPU since its start (never less than a reading
        before: two threads waiting at once cannot take time back)."""
        wall = self.wall()
        waits = self._waits() if self.adjusted else None
        if not self.adjusted:
            used = wall
        elif waits is None:  # killed and reaped (after a timeout): the time it had used when it was last read
            used = self._seen + (wall - self._seen_at)
        else:
            used = max(self._seen, wall - (waits - (self._waits0 or 0.0)))
        self._seen, self._seen_at = used, wall
        return used

    def _limit_text(self) -> str:
        return f"{self.limit:g} s{' (not counting waits for a CPU)' if self.adjusted else ''}"

    def expired(self) -> bool:
        if self.used() > self.limit:
            self.ran_out = self._limit_text()
        elif self.adjusted and self.wall() > self.backstop_s:
            self.ran_out = (f"{self.backstop_s:g} s of wall time (the backstop, {WALL_BACKSTOP:g}x the {self.limit:g} "
                            "s limit, for an item that waited for a CPU that long)")
        return bool(self.ran_out)

    def wait(self, conn: Readable) -> bool:
        """Whether `conn` became readable before the limit ran out. The run-queue delays are read only once a wait
        could have spent the limit: the item's time grows at most as fast as the wall clock, so a request of
        microseconds costs no /proc read."""
        while True:
            left = self.limit - (self._seen + self.wall() - self._seen_at)
            if self.adjusted:
                left = min(left, self.backstop_s - self.wall())
            if left > _MIN_SLICE:
                if conn.poll(left):
                    return True
                continue
            if self.expired():
                return bool(conn.poll(0))  # a reply that came at the last moment still counts
            if conn.poll(_MIN_SLICE):
                return True

    def describe(self) -> str:
        """The limit, for a timeout's message: what ran out, or what would."""
        return self.ran_out or self._limit_text()
