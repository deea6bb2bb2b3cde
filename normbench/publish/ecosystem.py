"""The ecosystem leaderboard section: one row per third-party class, from the catalogue and the board's outcomes.

    normbench leaderboard --results-dir results/ecosystem --format ecosystem

writes `<results-dir>/ECOSYSTEM.md`: every class of the catalogue (judged, a copy of a judged class, not judged
with the reason, or its library unavailable), its family and declaration, its verdict from the records, and for
every failing item one line saying what deviates and why, confirmed by a standalone float64 reproduction
(normbench.ecosystem.findings). Run it after `pytest suite ... --results-dir results/ecosystem`. Not one of the
formats a plain `normbench leaderboard` writes: it belongs to the ecosystem's results folder only.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from normbench.board.model import Leaderboard
from normbench.ecosystem import catalogue
from normbench.ecosystem._catalogue import Entry
from normbench.ecosystem.findings import explain, harness_issue
from normbench.float64_ops import REJUDGED_SUMMARY
from normbench.verdicts import Counts, Verdict, inherited_from

FAILING = (Verdict.FAIL, Verdict.ERROR, Verdict.XFAIL)


def _outcomes(board: Leaderboard) -> dict[str, list[dict[str, Any]]]:
    """The board's stored outcomes by implementation, over every machine (in the board's machine order)."""
    by_impl: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcomes in board.outcomes.values():
        for o in outcomes:
            by_impl[o["implementation"]].append(o)
    return by_impl


def _declaration(decl: dict[str, Any]) -> str:
    parts = []
    for key, value in decl.items():
        if key == "note":
            continue
        if key == "dtypes":
            value = "/".join(value)
        parts.append(f"{key}={value}")
    note = decl.get("note")
    return ", ".join(parts) + (f" ({note})" if note else "")


def _item(outcome: dict[str, Any]) -> str:
    test_id = outcome["test_id"]
    return test_id[test_id.index("-", test_id.index("[") + len(outcome["implementation"]) + 1) + 1:-1]


def _verdict(outcomes: list[dict[str, Any]], harness: int) -> str:
    if not outcomes:
        return "not run"
    # a known failure inherited from a torch op the class calls is torch's, said once, not the class's failure
    failing = sum(o.get("verdict") in FAILING and not inherited_from(o) for o in outcomes)
    counts = Counts.of(outcomes)
    inherited = f", {counts.known_text}" if counts.inherited else ""
    judged = sum(o.get("verdict") != Verdict.SKIP for o in outcomes)
    if not judged:  # every item skipped (e.g. no case in the ranks it declares): no verdict, not "conforms"
        why = next((o.get("summary") or "" for o in outcomes if o.get("summary")), "").splitlines()
        return f"not judged: all {len(outcomes)} items skipped" + (f" ({why[0][:200]})" if why else "")
    if not failing:
        return f"conforms ({judged} items{inherited})"
    text = f"{failing} of {judged} items failing{inherited}"
    return text + (f" ({harness} of them normbench's, see below)" if harness else "")


def build_report(board: Leaderboard, entries: list[Entry] | None = None) -> str:
    """ECOSYSTEM.md's text: the catalogue's `entries` (every adapter's by default) against the board's outcomes."""
    t0 = time.perf_counter()
    entries = catalogue() if entries is None else entries
    by_impl, refused = _outcomes(board), board.refused
    rows, details, unexplained, harness_lines = [], [], [], []
    for e in sorted(entries, key=lambda e: (e.library, e.name)):
        source = e.name if e.status != "copy" else e.declaration.get("same as", "")
        outcomes = by_impl.get(source, []) if e.status in ("judged", "copy") else []
        harness = sum(o.get("verdict") in FAILING and harness_issue(o) is not None for o in outcomes)
        if e.status == "judged":
            verdict = _verdict(outcomes, harness)
        elif e.status == "copy":
            verdict = f"as {source}: {_verdict(outcomes, harness)}"
        else:
            verdict = f"{e.status}: {e.reason}"
        decl = _declaration(e.declaration) if e.status != "copy" else f"same source as {source}"
        rows.append(f"| `{e.name}` | {e.family or ''} | {decl} | {verdict} |")
        if e.status != "judged" or e.implementation is None:
            continue
        lines = []
        for o in sorted(outcomes, key=lambda o: o["test_id"]):
            if o.get("verdict") not in FAILING:
                continue
            why = harness_issue(o)
            if why is not None:
                harness_lines.append(f"- `{o['test_id']}`: {why}")
                continue
            found = explain(e.implementation, o)
            if found is None and inherited_from(o):
                # the judging itself reproduced it: with the op computed in float64 the item passes
                again = (o.get("metrics") or {}).get(REJUDGED_SUMMARY, "")
                lines.append(f"- `{_item(o)}`: known failure, inherited from {inherited_from(o)}; with the op in "
                             f"float64 the item passes: {str(again)[:240]}")
            elif found is None:
                summary = (o.get("summary") or "").splitlines()[0][:240] if o.get("summary") else ""
                unexplained.append(f"- `{o['test_id']}`: {summary}")
                lines.append(f"- `{_item(o)}`: UNEXPLAINED (no standalone reproduction): {summary}")
            else:
                cause, explanation, evidence = found
                source = inherited_from(o)
                known = f" known failure, inherited from {source}:" if source else ":"
                lines.append(f"- `{_item(o)}` [{cause}]{known} {explanation}. Reproduced standalone: {evidence}")
        if lines:
            details.append(f"### `{e.name}`\n\n" + "\n".join(lines))
    counts = Counter(e.status for e in entries)
    per_library = Counter((e.library, e.status) for e in entries)
    libraries = sorted({e.library for e in entries})
    out = ["# Ecosystem leaderboard", "",
           "Norm classes that real libraries ship, judged by normbench under their natural declaration "
           "(normbench.ecosystem). Generated by `normbench leaderboard --format ecosystem` from the records of "
           "`pytest suite --no-entry-points --impl-path normbench.ecosystem:implementations --results-dir "
           "results/ecosystem`; the conformance matrix of the same run is LEADERBOARD.md beside this file.", "",
           f"{len(entries)} entries: {counts['judged']} judged, {counts['copy']} identical copies of a judged class, "
           f"{counts['not judged']} not judged (reason given), {counts['unavailable']} unavailable.", "",
           "| library | judged | copies | not judged | unavailable |", "|---|---|---|---|---|"]
    out += [f"| {lib} | {per_library[(lib, 'judged')]} | {per_library[(lib, 'copy')]} | "
            f"{per_library[(lib, 'not judged')]} | {per_library[(lib, 'unavailable')]} |" for lib in libraries]
    out += ["", "Every failing item below is a deviation confirmed by a standalone reproduction against a float64 "
            "computation (normbench/ecosystem/findings.py), on the module built from its declaration.", "",
            "## Classes", "", "| class | family | declaration | verdict |", "|---|---|---|---|", *rows, "",
            "## Failing items, one line each", "", *(details or ["none"]), ""]
    if harness_lines:
        out += ["## Failures that are normbench's, not the module's (reported, not findings)", "", *harness_lines, ""]
    if unexplained:
        out += ["## Unexplained failing items (no standalone reproduction yet)", "", *unexplained, ""]
    if refused:
        out += ["## Refused records", "", *(f"- {r}" for r in refused), ""]
    out += [f"_Report built in {time.perf_counter() - t0:.1f} s._", ""]
    return "\n".join(out)


class EcosystemPublisher:
    name = "ecosystem"
    outputs = ("ECOSYSTEM.md",)
    #: only where asked (--format ecosystem): a plain leaderboard's results folder holds no ecosystem run
    default = False

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        path = Path(out_dir) / "ECOSYSTEM.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(build_report(board), encoding="utf-8")
        return [path]
