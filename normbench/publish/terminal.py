"""The end-of-run summary of `pytest suite`: what failed and why, laid out for the terminal's width.

The full conformance matrix is one column per implementation and several hundred characters wide; it goes to a
file (and to the screen with ``-v`` / ``--matrix``). On screen there is one block per family, implementations as
rows, with the verdict, the number of failing items and the failing properties by name (issue 9), wrapped so that
no line is wider than the terminal.
"""

from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from normbench.leaderboard import conformance_matrix_text

#: how a failing item's verdict is marked after its property's name
_MARKS = {"fail": "", "error": " (E)", "xfail": " (xf)", "unjudged": " (∅)"}
_BAD = ("fail", "error", "xfail", "unjudged")


def _verdict(counts: Counter[str]) -> str:
    failing = counts["fail"] + counts["error"]
    if failing or counts["unjudged"]:
        parts = [f"{failing} failing" if failing else "", f"{counts['unjudged']} not judged" if counts["unjudged"]
                 else "", f"{counts['xfail']} known" if counts["xfail"] else ""]
        return "NOT conforming: " + ", ".join(p for p in parts if p)
    if counts["xfail"]:
        return f"{counts['xfail']} known failures"
    return f"conforms ({sum(counts.values())} items)"


def summary_lines(outcomes: Iterable[Mapping[str, Any]], width: int) -> list[str]:
    """One block per family; no line longer than `width` (at least 60)."""
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
            counts = Counter(str(o.get("verdict")) for o in items)
            failing: dict[str, str] = {}
            for o in items:
                verdict = str(o.get("verdict"))
                if verdict in _BAD:
                    failing.setdefault(str(o.get("property")), _MARKS[verdict])
            label = impl if len(impl) <= name_w else impl[: name_w - 1] + "…"
            rows.append((family, label, [f"{prop}{mark}" for prop, mark in sorted(failing.items())], _verdict(counts)))
    verdict_w = max(len(r[3]) for r in rows) + 2
    rest_w = width - name_w - verdict_w - 4
    indent = " " * (name_w + verdict_w + 4)
    if rest_w < 30:  # too narrow for three columns: the failing properties go under the row, indented
        rest_w, indent = width - 6, " " * 6
    lines: list[str] = []
    for family, label, failing_props, verdict in rows:
        if not label:
            lines.append(family)
            continue
        wrapped = textwrap.wrap(", ".join(failing_props), rest_w) or [""]
        head = f"  {label:<{name_w}}  {verdict:<{verdict_w}}"
        if indent == " " * 6:
            lines.append(head.rstrip())
            lines += [indent + w for w in wrapped if w]
        else:
            lines.append(f"{head}{wrapped[0]}".rstrip())
            lines += [indent + more for more in wrapped[1:]]
    lines += textwrap.wrap("failing properties: (E) error: crash, timeout or tampering, no verdict · (xf) known "
                           "failure · (∅) planned but not judged in this run", width)
    return lines


def write_matrix(outcomes: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """The full matrix (every property × implementation) to a file, for when the screen is too narrow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(conformance_matrix_text(list(outcomes)) + "\n", encoding="utf-8")
    return path

