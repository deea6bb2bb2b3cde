"""A plugin author's loop: the wall time of `pytest --pyargs normbench.suite --impl NAME -p no:xdist -q --no-record`
from an empty folder, with the forkserver started from the pytest entry point (normbench_forkserver) and at configure
(NORMBENCH_EARLY_FORKSERVER=0), alternated so that both see the same machine.

    python suite/benchmarks/one_implementation.py [--impl torch.nn.LayerNorm] [--rounds 5]

Prints each run and the medians, with the load average before and after: quote them together (the machines are
shared). Runs as CI does, with bytecode caching on (a user's machine writes its caches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(impl: str, early: bool, folder: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NORMBENCH_EARLY_FORKSERVER"] = "1" if early else "0"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "normbench.suite", "--impl", impl,
                           "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "--no-record"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return elapsed, last


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="torch.nn.LayerNorm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    times: dict[bool, list[float]] = {True: [], False: []}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        one_run(args.impl, True, folder)  # warm: bytecode caches and the page cache, in neither figure
        for i in range(args.rounds):
            for early in (i % 2 == 0, i % 2 != 0):
                elapsed, last = one_run(args.impl, early, folder)
                times[early].append(elapsed)
                print(f"  {'entry point' if early else 'configure  '}  {elapsed:6.2f} s  {last}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    early, late = statistics.median(times[True]), statistics.median(times[False])
    print(f"median wall time, forkserver started from the entry point: {early:.2f} s; at configure: {late:.2f} s "
          f"({late - early:+.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
