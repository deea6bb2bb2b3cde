"""Where the time to a verdict goes, to find what makes the test loop slow: per check, in process, and per judging
process, isolated.

    python suite/benchmarks/time_to_verdict.py [IMPLEMENTATION ...]

Prints, for each implementation (default torch.nn.RMSNorm and torch.nn.BatchNorm1d), the median of REPEATS runs of
its whole eager plan judged in this process, split by property, and, through the sandbox, the median cost of a
judging process's first item (process start, plugin import, fingerprints, torch's lazy imports) against the same
item once the process is warm. Quote it with the load average it prints: the machines are shared.
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import time
from pathlib import Path

REPEATS = 3
VARIANT_CHECKS = ("variant_matches_eager", "no_recompile_storm", "export_ops", "export_train_eval_semantics")


def in_process(name: str) -> tuple[int, float, collections.Counter[str]]:
    import torch

    from normbench.builtins import reference_implementations, torch_implementations
    from normbench.families import implementations as family_implementations
    from normbench.runner import PlanItem, item_dtypes, judge
    from normbench.spec import load_specs

    torch.set_num_threads(1)  # as a judging process runs
    impls = {i.name: i for i in torch_implementations() + reference_implementations() + family_implementations()}
    impl = impls[name]
    spec = load_specs().specs[impl.family]
    items = [PlanItem(spec, impl, p, m, d) for p in spec.properties for m in p.expect
             for d in item_dtypes(spec, impl, p) if p.check not in VARIANT_CHECKS]
    per: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        judge(item, "ci")
        per[item.prop.name] += time.perf_counter() - t
    return len(items), time.perf_counter() - start, per


def first_item(name: str) -> tuple[float, float]:
    from normbench.sandbox import Limits, SandboxPool, discover_isolated
    from normbench.spec import load_specs

    specs = load_specs().specs
    impl = discover_isolated(families=specs).implementations[name]
    prop = next(p for p in specs[impl.family].properties if p.name == "gradient_equivalence")
    mode = next(iter(prop.expect))
    firsts, warm = [], []
    for _ in range(REPEATS):
        pool = SandboxPool(specs, "ci", Limits())
        try:
            for times in (firsts, warm):
                t = time.perf_counter()
                pool.judge(impl, impl.family, prop.name, mode, "float32", "cpu")
                times.append(time.perf_counter() - t)
        finally:
            pool.close()
    return statistics.median(firsts), statistics.median(warm)


def main(names: list[str]) -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; medians of {REPEATS} runs")
    for name in names:
        runs = [in_process(name) for _ in range(REPEATS)]
        n, total = runs[0][0], statistics.median(r[1] for r in runs)
        print(f"\n{name}: {n} items in {total:.2f} s in process ({1000 * total / n:.0f} ms an item)")
        per = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2]}
        for prop, seconds in sorted(per.items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {prop:28s} {seconds:6.3f} s")
        first, warm = first_item(name)
        print(f"  isolated: first item of a judging process {first:.3f} s, the same item warm {warm:.3f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1:] or ["torch.nn.RMSNorm", "torch.nn.BatchNorm1d"])
