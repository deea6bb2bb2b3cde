"""The cross-check of the benchmark table's medians (--bench-crosscheck): the same prepared call timed by normbench's
own loop and by torch.utils.benchmark, interleaved with the table's rounds or in blocks after them, and whether the
three medians agree. Apart from the pytest plugin (normbench.bench.pytest_plugin) because the implementation's
process (normbench.bench.isolated), which the plugin drives, runs the same timers."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from normbench.bench.timer import Schedule, measure

#: interleaved blocks of the cross-check: each timer runs a block in turn, so a drift of a shared machine
#: (a neighbour's load, frequency changes) lands on both alike instead of on whichever ran second.
CROSSCHECK_BLOCKS = 5
#: the table's median and both cross-check medians must agree within this fraction
CROSSCHECK_TOLERANCE = 0.05


class Interleaver:
    """One round of normbench's loop and one of torch.utils.benchmark's `Timer.timeit(number=iterations)` per table
    round, in alternating order, each the same number of calls as a table round. One interleaver follows a case
    through every pass of --bench-rounds, as the table's pooled median does (`begin_pass` hands it that pass's
    prepared call; `end_pass` lets it go, so no case's tensors outlive its pass).

    `clock`: what both timers read (default: time.perf_counter for normbench's loop and torch.utils.benchmark's own
    default timer); tests pass a fake clock that the timed call advances by a known duration."""

    def __init__(self, fn: Any, iterations: int, warmup_rounds: int = 1,
                 clock: Callable[[], float] | None = None) -> None:
        self.iterations = iterations
        self.clock = clock
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self._rounds = 0
        self.begin_pass(fn, warmup_rounds)

    def begin_pass(self, fn: Any, warmup_rounds: int) -> None:
        """Time `fn` from now on; the next `warmup_rounds` rounds accompany the table's warm-up rounds of this
        pass, so they are run and left out, like the table's."""
        from torch.utils import benchmark as tub

        self.fn = fn
        self.timer: Any = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(),
                                    **_timer_option(self.clock))
        self._skip = warmup_rounds

    def end_pass(self) -> None:
        self.fn = self.timer = None

    def _ours(self) -> float:
        fn, clock = self.fn, time.perf_counter if self.clock is None else self.clock
        t0 = clock()
        for _ in range(self.iterations):
            fn()
        return (clock() - t0) / self.iterations

    def _theirs(self) -> float:
        return float(self.timer.timeit(number=self.iterations).median)

    def round(self) -> None:
        if self._rounds % 2:
            theirs = self._theirs()
            ours = self._ours()
        else:
            ours = self._ours()
            theirs = self._theirs()
        self._rounds += 1
        if self._skip:
            self._skip -= 1
            return
        self.ours.append(ours)
        self.theirs.append(theirs)

    def result(self, table_median_s: float, pass_median_s: float, tolerance: float = CROSSCHECK_TOLERANCE,
               pass_samples: list[float] | None = None) -> dict[str, Any]:
        """`pass_samples`: the table's samples the median was taken of (every pass so far)."""
        return interleaved_result(self.ours, self.theirs, self.iterations, table_median_s, pass_median_s, tolerance,
                                  pass_samples)


def interleaved_result(ours: list[float], theirs: list[float], iterations: int, table_median_s: float,
                       pass_median_s: float, tolerance: float = CROSSCHECK_TOLERANCE,
                       pass_samples: list[float] | None = None) -> dict[str, Any]:
    """The cross-check of interleaved rounds (an Interleaver's, here or in the implementation's process)."""
    rounds = len(ours)
    ours, theirs = ours or [float("nan")], theirs or [float("nan")]
    check = _agreement(table_median_s, statistics.median(ours), statistics.median(theirs), tolerance,
                       mode="interleaved rounds", rounds=rounds, iterations=iterations,
                       table_pass_median_s=pass_median_s)
    if pass_samples:
        check["within_noise"] = medians_consistent([list(pass_samples), ours, theirs])
    return check


def _timer_option(clock: Callable[[], float] | None) -> dict[str, Any]:
    """torch.utils.benchmark.Timer's `timer` argument for `clock`: none when no clock is given, so the Timer keeps its
    default (which synchronizes an accelerator when one is present)."""
    return {} if clock is None else {"timer": clock}


def median_notch(samples: list[float]) -> tuple[float, float]:
    """(median, half-width of its ~95% interval): McGill, Tukey & Larsen's notch, 1.57 · IQR / sqrt(n)."""
    ordered = sorted(samples)
    n = len(ordered)
    q1, q3 = ordered[n // 4], ordered[(3 * n) // 4]
    return statistics.median(ordered), 1.57 * (q3 - q1) / math.sqrt(n)


def medians_consistent(sample_sets: list[list[float]]) -> bool:
    """Every pair of medians within the sum of their notches: a difference the timers' own spread explains."""
    notches = [median_notch(s) for s in sample_sets if s]
    return all(abs(a[0] - b[0]) <= a[1] + b[1] for i, a in enumerate(notches) for b in notches[i + 1:])


def _agreement(table_median_s: float, mine: float, other: float, tolerance: float, **extra: Any) -> dict[str, Any]:
    medians = (table_median_s, mine, other)
    spread = max(medians) / min(medians) - 1 if min(medians) > 0 else float("inf")
    return {"table_median_s": table_median_s, "normbench_interleaved_median_s": mine,
            "torch_utils_benchmark_median_s": other, "normbench_median_s": table_median_s,
            "ratio": mine / other, "table_ratio": table_median_s / other, "spread": spread,
            "agree": spread <= tolerance, "tolerance": tolerance, **extra}


def crosscheck(fn: Any, device: str, schedule: Schedule, table_median_s: float, *,
               blocks: int = CROSSCHECK_BLOCKS, tolerance: float = CROSSCHECK_TOLERANCE,
               budget_s: float = 0.1, clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Validate the table's median: the same prepared call, on the table's schedule (the same calls per round,
    so the same per-call work, warm state and call spacing), timed in `blocks` interleaved blocks by normbench's
    loop (`measure`) and by torch.utils.benchmark (`Timer.timeit(number=iterations)`, one round per timeit).
    `clock`: what both read (default: each its own; see Interleaver).

    Why a schedule of its own once gave other numbers: the old cross-check re-calibrated (another number of calls
    per round, blocked_autorange its own), ran after the peak-memory profiler, and printed only its two medians;
    on a shared CPU torch's OpenMP threads then waited for each other on a different schedule (see docs/benchmarks.md,
    OMP_WAIT_POLICY), so it measured another thing than the table, and nothing showed it."""
    from torch.utils import benchmark as tub

    timer = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), **_timer_option(clock))
    iterations = schedule.iterations
    per_round = max(table_median_s * iterations, 1e-9)
    rounds = max(3, min(schedule.rounds, int(budget_s / blocks / per_round) or 1))
    block = Schedule(warmup_rounds=1, rounds=rounds, iterations=iterations, flush_l2=schedule.flush_l2,
                     per_call_estimate_s=schedule.per_call_estimate_s, hold_s=schedule.hold_s)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(blocks):
        ours += measure(fn, device, block, clock=clock).samples
        timer.timeit(number=iterations)  # warm-up round, as `measure` has
        theirs += [timer.timeit(number=iterations).median for _ in range(rounds)]
    return _agreement(table_median_s, statistics.median(ours), statistics.median(theirs), tolerance,
                      mode="blocks after the table", blocks=blocks, rounds_per_block=rounds, iterations=iterations)
