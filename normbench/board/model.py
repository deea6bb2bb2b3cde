"""The leaderboard model every publisher renders: tables, plot series, machines, the board itself."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from normbench import deploy


@dataclass
class Table:
    """One table of the leaderboard; every publisher renders the same tables."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    #: a plot (PlotSpec.name) shown beside the table, where there is one
    plots: list[str] = field(default_factory=list)


@dataclass
class Series:
    label: str
    implementation: str
    dtype: str
    points: list[tuple[float, float]]
    #: how the module ran (a normbench.deploy name): one series per deployment, drawn with its own marker
    variant: str = deploy.DEFAULT.name


@dataclass
class ClaimPlot:
    """A claims-lab figure: named curves (x, y) per panel, drawn as-is (results/plots/claim-<id>-<machine>.png)."""

    name: str
    title: str
    panels: dict[str, dict[str, list[tuple[float, float]]]]
    x_label: str
    y_label: str
    log_y: bool = False


@dataclass
class PlotSpec:
    """GB/s against hidden size per implementation, one panel per pass, the roofline drawn."""

    name: str
    title: str
    x_label: str
    panels: dict[str, list[Series]]
    roofline_gbps: float | None
    peak_gbps: float | None


@dataclass
class Machine:
    label: str
    machine_id: str
    description: str


@dataclass
class Leaderboard:
    machines: list[Machine]
    tables: list[Table]
    plots: list[PlotSpec]
    refused: list[str] = field(default_factory=list)
    #: the stored conformance outcomes per machine id, for publishers that list items (the site's failing items)
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: where each implementation came from (its `source`: entry point or --impl-path), from the records
    sources: dict[str, str] = field(default_factory=dict)
    claim_plots: list[ClaimPlot] = field(default_factory=list)
    #: the stored benchmark entries per machine id (their `untrusted` reasons among them, normbench.bench.trust)
    bench: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r}; tables: {[t.name for t in self.tables]}")


def _describe(records: list[dict[str, Any]]) -> str:
    latest = max(records, key=lambda r: r.get("created_utc", ""))
    m = latest.get("machine", {})
    device = m.get("gpu") or m.get("cpu")
    parts = [str(device), f"{m.get('cores')} cores", f"torch {m.get('torch')}"]
    if m.get("cuda"):
        parts.append(f"CUDA {m.get('cuda')}")
    parts.append(f"normbench {latest.get('normbench', {}).get('commit')}")
    parts.append(f"last record {str(latest.get('created_utc', ''))[:19]}Z")
    return " · ".join(parts)


def machines_of(records: list[dict[str, Any]]) -> list[Machine]:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_id[r["machine_id"]].append(r)
    return [Machine(f"M{i}", mid, _describe(rs)) for i, (mid, rs) in enumerate(sorted(by_id.items()), start=1)]


def column(name: str, machine: Machine, machines: list[Machine]) -> str:
    return name if len(machines) == 1 else f"{name} [{machine.label}]"


def plot_name(family: str, machine_id: str, device: str) -> str:
    return f"{family}-{device}-{machine_id}"
