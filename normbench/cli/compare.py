"""`normbench compare OLD NEW --fail-above 5%`: a regression gate on benchmark medians (for CI).

OLD and NEW are results folders, raw/<machine-id> folders or benchmark record files. Cases are paired by id on
the same machine; when each side holds exactly one machine, by id alone (a cross-machine comparison, said so).
Exit 1 when any case's median grew by more than the threshold, 0 otherwise, 2 when nothing could be paired.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

VERB = "compare"


def threshold(text: str) -> float:
    """'5%' or '5' -> 0.05; '0.05' -> 0.05."""
    value = text.strip()
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage such as 5%") from None
    if value.endswith("%") or number >= 1:
        number /= 100
    if number < 0:
        raise argparse.ArgumentTypeError("the threshold cannot be negative")
    return number


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(VERB, help="compare two benchmark result sets; fail on a regression (CI gate)")
    parser.add_argument("old", help="baseline results (folder or record file)")
    parser.add_argument("new", help="results to judge (folder or record file)")
    parser.add_argument("--fail-above", type=threshold, default=threshold("5%"), metavar="PCT",
                        help="fail when a median grows by more than this (default 5%%)")
    parser.add_argument("--metric", choices=["median", "min"], default="median", help="statistic compared")
    parser.add_argument("--all", action="store_true", help="list every case, not only the changed ones")


def _entries(source: Path) -> dict[tuple[str, str], dict[str, Any]]:
    from normbench.results import load_record

    if source.is_file():
        files = [source]
    elif (source / "raw").is_dir():
        files = sorted((source / "raw").glob("*/benchmark-*.json"))
    else:
        files = sorted(source.glob("benchmark-*.json"))
    out = {}
    for path in files:
        record = load_record(path)
        if record["kind"] == "benchmark":
            for case_id, entry in record["results"].items():
                out[(record["machine_id"], case_id)] = entry
    return out


def pair(old: dict[tuple[str, str], dict[str, Any]], new: dict[tuple[str, str], dict[str, Any]]) -> tuple[
        list[tuple[str, str, dict[str, Any], dict[str, Any]]], str]:
    """(machine label, case id, old entry, new entry) for every pairable case, and a note on how they were paired."""
    common = sorted(set(old) & set(new))
    if common:
        return [(m, c, old[(m, c)], new[(m, c)]) for m, c in common], "same machine"
    old_machines, new_machines = {m for m, _ in old}, {m for m, _ in new}
    if len(old_machines) == 1 and len(new_machines) == 1:
        o, n = next(iter(old_machines)), next(iter(new_machines))
        ids = sorted({c for _, c in old} & {c for _, c in new})
        return [(f"{o} -> {n}", c, old[(o, c)], new[(n, c)]) for c in ids], "DIFFERENT machines"
    return [], "no common machine"


def run(args: argparse.Namespace) -> int:
    from normbench.results import ResultsError

    try:
        old, new = _entries(Path(args.old)), _entries(Path(args.new))
    except ResultsError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    pairs, how = pair(old, new)
    if not pairs:
        print(f"normbench compare: no benchmark case in common ({how}; {len(old)} old, {len(new)} new entries)",
              file=sys.stderr)
        return 2
    key = f"{args.metric}_s"
    rows, regressions, inside = [], 0, 0
    several = len({machine for machine, *_ in pairs}) > 1
    for machine, case_id, a, b in pairs:
        change = b[key] / a[key] - 1
        beyond = b["q1_s"] > a["q3_s"] or b["q3_s"] < a["q1_s"]
        inside += a["q1_s"] <= b[key] <= a["q3_s"] or b["q1_s"] <= a[key] <= b["q3_s"]
        if change > args.fail_above:
            status, regressions = "REGRESSION", regressions + 1
        elif change < -args.fail_above:
            status = "faster"
        else:
            status = "ok"
        label = f"{machine}: {case_id}" if several else case_id
        rows.append((change, [label, a[key] * 1e3, b[key] * 1e3, f"{change:+.1%}", "yes" if beyond else "no", status]))
    rows.sort(key=lambda r: -r[0])
    shown = [r for c, r in rows if args.all or abs(c) > args.fail_above]
    print(f"compared {len(rows)} cases ({how}), {args.metric} per call, threshold {args.fail_above:.1%}")
    changes = sorted(abs(c) for c, _ in rows)
    # Reproducibility in the sense of issue 4: a rerun's median inside the first run's IQR (or the reverse).
    print(f"reproducibility: {inside} of {len(rows)} medians lie within the other run's IQR; "
          f"median |change| {changes[len(changes) // 2]:.1%}; IQRs disjoint in {sum(r[4] == 'yes' for _, r in rows)}")
    if shown:
        print(tabulate(shown, headers=["case", f"old {args.metric} ms", f"new {args.metric} ms", "change",
                                       "beyond IQR", "status"], floatfmt=".4g"))
    print(f"{regressions} regression(s) above {args.fail_above:.1%}; {len(rows) - len(shown)} case(s) within it"
          if not args.all else f"{regressions} regression(s) above {args.fail_above:.1%}")
    return 1 if regressions else 0
