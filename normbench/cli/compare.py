"""`normbench compare OLD NEW --fail-above 5%`: a CI gate on benchmark medians and conformance verdicts.

OLD and NEW are results folders, raw/<machine-id> folders or record files. Benchmark cases are paired by id on the
same machine; when each side holds exactly one machine, by id alone (a cross-machine comparison, said so). A case
regressed when its median grew by more than the threshold *and* the slowdown lies outside the measured spread
(NEW's first quartile above OLD's third: the two IQRs are disjoint), so run-to-run noise does not fail CI.
Conformance outcomes are paired the same way; an item regressed when its verdict went from pass / report / xfail
to fail / error, or when it is missing from NEW.

Exit codes: 0 no regression, 1 a regression (each one listed), 2 bad input (an unreadable record, a missing,
non-numeric, NaN, zero or negative median or quartile, nothing to compare), with a message naming the file and
case.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from normbench.verdicts import Verdict

VERB = "compare"
OK, REGRESSION, BAD_INPUT = 0, 1, 2
#: verdicts that met the spec's expectation (or were declared / reported only) ...
KEPT = frozenset({Verdict.PASS, Verdict.REPORT, Verdict.XFAIL})
#: ... and those that regress them: any other verdict, except a skip, which is listed but does not fail the gate
SKIPPED = Verdict.SKIP

Key = tuple[str, str]  # (machine id, case or test id)


def threshold(text: str) -> float:
    """'5%' or '5' -> 0.05; '0.05' -> 0.05."""
    value = text.strip()
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage such as 5%") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite percentage")
    if value.endswith("%") or number >= 1:
        number /= 100
    if number < 0:
        raise argparse.ArgumentTypeError("the threshold cannot be negative")
    return number


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(VERB, help="compare two result sets; fail on a slower median outside the measured "
                                       "spread or a conformance verdict that regressed (CI gate)")
    parser.add_argument("old", help="baseline results (folder or record file)")
    parser.add_argument("new", help="results to judge (folder or record file)")
    parser.add_argument("--fail-above", type=threshold, default=threshold("5%"), metavar="PCT",
                        help="fail when a median grows by more than this, beyond the IQRs (default 5%%)")
    parser.add_argument("--metric", choices=["median", "min"], default="median", help="statistic compared")
    parser.add_argument("--all", action="store_true", help="list every case, not only the changed ones")


@dataclass
class Inputs:
    """The entries of one side, by (machine, id), and the problems that make it bad input."""
    bench: dict[Key, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[Key, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _seconds(value: Any) -> bool:
    # bool is an int to Python; a time is a finite positive number
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def read_inputs(source: Path, metric: str) -> Inputs:
    """Every benchmark case and conformance outcome under `source`, each checked before anything is compared."""
    from normbench.store.errors import ResultsError
    from normbench.store.scan import source_files
    from normbench.store.validate import load_record

    side = Inputs()
    if not source.exists():
        side.problems.append(f"{source}: no such file or folder")
        return side
    files = source_files(source)
    if not files:
        side.problems.append(f"{source}: no normbench records found")
    for path in files:
        try:
            record = load_record(path)
        except ResultsError as exc:
            side.problems.append(str(exc))
            continue
        machine = record["machine_id"]
        if record["kind"] == "benchmark":
            for case_id, entry in record["results"].items():
                bad = [f"{key} is {entry.get(key, 'missing')!r}" for key in (f"{metric}_s", "q1_s", "q3_s")
                       if not _seconds(entry.get(key))]
                if not bad and entry["q1_s"] > entry["q3_s"]:
                    bad.append(f"q1_s {entry['q1_s']!r} exceeds q3_s {entry['q3_s']!r}")
                if bad:
                    side.problems.append(f"{path}: case {case_id!r}: {', '.join(bad)} (a finite positive number of "
                                         "seconds is expected, with q1_s <= q3_s)")
                else:
                    side.bench[(machine, case_id)] = entry
        elif record["kind"] == "conformance":
            for test_id, outcome in record["outcomes"].items():
                if not isinstance(outcome.get("verdict"), str) or not outcome["verdict"]:
                    side.problems.append(f"{path}: item {test_id!r}: verdict is {outcome.get('verdict', 'missing')!r}"
                                         " (a verdict such as 'pass' is expected)")
                else:
                    side.outcomes[(machine, test_id)] = outcome
    return side


def pair(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> tuple[
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


def compare_benchmarks(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]], args: argparse.Namespace,
                       ) -> int | None:
    """Print the benchmark comparison; the number of regressions, or None when no case could be paired."""
    pairs, how = pair(old, new)
    if not pairs:
        print(f"normbench compare: no benchmark case in common ({how}; {len(old)} old, {len(new)} new entries)",
              file=sys.stderr)
        return None
    key = f"{args.metric}_s"
    rows, regressions, inside = [], 0, 0
    several = len({machine for machine, *_ in pairs}) > 1
    for machine, case_id, a, b in pairs:
        change = b[key] / a[key] - 1
        slower_beyond, faster_beyond = b["q1_s"] > a["q3_s"], b["q3_s"] < a["q1_s"]
        inside += a["q1_s"] <= b[key] <= a["q3_s"] or b["q1_s"] <= a[key] <= b["q3_s"]
        if change > args.fail_above and slower_beyond:
            status, regressions = "REGRESSION", regressions + 1
        elif change < -args.fail_above and faster_beyond:
            status = "faster"
        elif abs(change) > args.fail_above:
            status = "within spread"  # beyond the threshold, but the IQRs overlap: noise, not a change
        else:
            status = "ok"
        label = f"{machine}: {case_id}" if several else case_id
        rows.append((change, [label, a[key] * 1e3, b[key] * 1e3, f"{change:+.1%}",
                              "yes" if slower_beyond or faster_beyond else "no", status]))
    rows.sort(key=lambda r: -r[0])
    shown = [r for c, r in rows if args.all or abs(c) > args.fail_above]
    print(f"compared {len(rows)} benchmark cases ({how}), {args.metric} per call, threshold {args.fail_above:.1%}, "
          "a slowdown counts only outside the measured spread (IQRs disjoint)")
    changes = sorted(abs(c) for c, _ in rows)
    # Reproducible means a rerun's median inside the first run's IQR (or the reverse).
    print(f"reproducibility: {inside} of {len(rows)} medians lie within the other run's IQR; "
          f"median |change| {changes[len(changes) // 2]:.1%}; IQRs disjoint in {sum(r[4] == 'yes' for _, r in rows)}")
    if shown:
        print(tabulate(shown, headers=["case", f"old {args.metric} ms", f"new {args.metric} ms", "change",
                                       "beyond IQR", "status"], floatfmt=".4g"))
    print(f"{regressions} regression(s) above {args.fail_above:.1%} outside the measured spread"
          + ("" if args.all else f"; {len(rows) - len(shown)} case(s) within the threshold"))
    return regressions


def _pair_outcomes(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> tuple[
        list[tuple[str, str, dict[str, Any], dict[str, Any] | None]], str]:
    """(machine label, test id, old outcome, new outcome or None when missing) for every OLD item compared."""
    old_machines, new_machines = {m for m, _ in old}, {m for m, _ in new}
    if not new:
        return [(m, t, o, None) for (m, t), o in sorted(old.items())], "NEW holds no conformance outcome"
    if old_machines & new_machines:
        mine = sorted(k for k in old if k[0] in new_machines)
        note = "same machine" + (f"; not compared (no NEW record of): {', '.join(sorted(old_machines - new_machines))}"
                                 if old_machines - new_machines else "")
        return [(m, t, old[(m, t)], new.get((m, t))) for m, t in mine], note
    if len(old_machines) == 1 and len(new_machines) == 1:
        o, n = next(iter(old_machines)), next(iter(new_machines))
        paired = [(f"{o} -> {n}", t, outcome, new.get((n, t))) for (_, t), outcome in sorted(old.items())]
        return paired, "DIFFERENT machines"
    return [], "no common machine"


def compare_conformance(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> int | None:
    """Print the verdicts that changed; the number of regressions, or None when the items could not be paired."""
    pairs, how = _pair_outcomes(old, new)
    if not pairs:
        print(f"normbench compare: no conformance machine in common ({how})", file=sys.stderr)
        return None
    several = len({machine for machine, *_ in pairs}) > 1
    rows, regressions = [], 0
    for machine, test_id, a, b in pairs:
        before, after = a["verdict"], b["verdict"] if b is not None else "missing"
        if before == after:
            continue
        if b is None:
            status = "MISSING"
        elif before in KEPT and after == SKIPPED:
            status = "no longer judged (skip)"
        elif before in KEPT and after not in KEPT:
            status = "REGRESSION"
        elif after in KEPT:
            status = "fixed"
        else:
            status = "changed"
        regressions += status in ("MISSING", "REGRESSION")
        summary = (b or {}).get("summary") or ""
        rows.append((status not in ("MISSING", "REGRESSION"), [f"{machine}: {test_id}" if several else test_id,
                                                                before, after, status, summary[:80]]))
    rows.sort(key=lambda r: r[0])
    print(f"compared {len(pairs)} conformance items ({how}): {len(rows)} verdict(s) changed")
    if rows:
        print(tabulate([r for _, r in rows], headers=["item", "old", "new", "status", "new summary"],
                       disable_numparse=True))
    print(f"{regressions} conformance regression(s) (a kept verdict now fails or errs, or the item is missing)")
    return regressions


def run(args: argparse.Namespace) -> int:
    old_path, new_path = Path(args.old), Path(args.new)
    old, new = read_inputs(old_path, args.metric), read_inputs(new_path, args.metric)
    problems = old.problems + new.problems
    if problems:
        for problem in problems:
            print(f"bad input: {problem}", file=sys.stderr)
        print(f"normbench compare: {len(problems)} problem(s) in the inputs; nothing was compared", file=sys.stderr)
        return BAD_INPUT
    results = []
    if old.bench and new.bench:
        results.append(compare_benchmarks(old.bench, new.bench, args))
    elif old.bench or new.bench:
        print(f"benchmarks not compared: only {'OLD' if old.bench else 'NEW'} holds benchmark records")
    # A NEW folder without the conformance OLD has lost every item; a NEW record file of another kind was chosen
    # to compare that kind only.
    if old.outcomes and (new.outcomes or new_path.is_dir()):
        results.append(compare_conformance(old.outcomes, new.outcomes))
    elif new.outcomes:
        print("conformance not compared: OLD holds no conformance records")
    if not results:
        print("normbench compare: nothing to compare (no benchmark or conformance records on both sides)",
              file=sys.stderr)
        return BAD_INPUT
    if None in results:
        return BAD_INPUT
    total = sum(results)
    print(f"normbench compare: {'FAIL, ' + str(total) + ' regression(s)' if total else 'OK, no regression'}")
    return REGRESSION if total else OK
