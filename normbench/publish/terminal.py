"""The end-of-run summary of `pytest suite`: what failed and why, laid out for the terminal's width.

The full conformance matrix is one column per implementation and several hundred characters wide; it goes to a file (and
to the screen with ``-v`` / ``--matrix``). On screen there is one block per family, implementations as rows, with the
verdict and the item counts in the words of normbench.verdicts (the same as the leaderboard, the site and the badges)
and the failing properties by name (what to fix, not only that something failed), wrapped so that no line is wider than
the terminal.
"""

from __future__ import annotations

import shutil
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from normbench.board.conformance import conformance_matrix_text
from normbench.board.model import Leaderboard
from normbench.verdicts import NOT_JUDGED, Counts, Status, Verdict, group, inherited_from, plural, status_of

#: how a failing item's verdict is marked after its property's name
_MARKS = {Verdict.FAIL: "", Verdict.ERROR: " (E)", Verdict.XFAIL: " (xf)", Verdict.UNJUDGED: " (∅)"}
_BAD = tuple(_MARKS)


def _details(items: list[Mapping[str, Any]], status: Status) -> list[str]:
    """What the row says after its verdict, as the pieces a line may break between: the item counts, then the
    failing properties by name (or, where nothing was judged and items were skipped, why)."""
    failing: dict[str, str] = {}
    for o in items:
        verdict = str(o.get("verdict"))
        if verdict in _BAD:
            mark = " (xf inherited)" if inherited_from(o) else _MARKS[verdict]
            failing.setdefault(str(o.get("property")), mark)
    pieces = [status.counts.describe()]
    if failing:
        props = [f"{prop}{mark}" for prop, mark in sorted(failing.items())]
        pieces += [f"· {props[0]}", *props[1:]]
    elif status.key == NOT_JUDGED and status.counts.skipped:
        reasons = dict.fromkeys(str(o.get("summary", "")) for o in items if group(o.get("verdict")) == "skipped")
        pieces += ["· " + "; ".join(r for r in reasons if r)]
    return pieces


def _pack(pieces: list[str], width: int) -> list[str]:
    """Pieces joined by ", " (after the counts by " "), a line broken only between pieces; a piece longer than the
    width (a skip reason) is wrapped on its own."""
    lines: list[str] = []
    for n, piece in enumerate(pieces):
        sep = ", " if n > 1 else " "
        if lines and len(lines[-1]) + len(sep) + len(piece) <= width:
            lines[-1] += sep + piece
        else:
            if lines and sep == ", ":
                lines[-1] += ","
            lines += textwrap.wrap(piece, width, break_on_hyphens=False) or [""]
    return lines


def summary_lines(outcomes: Iterable[Mapping[str, Any]], width: int) -> list[str]:
    """One block per family, one row per implementation: its verdict (normbench.verdicts), its item counts and its
    failing properties; no line longer than `width` (at least 60)."""
    width = max(60, width)
    by_family: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for o in outcomes:
        if o.get("implementation") and o.get("family"):
            by_family[str(o["family"])][str(o["implementation"])].append(o)
    if not by_family:
        return ["no conformance items were judged"]
    names = [impl for impls in by_family.values() for impl in impls]
    name_w = min(max(map(len, names)), max(20, width // 3))
    rows: list[tuple[str, str, list[str], str]] = []
    for family in sorted(by_family):
        rows.append((family, "", [], ""))
        for impl, items in sorted(by_family[family].items()):
            status = status_of(items)
            label = impl if len(impl) <= name_w else impl[: name_w - 1] + "…"
            rows.append((family, label, _details(items, status), status.text))
    verdict_w = max(len(r[3]) for r in rows) + 2
    rest_w = width - name_w - verdict_w - 4
    # too narrow for three columns: the verdict follows the name, the counts and properties go under the row
    stacked = rest_w < 30
    indent = " " * (6 if stacked else name_w + verdict_w + 4)
    if stacked:
        rest_w = width - 6
    lines: list[str] = []
    for family, label, details, verdict in rows:
        if not label:
            lines.append(family)
            continue
        wrapped = _pack(details, rest_w - 1)
        if stacked:
            lines += textwrap.wrap(f"{label}  {verdict}", width - 2, initial_indent="  ", subsequent_indent=indent)
            lines += [indent + w for w in wrapped if w]
        else:
            lines.append(f"  {label:<{name_w}}  {verdict:<{verdict_w}}{wrapped[0]}".rstrip())
            lines += [indent + more for more in wrapped[1:]]
    lines += textwrap.wrap("items: judged (a verdict), skipped (with the reason), errors (crash, timeout or "
                           "tampering: no verdict), not judged (planned, not run) · failing properties: (E) error · "
                           "(xf) declared known failure · (xf inherited) a torch op's known failure, inherited · "
                           "(∅) planned but not judged in this run", width)
    return lines


def write_matrix(outcomes: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """The full matrix (every property × implementation) to a file, for when the screen is too narrow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(conformance_matrix_text(list(outcomes)) + "\n", encoding="utf-8")
    return path



def totals_line(outcomes: Iterable[Mapping[str, Any]]) -> str:
    """The run's total, with the same item groups as every row: "2 implementations, 92 items: 86 judged, 6 skipped"."""
    per: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for o in outcomes:
        if o.get("implementation"):
            per[str(o["implementation"])].append(o)
    total = sum((Counts.of(items) for items in per.values()), Counts())
    return f"{plural(len(per), 'implementation')}, {total.describe()}"


class TerminalPublisher:
    """The end-of-run summary as a publisher of the stored records (`normbench leaderboard --format terminal`): per
    machine, the rows `pytest suite` prints at its end and the totals line, for the outcomes the store holds. A run
    prints the same rows for its own outcomes (normbench.pytest_plugin, with summary_lines and totals_line)."""

    name = "terminal"
    outputs: tuple[str, ...] = ()  # it prints; it writes no file
    #: only where asked: a leaderboard written after every run must not print the whole store each time
    default = False

    def lines(self, board: Leaderboard, width: int) -> list[str]:
        lines: list[str] = []
        for machine in board.machines:
            outcomes = board.outcomes.get(machine.machine_id)
            if outcomes:
                lines += [f"{machine.label} {machine.machine_id}: {machine.description}",
                          *summary_lines(outcomes, width), totals_line(outcomes)]
        return lines or ["no conformance items were judged"]

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        print("\n".join(self.lines(board, shutil.get_terminal_size().columns)))
        return []


def bench_summary_lines(entries: Iterable[Mapping[str, Any]], width: int = 120) -> list[str]:
    """The benchmark session's table, one row per timed implementation (and variant, and device where several):
    its median time, GB/s, % roofline and × baseline, as geometric means over its cases when it has several, and
    the baseline's own row; × baseline only where the baseline was timed in the same session and case."""
    from tabulate import tabulate

    from normbench import deploy
    from normbench.board.performance import VARIANT_ORDER, geomean

    norms = [e for e in entries if e.get("family") != "roofline" and e.get("median_s")]
    if not norms:
        return []
    index = {(e["implementation"], tuple(e["shape"]), e["dtype"], e["pass"], e["device"], deploy.record_name(e)): e
             for e in norms}
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for e in norms:
        groups[(e["family"], e["implementation"], deploy.record_name(e), e["device"])].append(e)
    devices = {k[3] for k in groups}
    rows, missing = [], set()
    name_w = max(16, width - 90)
    for (_family, impl, variant, device), cases in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], VARIANT_ORDER.get(kv[0][2], 9), kv[0][3])):
        speedups = []
        for e in cases:
            base = index.get((e.get("baseline"), tuple(e["shape"]), e["dtype"], e["pass"], e["device"],
                              deploy.record_name(e)))
            if base is not None:
                speedups.append(base["median_s"] / e["median_s"])
            elif e.get("baseline"):
                missing.add(str(e["baseline"]))
        speed = geomean(speedups)
        label = impl if len(impl) <= name_w else impl[: name_w - 1] + "…"
        untrusted = sum(bool(e.get("untrusted")) for e in cases)
        rows.append([label, variant, *([device] if len(devices) > 1 else []),
                     f"UNTRUSTED({untrusted})" if untrusted else "-", len(cases),
                     f"{geomean(e['median_s'] for e in cases) * 1e3:.4g}", f"{geomean(e['gbps'] for e in cases):.1f}",
                     f"{geomean(e['roofline_pct'] for e in cases):.0f}%", f"{speed:.2f}x" if speed else "-"])
    headers = ["implementation", "variant", *(["device"] if len(devices) > 1 else []), "trust", "cases", "median ms",
               "GB/s", "% roofline", "× baseline"]
    lines = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                     colalign=("left", "left", *(["left"] if len(devices) > 1 else []), "left", "right", "right",
                               "right", "right", "right")).splitlines()
    note = ("geometric means over each implementation's cases (shapes, dtypes, passes); × baseline > 1: faster than "
            "the family's baseline in the same case; trust: UNTRUSTED(N) = N of its cases are untrusted figures "
            "(normbench.bench.trust), never ranked")
    if missing:
        note += f"; '-': the baseline ({', '.join(sorted(missing))}) was not timed in this session (add --impl)"
    return lines + textwrap.wrap(note, width)
