"""What judging in the trusted process (where a plugin cannot forge its verdict) costs: every eager item of a
TRUSTED_CHECKS check, judged through the sandbox twice, in the trusted process over the request protocol and beside the
plugin as before, interleaved item by item so both see the same load.

    python suite/benchmarks/trusted_overhead.py [IMPLEMENTATION ...]

Prints per implementation the summed wall time of its items each way and their ratio, and the verdicts that
differ (there should be none). Default: torch.nn.LayerNorm, torch.nn.BatchNorm1d, normbench.PowerNorm. Quote it
with the load average it prints.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT = ("torch.nn.LayerNorm", "torch.nn.BatchNorm1d", "normbench.PowerNorm")


def main(names: list[str]) -> int:
    import torch

    import normbench.sandbox as sandbox
    from normbench.remote.judge import TRUSTED_CHECKS
    from normbench.runner import item_dtypes
    from normbench.spec import load_specs

    # as the suite's pytest process does (normbench.pytest_plugin): the trusted side's arithmetic on small tensors
    # is slower multithreaded on a loaded 2-core machine (5.5x at load 5.6), as the judging children's would be
    torch.set_num_threads(1)
    specs = load_specs().specs
    registry = sandbox.discover_isolated(families=specs)
    chosen = trusted_path = sandbox.trusted
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    print(f"{'implementation':28} {'items':>5} {'trusted s':>10} {'beside s':>9} {'ratio':>6}  differing verdicts")
    for name in names:
        impl = registry.implementations[name]
        spec = specs[impl.family]
        items = [(p.name, m, d) for p in spec.properties if p.check in TRUSTED_CHECKS for m in p.expect
                 for d in item_dtypes(spec, impl, p)]
        spent = {"trusted": 0.0, "beside": 0.0}
        differ = []
        pools = {way: sandbox.SandboxPool(specs, "ci", sandbox.Limits()) for way in spent}
        try:
            for prop, mode, dtype in items:
                verdicts = {}
                for way, pool in pools.items():
                    sandbox.trusted = trusted_path if way == "trusted" else (lambda *_: False)
                    start = time.perf_counter()
                    verdicts[way] = str(pool.judge(impl, impl.family, prop, mode, dtype, "cpu").verdict)
                    spent[way] += time.perf_counter() - start
                if verdicts["trusted"] != verdicts["beside"]:
                    differ.append(f"{prop}-{mode}-{dtype}: {verdicts}")
        finally:
            sandbox.trusted = chosen
            for pool in pools.values():
                pool.close()
        ratio = spent["trusted"] / spent["beside"] if spent["beside"] else float("nan")
        print(f"{name:28} {len(items):>5} {spent['trusted']:>10.2f} {spent['beside']:>9.2f} {ratio:>6.2f}  "
              f"{'; '.join(differ) or 'none'}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(DEFAULT)))
