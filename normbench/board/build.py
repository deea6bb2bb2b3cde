"""Building the leaderboard: a pure function of the stored records, read through normbench.store only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from normbench.board.accuracy import accuracy_table
from normbench.board.claims import claim_plots, claims_table
from normbench.board.conformance import LEGEND, conformance_rows, conformance_table
from normbench.board.model import ClaimPlot, Leaderboard, Table, machines_of
from normbench.board.performance import performance_tables, roofline_table
from normbench.board.plots import plots_of
from normbench.board.ranking import ranking_table
from normbench.store.errors import ResultsError
from normbench.store.scan import scan_records


def _outcomes_by_machine(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["kind"] == "conformance":
            out[r["machine_id"]].extend(o for o in r["outcomes"].values() if "implementation" in o)
    return out


def _bench_by_machine(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["kind"] == "benchmark":
            out[r["machine_id"]].extend(r["results"].values())
    return out


def build_leaderboard(records: list[dict[str, Any]], refused: Iterable[str] = ()) -> Leaderboard:
    """Every table and plot, from the records alone."""
    machines = machines_of(records)
    outcomes = _outcomes_by_machine(records)
    bench = _bench_by_machine(records)
    tables = [ranking_table(machines, outcomes, bench)]
    if outcomes:
        tables += [conformance_table(machines, outcomes), accuracy_table(machines, outcomes)]
    if bench:
        tables.append(roofline_table(machines, records))
        tables += performance_tables(machines, bench)
    figures: list[ClaimPlot] = []
    if any(r["kind"] == "claims" for r in records):
        tables.append(claims_table(machines, records))
        figures = claim_plots(machines, records)
        tables[-1].plots = [p.name for p in figures]
    for m in machines:
        if outcomes.get(m.machine_id):
            headers, rows = conformance_rows(outcomes[m.machine_id])
            profiles = sorted({str(r.get("profile")) for r in records
                               if r["kind"] == "conformance" and r["machine_id"] == m.machine_id})
            tables.append(Table(f"conformance-matrix-{m.label}", f"Conformance matrix on {m.label}", headers, rows,
                                [f"{m.machine_id}: {m.description} · hypothesis profile {', '.join(profiles)}",
                                 LEGEND]))
    return Leaderboard(machines, tables, plots_of(machines, bench), list(map(str, refused)), claim_plots=figures,
                       outcomes=dict(outcomes), sources=_sources(records), bench=dict(bench))


def _sources(records: list[dict[str, Any]]) -> dict[str, str]:
    """Implementation name -> source, from the records' `implementations` summaries or the outcomes."""
    sources: dict[str, str] = {}
    for r in records:
        if r["kind"] != "conformance":
            continue
        for name, entry in (r.get("implementations") or {}).items():
            if isinstance(entry, dict) and entry.get("source"):
                sources.setdefault(name, str(entry["source"]))
        for o in r["outcomes"].values():
            if o.get("implementation") and o.get("source"):
                sources.setdefault(o["implementation"], str(o["source"]))
    return sources


def read_leaderboard(results_dir: Path, sealed: dict[Path, bytes] | None = None
                     ) -> tuple[Leaderboard, list[ResultsError]]:
    """The leaderboard of every record stored under results_dir, and the refusal of each file that is not one
    (listed on the board too, never misread). `sealed` maps the records the calling run wrote to its key
    (normbench.store.seal): one whose bytes are not what that run sealed is refused as a ForgedRecord."""
    records, errors = scan_records(Path(results_dir), sealed)
    return build_leaderboard(records, refused=errors), errors
