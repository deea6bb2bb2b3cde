"""The site's performance views, from a family's performance table and the stored entries behind it:

- one pivot per machine, device and pass, as tritonbench's ``perf_report`` lays a benchmark out: a row per shape
  and dtype, a column per implementation (and variant), GB/s in the cells (median, IQR, % roofline on hover), the
  fastest trusted figure of each row in bold;
- who is fastest: each implementation's geometric mean % roofline over its trusted eager figures.

A figure whose record carries ``untrusted`` (normbench.bench.trust) is shown with an "untrusted" mark and its
reason, and never counts as fastest: not in its row, not in any geometric mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from normbench import deploy
from normbench.board.model import Machine, Table
from normbench.board.performance import geomean
from normbench.board.ranking import is_reference
from normbench.publish._format import cell
from normbench.publish.badges import slug
from normbench.publish.bench_entries import FigureKey, untrusted_reason
from normbench.publish.site_model import SiteCell, SiteRow, SiteTable

DTYPE_ORDER = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
PASS_ORDER = {"forward": 0, "backward": 1, "forward+backward": 2, "inference": 3}
VARIANT_ORDER = {d.name: i for i, d in enumerate(deploy.all())}
#: how normbench.board.performance's table says an untrusted figure, where it has the column
UNTRUSTED_PREFIX = "UNTRUSTED: "


@dataclass(frozen=True)
class Figure:
    """One timed case on one machine, as a pivot cell shows it."""

    machine_id: str
    implementation: str
    variant: str
    shape: str
    dtype: str
    pass_name: str
    device: str
    gbps: float
    median_ms: float | None
    iqr_ms: float | None
    roofline_pct: float | None
    bound_by: str | None
    speedup: float | None
    untrusted: str | None


def _column(headers: list[str], name: str, machine: Machine, machines: list[Machine]) -> int | None:
    # normbench.board.performance names a machine's columns "GB/s" alone, or "GB/s [M2]" when several machines merge
    key = name if len(machines) == 1 else f"{name} [{machine.label}]"
    return headers.index(key) if key in headers else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def figures(table: Table, machines: list[Machine], entries: dict[FigureKey, dict[str, Any]]) -> list[Figure]:
    """Every machine's figures of a performance table, each with its untrusted reason (from the stored entry, or
    the table's own `untrusted` column where it has one)."""
    out = []
    for m in machines:
        col = {name: _column(table.headers, name, m, machines)
               for name in ("median ms", "IQR ms", "GB/s", "% roofline", "bound by", "× baseline", "untrusted")}

        def get(row: list[Any], name: str, col: dict[str, int | None] = col) -> Any:
            i = col[name]
            return row[i] if i is not None else None

        for row in table.rows:
            gbps = _number(get(row, "GB/s"))
            if gbps is None:
                continue
            impl, variant, shape, dtype, pass_name, device = (str(v) for v in row[:6])
            said = get(row, "untrusted")
            reason = untrusted_reason(entries.get((m.machine_id, impl, variant, shape, dtype, pass_name, device))) \
                or (str(said).removeprefix(UNTRUSTED_PREFIX) if said else None)
            out.append(Figure(m.machine_id, impl, variant, shape, dtype, pass_name, device, gbps,
                              _number(get(row, "median ms")), _number(get(row, "IQR ms")),
                              _number(get(row, "% roofline")), get(row, "bound by"), _number(get(row, "× baseline")),
                              reason))
    return out


def _size(shape: str) -> tuple[int, str]:
    try:
        return math.prod(int(d) for d in shape.split("x")), shape
    except ValueError:
        return 0, shape


def _hover(f: Figure) -> str:
    parts = [f"median {cell(f.median_ms)} ms" if f.median_ms is not None else "",
             f"IQR {cell(f.iqr_ms)} ms" if f.iqr_ms is not None else "",
             f"{cell(f.roofline_pct)} % of the {f.bound_by or 'DRAM'} copy roofline"
             if f.roofline_pct is not None else "",
             f"{cell(f.speedup)}× baseline" if f.speedup is not None else ""]
    return ", ".join(p for p in parts if p)


def column_label(implementation: str, variant: str) -> str:
    return implementation if variant == deploy.DEFAULT.name else f"{implementation} · {variant}"


def pivots(family: str, figs: list[Figure], machine: Machine, machine_label: str, several_machines: bool,
           references: set[str]) -> list[SiteTable]:
    """One shape × implementation table per device and pass of one machine's figures."""
    mine = [f for f in figs if f.machine_id == machine.machine_id]
    tables = []
    groups: dict[tuple[str, str], list[Figure]] = defaultdict(list)
    for f in mine:
        groups[(f.device, f.pass_name)].append(f)
    devices = {f.device for f in mine}
    for (device, pass_name), group in sorted(groups.items(), key=lambda kv: (kv[0][0], PASS_ORDER.get(kv[0][1], 9),
                                                                              kv[0][1])):
        columns = sorted({(f.implementation, f.variant) for f in group},
                         key=lambda c: (c[0] in references, c[0], VARIANT_ORDER.get(c[1], 9), c[1]))
        cases = sorted({(f.shape, f.dtype) for f in group},
                       key=lambda c: (_size(c[0]), DTYPE_ORDER.get(c[1], 9), c[1]))
        at = {(f.shape, f.dtype, f.implementation, f.variant): f for f in group}
        rows = []
        for shape, dtype in cases:
            line = [at.get((shape, dtype, impl, variant)) for impl, variant in columns]
            trusted = [f.gbps for f in line if f is not None and not f.untrusted and f.implementation not in references]
            best = max(trusted) if trusted else None
            cells = [SiteCell(shape, None, "text"), SiteCell(dtype, None, "text")]
            for f in line:
                if f is None:
                    cells.append(SiteCell("", None, "na", title="not measured"))
                    continue
                css = "untrusted" if f.untrusted else ("best" if f.gbps == best else "")
                cells.append(SiteCell(cell(f.gbps), repr(f.gbps), css, title=_hover(f),
                                      badge="untrusted" if f.untrusted else None, badge_title=f.untrusted))
            rows.append(SiteRow(cells, {"dtype": dtype, "device": device, "variant": pass_name}))
        suffix = "" if not several_machines else f"-{slug(machine.machine_id)}"
        where = f" on {device}" if len(devices) > 1 or device != "cpu" else ""
        title = f"{pass_name}{where}" + (f" · {machine_label}" if several_machines else "")
        table_id = f"performance-{slug(family)}-{pass_name.replace('+', '-')}-{slug(device)}{suffix}"
        headers = ["shape", "dtype", *(column_label(*c) for c in columns)]
        muted = {i + 2 for i, (impl, _) in enumerate(columns) if impl in references}
        tables.append(SiteTable(table_id, title, headers, rows, [], [], {0, 1}, muted))
    return tables


@dataclass(frozen=True)
class Speed:
    """An implementation's speed as the front page names the fastest: geometric mean % roofline over its trusted
    eager figures (over the machines' geometric means where there are several), × baseline the same way."""

    implementation: str
    roofline_pct: float
    speedup: float | None
    cases: int
    untrusted: int


def speeds(figs: Iterable[Figure]) -> dict[str, Speed]:
    """Implementation -> its Speed; one whose every figure is untrusted has none (it is never named fastest)."""
    pct: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cases: dict[str, int] = defaultdict(int)
    untrusted: dict[str, int] = defaultdict(int)
    for f in figs:
        # as the ranking: the implementations as written; compiled timings are shown
        if f.variant != deploy.DEFAULT.name:
            continue
        if f.untrusted:
            untrusted[f.implementation] += 1
            continue
        if f.roofline_pct is not None:
            pct[f.implementation][f.machine_id].append(f.roofline_pct)
            cases[f.implementation] += 1
        if f.speedup is not None:
            ups[f.implementation][f.machine_id].append(f.speedup)
    out = {}
    for impl, per_machine in pct.items():
        score = geomean(geomean(v) for v in per_machine.values())
        if score is None:
            continue
        up = geomean(geomean(v) for v in ups[impl].values()) if ups.get(impl) else None
        out[impl] = Speed(impl, score, up, cases[impl], untrusted[impl])
    return out


def fastest(candidates: Iterable[str], known: dict[str, Speed], outcomes: dict[str, list[dict[str, Any]]]
            ) -> Speed | None:
    """The fastest of `candidates` by trusted % roofline; references are the truth, never contenders."""
    ranked = [known[c] for c in candidates if c in known and not is_reference(c, outcomes.get(c, []))]
    return max(ranked, key=lambda s: (s.roofline_pct, s.implementation), default=None)
