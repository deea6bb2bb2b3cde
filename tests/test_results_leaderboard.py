"""Leaderboards are a pure function of the records: tables, per-machine columns, and a ranking that never puts a
non-conforming implementation above a conforming one."""

from __future__ import annotations

import copy

from normbench.leaderboard import build_leaderboard, conformance_matrix_text, geomean
from normbench.results import benchmark_record, claims_record, conformance_record


def on_machine(record: dict, machine: str) -> dict:
    record = copy.deepcopy(record)
    record["machine_id"] = machine
    record["machine"] = {**record["machine"], "cpu": f"cpu of {machine}"}
    return record


def outcome(impl: str, prop: str, verdict: str, dtype: str = "float32", **metrics):
    return {"test_id": f"layernorm[{impl}-{prop}-{dtype}]", "family": "layernorm", "implementation": impl,
            "property": prop, "check": prop, "mode": "any", "dtype": dtype, "device": "cpu", "expect": "holds",
            "verdict": verdict, "observed": "holds" if verdict == "pass" else "violated", "summary": "",
            "metrics": metrics, "ulp": "output-scale"}


def case(impl: str, median: float, roofline_pct: float, shape=(4, 8), pass_name="forward"):
    return {"id": f"layernorm[{impl}-{'x'.join(map(str, shape))}-float32-{pass_name}]", "family": "layernorm",
            "implementation": impl, "shape": list(shape), "dtype": "float32", "pass": pass_name, "device": "cpu",
            "baseline": "torch.nn.LayerNorm", "features": shape[-1], "numel": shape[0] * shape[-1],
            "reduce": "token", "median_s": median, "iqr_s": median / 10, "q1_s": median, "q3_s": median,
            "gbps": roofline_pct / 10, "roofline_pct": roofline_pct, "roofline_gbps": 10.0, "peak_gbps": None,
            "peak_mem_bytes": 2**20, "measured_utc": "2026-01-01T00:00:00"}


def records(machine: str, speed: float = 1.0) -> list[dict]:
    conformance = conformance_record([
        outcome("torch.nn.LayerNorm", "forward_equivalence", "pass", **{"output.max_ulp": 2.0, "tol_ratio": 0.1}),
        outcome("fast.broken", "forward_equivalence", "fail", **{"output.max_ulp": 900.0, "tol_ratio": 30.0}),
        outcome("slow.correct", "forward_equivalence", "pass", **{"output.max_ulp": 1.0, "tol_ratio": 0.05}),
    ], profile="ci")
    bench = benchmark_record("cpu", [case("torch.nn.LayerNorm", 2e-3 / speed, 40.0 * speed),
                                     case("fast.broken", 1e-3 / speed, 80.0 * speed),
                                     case("slow.correct", 4e-3 / speed, 20.0 * speed),
                                     case("unjudged.fast", 0.5e-3 / speed, 160.0 * speed)],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    claims = claims_record([{"id": "k", "claim": "X is faster", "source": "paper", "measured": "1.1x",
                             "verdict": "holds here", "measured_utc": "2026-01-01T00:00:00"}])
    return [on_machine(r, machine) for r in (conformance, bench, claims)]


def test_non_conforming_never_ranks_above_conforming():
    board = build_leaderboard(records("m1"))
    ranking = board.table("ranking")
    order = [row[1] for row in ranking.rows]
    # fastest first within a tier, but every conforming implementation before any other
    assert order == ["torch.nn.LayerNorm", "slow.correct", "unjudged.fast", "fast.broken"]
    status = {row[1]: row[3] for row in ranking.rows}
    assert status["fast.broken"].startswith("does not conform") and status["unjudged.fast"] == "not judged"
    speedup = {row[1]: row[6] for row in ranking.rows}
    assert speedup["slow.correct"] == 0.5 and speedup["fast.broken"] == 2.0


def test_one_column_per_machine_when_machines_merge():
    board = build_leaderboard(records("m1") + records("m2", speed=2.0))
    assert [m.machine_id for m in board.machines] == ["m1", "m2"]
    perf = board.table("performance-layernorm")
    assert "GB/s [M1]" in perf.headers and "GB/s [M2]" in perf.headers
    row = next(r for r in perf.rows if r[0] == "slow.correct")
    assert row[perf.headers.index("median ms [M1]")] == 4.0 and row[perf.headers.index("median ms [M2]")] == 2.0
    assert "verdict [M2]" in board.table("claims").headers
    assert {t.name for t in board.tables} >= {"conformance-matrix-M1", "conformance-matrix-M2", "accuracy"}


def test_accuracy_and_conformance_tables():
    board = build_leaderboard(records("m1"))
    accuracy = board.table("accuracy")
    row = next(r for r in accuracy.rows if r[1] == "fast.broken")
    assert row[4:] == [900.0, None, 30.0]
    summary = {r[1]: r[2] for r in board.table("conformance").rows}
    assert summary["torch.nn.LayerNorm"].startswith("conforms") and "failing" in summary["fast.broken"]
    assert "✗" in conformance_matrix_text(records("m1")[0]["outcomes"].values())


def test_the_same_records_render_the_same_board():
    a, b = build_leaderboard(records("m1")), build_leaderboard(list(reversed(records("m1"))))
    assert [(t.name, t.headers, t.rows) for t in a.tables] == [(t.name, t.headers, t.rows) for t in b.tables]


def test_plots_are_per_family_device_and_machine():
    board = build_leaderboard(records("m1"))
    (plot,) = board.plots
    assert plot.name == "layernorm-cpu-m1" and plot.roofline_gbps == 10.0
    assert {s.implementation for s in plot.panels["forward"]} == {"torch.nn.LayerNorm", "fast.broken",
                                                                  "slow.correct", "unjudged.fast"}


def test_geomean():
    assert geomean([1.0, 4.0]) == 2.0 and geomean([]) is None and geomean([None, 2.0]) == 2.0
