"""Leaderboards: a pure function of the stored records (results/raw), published by normbench.publish.

`build_leaderboard(records)` turns records into tables (and plot series): the conformance matrix, accuracy
(error against the float64 truth per dtype), performance per family, the claims lab, and a ranking per family
in which a non-conforming or unbenchmarked implementation never ranks above a conforming, benchmarked one. With
records from several machines every measured column appears once per machine (M1, M2, ... with a legend).
Nothing here measures or reads anything but the records, so the same records always render the same leaderboard.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from normbench import deploy
from normbench.compare import ULP_DEFINITION
from normbench.verdicts import NOT_CONFORMING, Verdict, status_of

LEGEND = ("✓ expectation met (H: property holds, V: property violated, as the spec requires) · "
          "✗ expectation NOT met · E error (crash, timeout, tampering: no verdict) · R reported only · "
          "xf known failure · - skipped · ∅ planned but not judged in that run")
#: tiers of the per-family ranking: a lower tier always ranks first (references are the truth, outside the tiers).
#: "conforms" includes an implementation whose only failures are declared known failures (marked in its status).
TIERS = {0: "conforms", 1: "conforms, not benchmarked", 2: "not judged", 3: "does not conform"}
#: checks whose tol_ratio is an error against the float64 truth (the accuracy table and the ranking's worst error)
ACCURACY_CHECKS = ("forward_equivalence", "gradient_equivalence", "weight_gradient_reduction", "fused_residual")
PASS_ORDER = {"forward": 0, "backward": 1, "forward+backward": 2, "inference": 3, "copy": 4}


# -- the conformance matrix (also printed at the end of `pytest suite`) -----------------------------------------

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


def _machines(records: list[dict[str, Any]]) -> list[Machine]:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_id[r["machine_id"]].append(r)
    return [Machine(f"M{i}", mid, _describe(rs)) for i, (mid, rs) in enumerate(sorted(by_id.items()), start=1)]


def _col(name: str, machine: Machine, machines: list[Machine]) -> str:
    return name if len(machines) == 1 else f"{name} [{machine.label}]"


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def _shape(entry: dict[str, Any]) -> str:
    return "x".join(map(str, entry["shape"]))


def _case_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    # records from before variants existed are eager
    return (tuple(entry["shape"]), entry["dtype"], entry["pass"], entry["device"], deploy.record_name(entry))


#: deployments side by side in the registry's order, the default first
VARIANT_ORDER = {d.name: i for i, d in enumerate(deploy.all())}


def _over_eager(entry: dict[str, Any], index: dict[tuple[Any, ...], dict[str, Any]]) -> float | None:
    """The same implementation's eager median over this variant's: > 1, the deployed variant is faster."""
    if deploy.record_name(entry) == deploy.DEFAULT.name or not entry.get("median_s"):
        return None
    eager = index.get((entry["implementation"], *_case_key(entry)[:-1], deploy.DEFAULT.name))
    return eager["median_s"] / entry["median_s"] if eager else None


# -- per-kind collections ------------------------------------------------------------------------------------

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


def _speedup(entry: dict[str, Any], index: dict[tuple[Any, ...], dict[str, Any]]) -> float | None:
    base_name = entry.get("baseline")
    if not base_name:
        return None
    base = index.get((base_name, *_case_key(entry)))
    if base is None or not entry.get("median_s"):
        return None
    return base["median_s"] / entry["median_s"]


def _bench_index(entries: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(e["implementation"], *_case_key(e)): e for e in entries}


# -- tables --------------------------------------------------------------------------------------------------

def _conformance_summary(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]]) -> Table:
    impls: set[tuple[str, str]] = set()
    per: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for mid, os_ in outcomes.items():
        for o in os_:
            impls.add((o["family"], o["implementation"]))
            per[(mid, o["family"], o["implementation"])].append(o)
    headers = ["family", "implementation", *(_col("verdict", m, machines) for m in machines)]
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


def _accuracy(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]]) -> Table:
    cells: dict[tuple[str, str, str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for mid, os_ in outcomes.items():
        for o in os_:
            if o.get("check") not in ACCURACY_CHECKS or o.get("verdict") in (Verdict.ERROR, Verdict.SKIP):
                continue
            metrics = o.get("metrics") or {}
            slot = cells[(o["family"], o["implementation"], o["dtype"], o.get("device", "cpu"))].setdefault(mid, {})
            pairs = (("fwd", "output.max_ulp"), ("bwd", "grad_input.max_ulp"), ("tol", "tol_ratio"))
            if o.get("ulp") != ULP_DEFINITION:  # an older record's element-wise ulp: not shown, never misread
                pairs = pairs[2:]
            for name, key in pairs:
                value = metrics.get(key)
                if isinstance(value, int | float) and math.isfinite(value):
                    slot[name] = max(slot.get(name, 0.0), float(value))
    headers = ["family", "implementation", "dtype", "device"]
    for m in machines:
        headers += [_col("fwd max ulp", m, machines), _col("bwd max ulp", m, machines),
                    _col("worst error / tolerance", m, machines)]
    dtype_order = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
    rows = []
    for key in sorted(cells, key=lambda k: (k[0], k[1], dtype_order.get(k[2], 9), k[3])):
        row: list[Any] = list(key)
        for m in machines:
            slot = cells[key].get(m.machine_id, {})
            row += [slot.get("fwd"), slot.get("bwd"), slot.get("tol")]
        rows.append(row)
    return Table("accuracy", "Accuracy against the float64 truth", headers, rows,
                 ["Worst error over every case of forward_equivalence (output) and gradient_equivalence (grad of "
                  "the input), in units in the last place of the dtype at the output's scale (max|truth|, the "
                  "scale the tolerance uses, so outputs near zero do not inflate it; blank for older records, "
                  "which measured each element's own ulp); `worst error / tolerance` is the largest "
                  "ratio of measured error to the spec's bound over every compared tensor of those checks and of "
                  "weight_gradient_reduction (dγ, dβ over 8192 rows) and fused_residual (≤ 1 passes)."])


def _performance(machines: list[Machine], bench: dict[str, list[dict[str, Any]]]) -> list[Table]:
    families: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    by_machine = {mid: _bench_index(entries) for mid, entries in bench.items()}
    for entries in bench.values():
        for e in entries:
            families[e["family"]].add((e["implementation"], *_case_key(e)))
    tables = []
    for family in sorted(families, key=lambda f: (f == "roofline", f)):
        headers = ["implementation", "variant", "shape", "dtype", "pass", "device"]
        stats = ("median ms", "IQR ms", "GB/s", "% roofline", "bound by", "× baseline", "× eager", "build s",
                 "peak MiB", "untrusted")
        for m in machines:
            headers += [_col(h, m, machines) for h in stats]
        # the implementations of one case side by side: device, size, shape, dtype, pass, implementation, variant
        keys = sorted(families[family], key=lambda k: (k[4], math.prod(k[1]), k[1], k[2], PASS_ORDER.get(k[3], 9),
                                                       k[0], VARIANT_ORDER.get(k[5], 9)))
        rows = []
        for impl, shape, dtype, pass_name, device, variant in keys:
            row: list[Any] = [impl, variant, "x".join(map(str, shape)), dtype, pass_name, device]
            for m in machines:
                index = by_machine.get(m.machine_id, {})
                e = index.get((impl, shape, dtype, pass_name, device, variant))
                if e is None:
                    row += [None] * len(stats)
                    continue
                peak = e.get("peak_mem_bytes")
                row += [e["median_s"] * 1e3, e["iqr_s"] * 1e3, e["gbps"], e["roofline_pct"],
                        e.get("roofline_level", "DRAM"), _speedup(e, index), _over_eager(e, index),
                        e.get("build_s") or None, peak / 2**20 if peak is not None else None,
                        _untrusted_cell(e)]
            rows.append(row)
        notes = ["median and inter-quartile range of the time per call; GB/s from the compulsory bytes of the pass "
                 "(normbench.bench.bytes_model: forward 2·|x|, backward 3·|x|, forward+backward 5·|x|, inference "
                 "2·|x|, plus parameters); % roofline against the copy bandwidth, measured in the same session, of "
                 "the memory level the case's working set fits in (`bound by`: L2, L3, DRAM; cache-aware on a CPU); "
                 "× baseline is the baseline's median over this one's in the same variant (> 1: faster than torch); "
                 "× eager is the same implementation's eager median over this variant's (> 1: the deployed variant "
                 "is faster). Variants: eager; compile = torch.compile, Inductor, compile time (`build s`) paid "
                 "once, never timed; onnxruntime = torch.onnx export run by onnxruntime's CPU provider (inference "
                 "only, so its `forward` is the eval-mode forward).", UNTRUSTED_NOTE]
        if family == "roofline":
            title = "Harness check: a plain copy timed by the benchmark harness"
            notes = ["A `dst.copy_(src)` timed exactly like the norms. At the roofline's own size it must reach "
                     "about 100% of the DRAM copy bandwidth measured at session start (no overhead hides in the "
                     "numbers); at the norms' size it is bounded by the cache level its working set fits in."]
        else:
            title = f"Performance: {family}"
        plots = [p for p in sorted({_plot_name(family, m.machine_id, k[4]) for m in machines for k in keys
                                    if by_machine.get(m.machine_id, {}).get(k)})] if family != "roofline" else []
        tables.append(Table(f"performance-{family}", title, headers, rows, notes, plots))
    return tables


#: what every table that shows benchmark figures says of an untrusted one
UNTRUSTED_NOTE = ("An UNTRUSTED figure (above its roofline beyond the noise, disagreeing with the benchmark process's "
                  "own clock, or with a timed output that differs from the float64 truth: normbench.bench.trust) is "
                  "shown with its reason and never ranked: it counts in no geometric mean, no ranking and no badge.")


def _untrusted_cell(entry: dict[str, Any]) -> str | None:
    reason = entry.get("untrusted")
    return f"UNTRUSTED: {reason}" if reason else None


def untrusted_text(count: int) -> str:
    return f"{count} untrusted benchmark figure{'s' if count != 1 else ''}, not ranked"


def _plot_name(family: str, machine_id: str, device: str) -> str:
    return f"{family}-{device}-{machine_id}"


def _rooflines(machines: list[Machine], records: list[dict[str, Any]]) -> Table:
    rows = []
    labels = {m.machine_id: m.label for m in machines}
    for r in sorted((r for r in records if r["kind"] == "benchmark"), key=lambda r: (r["machine_id"], r["device"])):
        roof = r.get("roofline") or {}
        copies = [e for e in r["results"].values() if e["family"] == "roofline"]
        at_size = [e for e in copies if e["numel"] * 4 == roof.get("copy_bytes")]
        check = at_size[0]["roofline_pct"] if at_size else None
        levels = roof.get("levels") or [{"name": "DRAM", "capacity_bytes": None,
                                         "working_set_bytes": 2 * (roof.get("copy_bytes") or 0),
                                         "copy_gbps": roof.get("copy_gbps"), "copy_gbps_q1": roof.get("copy_gbps_q1"),
                                         "copy_gbps_q3": roof.get("copy_gbps_q3")}]
        for lv in levels:
            dram = lv["name"] == "DRAM"
            capacity = lv.get("capacity_bytes")
            rows.append([labels[r["machine_id"]], r["device"], roof.get("device_name"), r.get("threads"), lv["name"],
                         capacity / 2**20 if capacity else None, lv["working_set_bytes"] / 2**20, lv["copy_gbps"],
                         lv["copy_gbps_q1"], lv["copy_gbps_q3"], roof.get("peak_gbps") if dram else None,
                         roof.get("peak_source") if dram else None, check if dram else None,
                         r.get("omp_wait_policy"), r.get("malloc"), r.get("load_average")])
    headers = ["machine", "device", "device name", "threads", "level", "holds MiB", "measured at MiB", "copy GB/s",
               "copy GB/s q1", "copy GB/s q3", "nominal peak GB/s", "peak source", "harness copy % of roofline",
               "OMP_WAIT_POLICY", "malloc", "load average"]
    return Table("rooflines", "Rooflines (latest session per machine and device)", headers, rows,
                 ["copy GB/s: median bandwidth of dst.copy_(src), bytes read + written, the faster of the thread "
                  "count shown and one thread (sessions before 2026-12-03: the thread count only, which on a CPU "
                  "bounds a cached copy by waking the other threads), measured once per session at a working set "
                  "(source + destination) inside each cache level from L2 up (half its capacity for these threads) "
                  "and far beyond the last-level cache (DRAM); q1/q3 bound its spread. A case is bounded by a copy "
                  "of its own working set, named by the smallest level it fits in. The harness "
                  "column is the DRAM-sized copy timed through the benchmark harness (target ≥ 90%). The load "
                  "average at the session's start says how shared the machine was."])


def is_reference(name: str, outcomes: Iterable[dict[str, Any]] = ()) -> bool:
    """A float64 reference is the truth the others are judged against, never a contender.

    The built-in references are named ``reference.<family>``; a record that carries the implementation's tags
    (``"tags": ["reference", ...]``) is honoured as well.
    """
    return name.startswith("reference.") or any("reference" in (o.get("tags") or ()) for o in outcomes)


def _ranking(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]],
             bench: dict[str, list[dict[str, Any]]]) -> Table:
    # Keyed by (family, implementation): a name registered in two families is ranked in each on its own results.
    verdicts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for os_ in outcomes.values():
        for o in os_:
            verdicts[(o["family"], o["implementation"])].append(o)
    keys = set(verdicts)
    perf: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    speed: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    untrusted: dict[tuple[str, str], int] = defaultdict(int)
    for mid, entries in bench.items():
        index = _bench_index(entries)
        for e in entries:
            if e["family"] == "roofline" or deploy.record_name(e) != deploy.DEFAULT.name:
                continue  # the ranking is of the implementations as written; compiled / exported timings are shown
            key = (e["family"], e["implementation"])
            keys.add(key)
            if e.get("untrusted"):
                untrusted[key] += 1  # shown, never ranked: the parent's clock did not confirm the child's
                continue
            perf[(*key, mid)].append(e)
            s = _speedup(e, index)
            if s is not None:
                speed[(*key, mid)].append(s)
    ranked: list[tuple[tuple[Any, ...], list[Any]]] = []
    for family, impl in keys:
        os_ = verdicts.get((family, impl), [])
        benchmarked = any(perf.get((family, impl, m.machine_id)) for m in machines)
        verdict = status_of(os_)
        if is_reference(impl, os_):
            tier, status = -1, "reference (the float64 truth, not ranked)"
        elif verdict.conforming:
            # known failures alone rank with the conforming (declared, documented, shown in the status)
            tier, status = (0, verdict.text) if benchmarked else (1, f"{verdict.text}, not benchmarked")
        else:
            tier, status = (3 if verdict.key == NOT_CONFORMING else 2), verdict.text
        if untrusted[(family, impl)]:
            status += f"; {untrusted_text(untrusted[(family, impl)])}"
        accuracy = max((float(o["metrics"]["tol_ratio"]) for o in os_ if o.get("check") in ACCURACY_CHECKS
                        and isinstance((o.get("metrics") or {}).get("tol_ratio"), int | float)), default=None)
        cols: list[Any] = []
        roofs = []
        for m in machines:
            g = geomean(e["roofline_pct"] for e in perf.get((family, impl, m.machine_id), []))
            roofs.append(g)
            cols += [g, geomean(speed.get((family, impl, m.machine_id), [])),
                     len(perf.get((family, impl, m.machine_id), []))]
        score = geomean(r for r in roofs if r is not None)
        ranked.append(((family, tier, -(score or 0.0), impl), [impl, family, status, accuracy, *cols]))
    ranked.sort(key=lambda kv: kv[0])
    rows: list[list[Any]] = []
    rank, family_of_rank = 0, None
    for (family, tier, _, _), row in ranked:
        if family != family_of_rank:
            rank, family_of_rank = 0, family
        if tier < 0:
            rows.append(["truth", *row])
        else:
            rank += 1
            rows.append([rank, *row])
    headers = ["rank", "implementation", "family", "conformance", "worst error / tolerance"]
    for m in machines:
        headers += [_col(h, m, machines) for h in ("geomean % roofline", "geomean × baseline", "cases")]
    return Table("ranking", "Combined ranking, per family", headers, rows,
                 ["Ranked within each family only (a LayerNorm is not a contender of an RMSNorm); the family's "
                  "float64 reference is listed first as the truth the others are judged against, not ranked. "
                  "Tiers first: conforms and benchmarked, then conforms but not benchmarked, then not judged, then "
                  "does not conform, so a non-conforming or unbenchmarked implementation never ranks above a "
                  "conforming, benchmarked one. An implementation whose only failures are declared known failures "
                  "(each with its reason, e.g. torch's CPU LayerNorm dγ / dβ in half precision) ranks with the "
                  "conforming ones, marked \"conforms with N known failures\": the failure is documented and "
                  "shown, not hidden, and an error is never excused. Within a tier by the geometric mean of % "
                  "roofline over every benchmarked case (over the machines' geometric means where there are "
                  "several). × baseline is the "
                  "geometric mean speed-up over the family's torch eager implementation. " + UNTRUSTED_NOTE])


def _claims(machines: list[Machine], records: list[dict[str, Any]]) -> Table:
    claims: dict[str, dict[str, Any]] = {}
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r["kind"] == "claims":
            for cid, c in r["claims"].items():
                claims.setdefault(cid, c)
                per[(cid, r["machine_id"])] = c
    headers = ["claim", "source"]
    for m in machines:
        headers += [_col("measured here", m, machines), _col("verdict", m, machines)]
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


def _claim_plots(machines: list[Machine], records: list[dict[str, Any]]) -> list[ClaimPlot]:
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


def _plots(machines: list[Machine], bench: dict[str, list[dict[str, Any]]]) -> list[PlotSpec]:
    plots = []
    for m in machines:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for e in bench.get(m.machine_id, []):
            if e["family"] != "roofline":
                groups[(e["family"], e["device"])].append(e)
        for (family, device), entries in sorted(groups.items()):
            token = all(e.get("reduce") == "token" for e in entries)
            panels: dict[str, list[Series]] = {}
            for pass_name in sorted({e["pass"] for e in entries}, key=lambda p: PASS_ORDER.get(p, 9)):
                lines: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
                for e in entries:
                    if e["pass"] == pass_name:
                        x = e["features"] if token else e["numel"] * 1.0
                        lines[(e["implementation"], e["dtype"], deploy.record_name(e))].append((x, e["gbps"]))
                panels[pass_name] = [
                    Series(f"{impl} {dtype}" + (f" [{variant}]" if variant != deploy.DEFAULT.name else ""), impl, dtype,
                           sorted(points), variant)
                    for (impl, dtype, variant), points in sorted(lines.items(),
                                                                 key=lambda kv: (kv[0][0], kv[0][1],
                                                                                 VARIANT_ORDER.get(kv[0][2], 9)))]
            roof = [e["roofline_gbps"] for e in entries if e.get("roofline_gbps")]
            peaks = [e["peak_gbps"] for e in entries if e.get("peak_gbps")]
            plots.append(PlotSpec(
                name=_plot_name(family, m.machine_id, device),
                title=f"{family} on {device} · {m.label} {m.machine_id}",
                x_label="hidden size (features per token)" if token else "elements per input",
                panels=panels, roofline_gbps=max(roof) if roof else None, peak_gbps=max(peaks) if peaks else None))
    return plots


def build_leaderboard(records: list[dict[str, Any]], refused: Iterable[str] = ()) -> Leaderboard:
    """Every table and plot, from the records alone."""
    machines = _machines(records)
    outcomes = _outcomes_by_machine(records)
    bench = _bench_by_machine(records)
    tables = [_ranking(machines, outcomes, bench)]
    if outcomes:
        tables += [_conformance_summary(machines, outcomes), _accuracy(machines, outcomes)]
    if bench:
        tables.append(_rooflines(machines, records))
        tables += _performance(machines, bench)
    claim_plots: list[ClaimPlot] = []
    if any(r["kind"] == "claims" for r in records):
        tables.append(_claims(machines, records))
        claim_plots = _claim_plots(machines, records)
        tables[-1].plots = [p.name for p in claim_plots]
    for m in machines:
        if outcomes.get(m.machine_id):
            headers, rows = conformance_rows(outcomes[m.machine_id])
            profiles = sorted({str(r.get("profile")) for r in records
                               if r["kind"] == "conformance" and r["machine_id"] == m.machine_id})
            tables.append(Table(f"conformance-matrix-{m.label}", f"Conformance matrix on {m.label}", headers, rows,
                                [f"{m.machine_id}: {m.description} · hypothesis profile {', '.join(profiles)}",
                                 LEGEND]))
    return Leaderboard(machines, tables, _plots(machines, bench), list(map(str, refused)), claim_plots=claim_plots,
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
