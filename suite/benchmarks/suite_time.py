"""Where a suite run's time went, from its record: the items' own time per check, per family and per process that
judged them, and (given the run's wall time) how close the run came to its items' time divided by the workers.

    pytest suite -n 2 -q --results-dir DIR        # note pytest's "in N s"
    python suite/benchmarks/suite_time.py DIR [--wall N] [--workers 2] [--top 25]

Every outcome records its item's wall time (`duration_s`: in the judging process, from request to verdict), so this
reads the run's record instead of timing anything itself; quote it with the run's load average. A second DIR prints
both runs side by side (per check: items, total seconds, milliseconds per item).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any


def outcomes(folder: Path) -> dict[str, dict[str, Any]]:
    records = sorted(folder.glob("raw/*/conformance.json"))
    if not records:
        raise SystemExit(f"{folder}: no raw/*/conformance.json (a results folder of `pytest suite --results-dir`)")
    found: dict[str, dict[str, Any]] = {}
    for path in records:
        found.update(json.loads(path.read_text())["outcomes"])
    return found


def totals(items: dict[str, dict[str, Any]], key: str) -> dict[str, tuple[int, float]]:
    count: collections.Counter[str] = collections.Counter()
    seconds: collections.Counter[str] = collections.Counter()
    for outcome in items.values():
        if key == "judged_in":
            name = (outcome.get("metrics") or {}).get("judged_in", "plugin process")
        else:
            name = str(outcome.get(key, "?"))
        count[name] += 1
        seconds[name] += float(outcome.get("duration_s") or 0.0)
    return {name: (count[name], seconds[name]) for name in count}


def table(title: str, runs: list[dict[str, tuple[int, float]]], top: int) -> list[str]:
    names = sorted(set().union(*runs), key=lambda n: -max(r.get(n, (0, 0.0))[1] for r in runs))[:top]
    head = f"{title:<34}" + "".join(f"{'items':>7}{'s':>9}{'ms/item':>9}" for _ in runs)
    lines = [head, "-" * len(head)]
    for name in names:
        cells = ""
        for run in runs:
            n, s = run.get(name, (0, 0.0))
            cells += f"{n:>7}{s:>9.1f}{(1000 * s / n if n else 0.0):>9.0f}"
        lines.append(f"{name[:34]:<34}{cells}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--wall", type=float, default=None, help="the run's wall time (pytest's 'in N s')")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    runs = [outcomes(folder) for folder in args.folders]
    for folder, items in zip(args.folders, runs, strict=True):
        total = sum(float(o.get("duration_s") or 0.0) for o in items.values())
        each = 1000 * total / max(len(items), 1)
        line = f"{folder}: {len(items)} items, {total:.1f} s of item time ({each:.0f} ms each)"
        if args.wall is not None and len(runs) == 1:
            per_worker = total / args.workers
            line += (f"; {per_worker:.1f} s per worker of {args.workers}, wall {args.wall:.1f} s = "
                     f"{args.wall / per_worker:.2f}x the items' time per worker")
        print(line)
    for title, key in (("check", "check"), ("family", "family"), ("judged in", "judged_in")):
        print()
        print("\n".join(table(title, [totals(items, key) for items in runs], args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
