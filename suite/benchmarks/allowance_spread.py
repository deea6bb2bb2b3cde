"""What spreading one value per statistic group over its elements costs (forward_equivalence's conditioning
allowance does it on every trial): the inverse rearrangement (normbench.checks.toolkit.reductions.per_element)
against the rearranged flat-index scatter it replaced.

    python suite/benchmarks/allowance_spread.py [--calls 30]

Prints the median of --calls calls of each, per family and input shape, in one thread; quote it with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)

    import torch

    from normbench.checks.toolkit.reductions import per_element, statistic_groups
    from normbench.spec import load_specs

    def by_index(spec, shape, values, params):  # the method per_element replaced
        index = statistic_groups(spec, torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape),
                                 params)
        out = torch.empty(index.numel(), dtype=torch.float64)
        out[index.reshape(-1).long()] = values.unsqueeze(1).expand_as(index).reshape(-1)
        return out.reshape(shape)

    torch.set_num_threads(1)
    specs = load_specs().specs
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for family, shape, params in (("layernorm", (8, 16, 32), {}), ("layernorm", (66048, 4), {}),
                                  ("batchnorm", (32, 16, 8), {}), ("groupnorm", (4, 16, 8, 8), {"num_groups": 4})):
        spec = specs[family]
        values = torch.randn(statistic_groups(spec, torch.zeros(shape, dtype=torch.float64), params).shape[0],
                             dtype=torch.float64)
        medians = []
        for spread in (by_index, per_element):
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                spread(spec, shape, values, params)
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times) * 1e3)
        print(f"{family:10} {str(shape):16} flat-index scatter {medians[0]:7.3f} ms   per_element {medians[1]:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
