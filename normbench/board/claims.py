"""The claims lab: each claim's verdict per machine, and the figures the claims recorded."""

from __future__ import annotations

from typing import Any

from normbench.board.model import ClaimPlot, Machine, Table, column


def claims_table(machines: list[Machine], records: list[dict[str, Any]]) -> Table:
    claims: dict[str, dict[str, Any]] = {}
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r["kind"] == "claims":
            for cid, c in r["claims"].items():
                claims.setdefault(cid, c)
                per[(cid, r["machine_id"])] = c
    headers = ["claim", "source"]
    for m in machines:
        headers += [column("measured here", m, machines), column("verdict", m, machines)]
    rows = []
    for cid in sorted(claims):
        c = claims[cid]
        row: list[Any] = [c.get("claim"), c.get("source")]
        for m in machines:
            got = per.get((cid, m.machine_id))
            row += [got.get("measured"), got.get("verdict")] if got else [None, None]
        rows.append(row)
    return Table("claims", "Claims lab", headers, rows,
                 ["`normbench claims` re-measures published claims on the machine at hand; a verdict says whether "
                  "the claim holds HERE (device, threads, torch version), not whether the paper was right."])


def claim_plots(machines: list[Machine], records: list[dict[str, Any]]) -> list[ClaimPlot]:
    """The figures a claim recorded (details.plot: title, axes and curves), one per claim and machine."""
    plots = []
    ids = {m.machine_id for m in machines}
    for r in sorted((r for r in records if r["kind"] == "claims" and r["machine_id"] in ids),
                    key=lambda r: r["machine_id"]):
        for cid, c in sorted(r["claims"].items()):
            fig = (c.get("details") or {}).get("plot")
            if not fig:
                continue
            panels = {panel: {name: [tuple(pt) for pt in pts] for name, pts in curves.items()}
                      for panel, curves in fig["panels"].items()}
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in cid)
            plots.append(ClaimPlot(f"claim-{safe}-{r['machine_id']}", f"{c.get('claim')} · {r['machine_id']}",
                                   panels, fig.get("x_label", ""), fig.get("y_label", ""), bool(fig.get("log_y"))))
    return plots


