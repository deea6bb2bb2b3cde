"""Throughput benchmarks of every implementation × spec benchmark shape × dtype × pass × device.

Not collected by a plain `pytest suite` (the name does not match test_*.py, so the conformance run stays fast);
run it with normbench's benchmark plugin, serially (never with -n):

    pytest -p normbench.bench.pytest_plugin suite/benchmarks --benchmark-json=bench.json

or simply `normbench run`. Each case is timed by pytest-benchmark on the schedule normbench calibrates, and
recorded under <results-dir>/raw/<machine-id>/benchmark-<device>.json (see normbench.bench.pytest_plugin).
"""

from normbench.bench.pytest_plugin import run_bench_case


def test_throughput(benchmark, bench_case, normbench_bench):
    run_bench_case(benchmark, bench_case, normbench_bench)
