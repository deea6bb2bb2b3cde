"""What timing an implementation in its own process (out of reach of a plugin that patches the clocks) costs: every
benchmark case of one implementation (default torch.nn.LayerNorm: the spec's shapes, dtypes and passes), timed in this
process with normbench's loop (`measure`, the old path) and then in a child (normbench.bench.isolated, the benchmarks'
path) on the same schedule, case after case so both see the same load, `repeats` times.

    OMP_WAIT_POLICY=PASSIVE python suite/benchmarks/child_timing_overhead.py [THREADS [REPEATS [IMPLEMENTATION]]]

Prints each case's two medians, the child's clock ratio (normbench.bench.trust) and the wall time each way, then
the median ratio child / in-process with its quartiles. Quote it with the load averages it prints (`uptime`).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"


def main(threads: int = 1, repeats: int = 3, name: str = "torch.nn.LayerNorm") -> int:
    import torch

    from normbench.bench.allocator import pin_malloc
    from normbench.bench.harness import BenchCase, prepare
    from normbench.bench.isolated import BenchChild
    from normbench.bench.timer import calibrate, measure
    from normbench.registry import discover
    from normbench.sandbox import Limits, _scratch_dir, discover_isolated
    from normbench.spec import load_specs

    pin_malloc()  # as the benchmark session does (--bench-malloc steady), and the child
    torch.set_num_threads(threads)
    specs = load_specs([], known_checks=None).specs
    local = discover([], families=specs).implementations[name]  # this process imports it: a measurement only
    remote = discover_isolated([], families=specs).implementations[name]
    spec = specs[local.family]
    scratch = _scratch_dir()
    child = BenchChild(remote, specs, Limits(), scratch)
    print("uptime:", _uptime(), flush=True)
    ratios: list[float] = []
    walls: dict[str, list[float]] = {"in-process": [], "child": []}
    try:
        for rep in range(repeats):
            for shape in spec.benchmark["shapes"]:
                for dtype in spec.benchmark.get("dtypes", ["float32"]):
                    for pass_name in spec.benchmark.get("passes", ["forward"]):
                        case = BenchCase(spec.family, name, tuple(shape), dtype, pass_name)
                        t0 = time.perf_counter()
                        prepared = prepare(case, local, spec)
                        schedule = calibrate(prepared.fn, "cpu", budget_s=0.25)
                        here = measure(prepared.fn, "cpu", schedule).median
                        del prepared
                        t1 = time.perf_counter()
                        timed = child.time_case(case, threads=threads, budget_s=0.25, schedule=schedule)
                        t2 = time.perf_counter()
                        there = statistics.median(timed.samples)
                        ratios.append(there / here)
                        walls["in-process"].append(t1 - t0)
                        walls["child"].append(t2 - t1)
                        print(f"{rep} {case.id}: in-process {here * 1e3:.4f} ms, child {there * 1e3:.4f} ms, ratio "
                              f"{there / here:.3f}; clock ratio {timed.clock_check['ratio']:.3f}; wall "
                              f"{t1 - t0:.2f} s vs {t2 - t1:.2f} s", flush=True)
    finally:
        child.close()
        shutil.rmtree(scratch, ignore_errors=True)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"{name}, {threads} thread(s): {len(ratios)} cases; child / in-process median ratio "
          f"{statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f}); wall per case: in-process "
          f"{statistics.median(walls['in-process']):.2f} s, child {statistics.median(walls['child']):.2f} s (medians)")
    print("uptime:", _uptime())
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(int(args[0]) if args else 1, int(args[1]) if len(args) > 1 else 3,
                  args[2] if len(args) > 2 else "torch.nn.LayerNorm"))
