"""Conformance: the matrix of symbols per property (also printed at the end of `pytest suite`) and the verdict
of each implementation per machine."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from normbench.board.model import Machine, Table, column
from normbench.verdicts import Verdict, status_of

LEGEND = ("✓ expectation met (H: property holds, V: property violated, as the spec requires) · "
          "✗ expectation NOT met · E error (crash, timeout, tampering: no verdict) · R reported only · "
          "xf known failure · - skipped · ∅ planned but not judged in that run")


def _symbol(outcome: dict[str, Any]) -> str:
    verdict = outcome.get("verdict")
    observed = {"holds": "H", "violated": "V"}.get(outcome.get("observed") or "", "")
    return {Verdict.PASS: f"✓{observed}", Verdict.FAIL: f"✗{observed}", Verdict.ERROR: "E", Verdict.SKIP: "-",
            Verdict.REPORT: f"R{observed}", Verdict.XFAIL: "xf", Verdict.UNJUDGED: "∅"}.get(str(verdict), "?")


def _worst(symbols: list[str]) -> str:
    for marker in ("E", "✗", "xf", "∅", "?"):
        for s in symbols:
            if s.startswith(marker):
                return s
    return symbols[0] if symbols else ""


def _cell(outcomes: list[dict[str, Any]]) -> str:
    """One cell: the worst symbol per mode (train/eval shown separately where they differ)."""
    by_mode: dict[str, list[str]] = defaultdict(list)
    for o in outcomes:
        by_mode[o.get("mode", "any")].append(_symbol(o))
    if len(by_mode) == 1:
        return _worst(next(iter(by_mode.values())))
    return " ".join(f"{mode[:2]}:{_worst(s)}" for mode, s in sorted(by_mode.items(), key=lambda kv: kv[0] != "train"))


def conformance_rows(outcomes: Iterable[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    properties: list[str] = []
    for o in outcomes:
        if "implementation" not in o:
            continue
        grouped[(o["family"], o["implementation"])][o["property"]].append(o)
        if o["property"] not in properties:
            properties.append(o["property"])
    properties.sort()
    headers = ["family", "implementation", "verdict", *properties]
    rows = []
    for (family, impl), props in sorted(grouped.items()):
        verdict = status_of(o for os_ in props.values() for o in os_).short
        rows.append([family, impl, verdict, *(_cell(props[p]) if p in props else "" for p in properties)])
    return headers, rows


def conformance_matrix_text(outcomes: Iterable[dict[str, Any]]) -> str:
    headers, rows = conformance_rows(outcomes)
    # The terminal is narrow: transpose so properties run down the side.
    if not rows:
        return "no outcomes"
    table = [[h, *(r[i] for r in rows)] for i, h in enumerate(headers) if i != 1]
    impl_headers = ["property", *(r[1] for r in rows)]
    return tabulate(table[1:], headers=impl_headers, tablefmt="simple") + "\n" + LEGEND


# -- the leaderboard model ------------------------------------------------------------------------------------

def conformance_table(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]]) -> Table:
    impls: set[tuple[str, str]] = set()
    per: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for mid, os_ in outcomes.items():
        for o in os_:
            impls.add((o["family"], o["implementation"]))
            per[(mid, o["family"], o["implementation"])].append(o)
    headers = ["family", "implementation", *(column("verdict", m, machines) for m in machines)]
    rows = []
    for family, impl in sorted(impls):
        cells = []
        for m in machines:
            got = per.get((m.machine_id, family, impl))
            if not got:
                cells.append("")
                continue
            status = status_of(got)
            cells.append(f"{status.text} · {status.counts.describe()}")
        rows.append([family, impl, *cells])
    return Table("conformance", "Conformance", headers, rows,
                 ["An implementation conforms when every property meets its spec's expectation (holds, or is "
                  "violated where the family must not have it). A declared known failure (suite/known_failures/, "
                  "with its reason) is said as one: \"conforms with N known failures\"; a failure or an error "
                  "(no verdict) is \"does not conform\"; an item planned but not judged, or nothing judged, is "
                  "\"not judged\". Items: judged (a verdict), skipped (with the reason), errors, not judged."])


