"""Leaderboards are a pure function of the records: tables, per-machine columns, and a ranking that never puts a
non-conforming implementation above a conforming one."""

from __future__ import annotations

from factories.records import records

from normbench.board.build import build_leaderboard
from normbench.board.conformance import conformance_matrix_text
from normbench.board.performance import geomean


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
