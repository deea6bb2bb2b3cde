"""A judging process starts with the forkserver's heap frozen (normbench.preload.frozen_heap): each of them paid
about 0.17 s of collections over torch's and normbench's objects on its first item before (docs/findings.md,
"A judging process's first item")."""

from __future__ import annotations

import re

from helpers import specs

from normbench.sandbox import Limits, SandboxPool, discover_isolated


def test_a_judging_process_starts_with_the_forkserver_heap_frozen():
    registry = discover_isolated(["plugins.heap_probe:implementation"], families=specs(), include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        outcome = pool.judge(registry.implementations["probe.heap"], "layernorm", "dtype_preservation", "any",
                             "float32", "cpu")
    finally:
        pool.close()
    found = re.search(r"frozen objects: (\d+)", outcome.summary)
    assert found, outcome.summary
    # torch alone is hundreds of thousands of objects; a heap left unfrozen reads 0
    assert int(found.group(1)) > 100_000, outcome.summary
