"""What one more implementation costs a conformance run as the catalogue grows: `pytest suite -n 2 --no-record -q`
with 1, 10 and 40 built-in implementations (`--impl` repeated), the sizes interleaved round after round so every
size sees the same load, then the line wall = fixed + n x per-implementation fitted to the medians.

    python suite/benchmarks/scale_out.py [ROUNDS [SIZE ...]]

The selections are nested (each size's implementations include the smaller one's) and fixed: torch.nn.LayerNorm
first, then the other built-ins in a seeded shuffle, so a rerun judges the same ones. Prints /proc/loadavg before
and after, every run's wall time and pytest's last line, the median per size and the fit. The machine may be shared:
quote the figures with the load averages printed beside them.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1, 10, 40)
ROUNDS = 3
FIRST = "torch.nn.LayerNorm"  # the implementation the single-implementation goal of issue 17 names
SEED = 17


def builtin_names() -> list[str]:
    """normbench's own implementations (torch's, the float64 references, the seed families): what `pytest suite`
    judges with no plugin installed."""
    from normbench.builtins import reference_implementations, torch_implementations
    from normbench.families import implementations

    return sorted({i.name for i in torch_implementations() + reference_implementations() + implementations()})


def nested_selection(names: list[str], size: int, first: str = FIRST, seed: int = SEED) -> list[str]:
    """The first `size` of a fixed order of `names`: `first`, then the rest shuffled with `seed`."""
    if first not in names:
        raise ValueError(f"{first} is not among the implementations")
    if not 1 <= size <= len(names):
        raise ValueError(f"size {size}: there are {len(names)} implementations")
    rest = sorted(n for n in names if n != first)
    random.Random(seed).shuffle(rest)
    return [first, *rest][:size]


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (x, y) points; x must take two values at least."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        raise ValueError("a line needs points at two different sizes at least")
    mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def suite_command(names: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "suite", "-n", "2", "--no-record", "-q",
            *[arg for name in names for arg in ("--impl", name)]]


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def timed_run(names: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(suite_command(names), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    return wall, f"exit {proc.returncode}: {lines[-1] if lines else proc.stderr.strip()[-200:]}"


def main(rounds: int = ROUNDS, sizes: tuple[int, ...] = SIZES) -> int:
    names = builtin_names()
    selections = {size: nested_selection(names, size) for size in sizes}
    for size, chosen in selections.items():
        print(f"{size:3d}: {' '.join(chosen)}")
    print("$", " ".join(["pytest", *suite_command(selections[max(sizes)])[3:]]))
    print(f"loadavg before: {loadavg()}", flush=True)
    walls: dict[int, list[float]] = {size: [] for size in sizes}
    for round_index in range(rounds):
        for size in sizes:
            wall, last = timed_run(selections[size])
            walls[size].append(wall)
            print(f"round {round_index} n={size:3d}: {wall:7.2f} s  {last}  (loadavg {loadavg()})", flush=True)
    print(f"loadavg after: {loadavg()}")
    medians = {size: statistics.median(w) for size, w in walls.items()}
    fixed, per = fit_line(list(medians.items()))
    print(f"\n{'n':>3} {'median s':>9} {'min s':>7} {'max s':>7} {'fit s':>7} {'s per impl':>10}")
    for size in sizes:
        print(f"{size:3d} {medians[size]:9.2f} {min(walls[size]):7.2f} {max(walls[size]):7.2f} "
              f"{fixed + per * size:7.2f} {medians[size] / size:10.2f}")
    print(f"fit over the medians: wall = {fixed:.2f} s + {per:.2f} s x n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    argv = sys.argv[1:]
    sys.exit(main(int(argv[0]) if argv else ROUNDS, tuple(map(int, argv[1:])) or SIZES))
