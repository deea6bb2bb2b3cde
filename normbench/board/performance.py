"""Performance: the benchmark cases (their key, the speed-ups, the untrusted figures) and the tables of timings per
family and of the rooflines."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from normbench import deploy
from normbench.board.model import Machine, Table, column, plot_name

PASS_ORDER = {"forward": 0, "backward": 1, "forward+backward": 2, "inference": 3, "copy": 4}
#: deployments side by side in the registry's order, the default first
VARIANT_ORDER = {d.name: i for i, d in enumerate(deploy.all())}


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def _shape(entry: dict[str, Any]) -> str:
    return "x".join(map(str, entry["shape"]))


def case_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    # records from before variants existed are eager
    return (tuple(entry["shape"]), entry["dtype"], entry["pass"], entry["device"], deploy.record_name(entry))



def over_eager(entry: dict[str, Any], index: dict[tuple[Any, ...], dict[str, Any]]) -> float | None:
    """The same implementation's eager median over this variant's: > 1, the deployed variant is faster."""
    if deploy.record_name(entry) == deploy.DEFAULT.name or not entry.get("median_s"):
        return None
    eager = index.get((entry["implementation"], *case_key(entry)[:-1], deploy.DEFAULT.name))
    return eager["median_s"] / entry["median_s"] if eager else None


# -- per-kind collections ------------------------------------------------------------------------------------

def speedup(entry: dict[str, Any], index: dict[tuple[Any, ...], dict[str, Any]]) -> float | None:
    base_name = entry.get("baseline")
    if not base_name:
        return None
    base = index.get((base_name, *case_key(entry)))
    if base is None or not entry.get("median_s"):
        return None
    return base["median_s"] / entry["median_s"]


def bench_index(entries: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(e["implementation"], *case_key(e)): e for e in entries}


# -- tables --------------------------------------------------------------------------------------------------

def performance_tables(machines: list[Machine], bench: dict[str, list[dict[str, Any]]]) -> list[Table]:
    families: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    by_machine = {mid: bench_index(entries) for mid, entries in bench.items()}
    for entries in bench.values():
        for e in entries:
            families[e["family"]].add((e["implementation"], *case_key(e)))
    tables = []
    for family in sorted(families, key=lambda f: (f == "roofline", f)):
        headers = ["implementation", "variant", "shape", "dtype", "pass", "device"]
        stats = ("median ms", "IQR ms", "GB/s", "% roofline", "bound by", "× baseline", "× eager", "build s",
                 "peak MiB", "untrusted")
        for m in machines:
            headers += [column(h, m, machines) for h in stats]
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
                        e.get("roofline_level", "DRAM"), speedup(e, index), over_eager(e, index),
                        e.get("build_s") or None, peak / 2**20 if peak is not None else None,
                        untrusted_cell(e)]
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
        plots = [p for p in sorted({plot_name(family, m.machine_id, k[4]) for m in machines for k in keys
                                    if by_machine.get(m.machine_id, {}).get(k)})] if family != "roofline" else []
        tables.append(Table(f"performance-{family}", title, headers, rows, notes, plots))
    return tables


#: what every table that shows benchmark figures says of an untrusted one
UNTRUSTED_NOTE = ("An UNTRUSTED figure (above its roofline beyond the noise, disagreeing with the benchmark process's "
                  "own clock, or with a timed output that differs from the float64 truth: normbench.bench.trust) is "
                  "shown with its reason and never ranked: it counts in no geometric mean, no ranking and no badge.")


def untrusted_cell(entry: dict[str, Any]) -> str | None:
    reason = entry.get("untrusted")
    return f"UNTRUSTED: {reason}" if reason else None


def untrusted_text(count: int) -> str:
    return f"{count} untrusted benchmark figure{'s' if count != 1 else ''}, not ranked"


def roofline_table(machines: list[Machine], records: list[dict[str, Any]]) -> Table:
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


