"""A judging process starts with the forkserver's heap frozen (normbench.preload.frozen_heap): each of them paid
about 0.17 s of collections over torch's and normbench's objects on its first item before (docs/findings.md,
"A judging process's first item")."""

from __future__ import annotations

import re

from helpers import judge_probe


def test_a_judging_process_starts_with_the_forkserver_heap_frozen():
    outcome = judge_probe("plugins.heap_probe:implementation", "probe.heap")
    found = re.search(r"frozen objects: (\d+)", outcome.summary)
    assert found, outcome.summary
    # torch alone is hundreds of thousands of objects; a heap left unfrozen reads 0
    assert int(found.group(1)) > 100_000, outcome.summary
