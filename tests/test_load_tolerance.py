"""A busy machine slows a run, it does not change its verdicts (normbench.item_clock): the same implementation,
judged with the same time limit on a quiet machine and beside CPU hogs, gets the same verdicts.

The limit is chosen so that a plain wall-clock limit would kill the loaded item: its first forward computes for
1.5 s of CPU time (tests/plugins/load.py), and 8 hogs on this 2-core machine give it about a fifth of a core, so
its wall time is several times the 5 s limit (measured at a load of 8 before the hogs: quiet 6.1 s of wall
time, 2.25 s of its own; beside 8 hogs 12.1 s of wall time, 2.02 s of its own). The mechanism itself is tested
on fake clocks in tests/test_item_clock.py; this test shows it on the real kernel's counters, so it is marked
slow."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from normbench.outcome import Outcome
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs

#: the item time limit of both runs: about twice the first item's own time (its warm-up and its cases)
LIMIT_S = 5.0
ITEMS = [("forward_equivalence", "any", "float32"), ("shift_invariance", "any", "float32"),
         ("scale_invariance", "any", "float32")]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                                 reason="the kernel keeps no run-queue delays here: limits are plain wall time")]


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _judge(impl, specs) -> list[Outcome]:
    pool = SandboxPool(specs, "ci", Limits(item_timeout=LIMIT_S))  # a fresh process: it warms up under this load
    try:
        return [pool.judge(impl, "layernorm", prop, mode, dtype, "cpu") for prop, mode, dtype in ITEMS]
    finally:
        pool.close()


def test_cpu_hogs_beside_an_implementation_do_not_change_its_verdicts():
    specs = load_specs().specs
    registry = discover_isolated(["plugins.load:warms_up"], families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    impl = registry.implementations["load.warms_up"]
    quiet = _judge(impl, specs)
    with cpu_hogs(4 * (os.cpu_count() or 1)):
        loaded = _judge(impl, specs)
    assert [o.verdict for o in quiet] == ["pass"] * len(ITEMS), [o.summary for o in quiet]
    assert [o.verdict for o in loaded] == [o.verdict for o in quiet], [o.summary for o in loaded]
