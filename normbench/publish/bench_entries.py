"""The stored benchmark entries behind a board's performance figures, for what the board's tables do not say:
each figure's spread (``gbps_q1`` / ``gbps_q3``: the plots' error bars) and whether its timing can be trusted
(``untrusted``: a reason, set by normbench.bench.trust where a figure beats its roofline or disagrees with the
benchmark process's clock).

A board that keeps its entries (``Leaderboard.bench``) is read; one that does not is completed from the records
under the results folder it is published into, the same records `normbench leaderboard` built it from.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from normbench import deploy
from normbench.board.model import Leaderboard
from normbench.store.scan import scan_records

#: machine id, implementation, variant, shape ("1024x768"), dtype, pass, device: one timed case, as the performance
#: tables' rows name it
FigureKey = tuple[str, str, str, str, str, str, str]


def bench_entries(board: Leaderboard, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Machine id -> the benchmark entries of that machine's records (the harness's roofline copies included)."""
    kept = getattr(board, "bench", None)
    if kept:
        return kept
    if not (Path(out_dir) / "raw").is_dir():
        return {}
    records, _ = scan_records(Path(out_dir))  # a record it cannot read is refused in the board already
    machines = {m.machine_id for m in board.machines}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "benchmark" and r.get("machine_id") in machines:
            out[r["machine_id"]].extend(r["results"].values())
    return dict(out)


def figure_key(machine_id: str, entry: dict[str, Any]) -> FigureKey:
    return (machine_id, str(entry["implementation"]), deploy.record_name(entry),
            "x".join(map(str, entry["shape"])), str(entry["dtype"]), str(entry["pass"]), str(entry["device"]))


def index_entries(entries: dict[str, list[dict[str, Any]]]) -> dict[FigureKey, dict[str, Any]]:
    return {figure_key(mid, e): e for mid, es in entries.items() for e in es}


def untrusted_reason(entry: dict[str, Any] | None) -> str | None:
    """Why the figure's timing cannot be trusted, or None (also for records written before the key existed)."""
    reason = (entry or {}).get("untrusted")
    return str(reason) if reason else None


def gbps_spread(entry: dict[str, Any] | None) -> tuple[float, float] | None:
    """(q1, q3) of the figure's GB/s over its timed calls, where the record keeps them."""
    q1, q3 = (entry or {}).get("gbps_q1"), (entry or {}).get("gbps_q3")
    if isinstance(q1, int | float) and isinstance(q3, int | float):
        return float(q1), float(q3)
    return None
