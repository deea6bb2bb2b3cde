"""When a benchmark figure is trusted: the parent's clock against the child's, as a pure function of
measured durations (no wall clock here), the output and roofline reasons, and every publisher marking the figure."""

from __future__ import annotations

import math

import pytest

from normbench.bench.trust import (
    BLOCK_MIN_S,
    CLOCK_BOUND,
    Block,
    clock_agreement,
    merge_clock_checks,
    merge_output_checks,
    untrusted_reason,
)

OVERHEAD = 0.0004  # a measured empty block: two wake-ups and two small messages


def _blocks(child_fraction: float, n: int = 5, work: float = BLOCK_MIN_S, extra: float = OVERHEAD) -> list[Block]:
    """n blocks of `work` seconds of true work each; the child reports `child_fraction` of it, the parent sees the
    truth plus `extra`."""
    return [Block(child_s=work * child_fraction, parent_s=work + extra) for _ in range(n)]


def test_an_honest_child_agrees_with_the_parent():
    check = clock_agreement(_blocks(1.0), OVERHEAD)
    assert check["agree"] and check["ratio"] == pytest.approx(1.0) and check["blocks"] == 5
    assert check["parent_s"] == pytest.approx(5 * BLOCK_MIN_S)


@pytest.mark.parametrize("hidden", [0.9, 0.5, 0.35])
def test_a_child_hiding_time_disagrees(hidden):
    check = clock_agreement(_blocks(1 - hidden), OVERHEAD)
    assert not check["agree"] and check["ratio"] == pytest.approx(1 - hidden)
    assert check["ratio"] < CLOCK_BOUND
    assert "accounted for" in untrusted_reason({"clock_check": check, "gbps_q1": 1, "roofline_gbps_q3": 10})


def test_the_parents_extra_time_is_one_sided_noise_an_honest_child_survives():
    # a loaded machine: every block's wake-ups cost 8 ms more than the measured empty block, and one block was
    # preempted for 120 ms between its messages; the honest child still agrees over the sum of its blocks
    blocks = _blocks(1.0, extra=OVERHEAD + 0.008)
    blocks[2] = Block(BLOCK_MIN_S, BLOCK_MIN_S + OVERHEAD + 0.120)
    check = clock_agreement(blocks, OVERHEAD)
    assert check["agree"] and check["min_block_ratio"] < CLOCK_BOUND < check["ratio"]
    # the same noise cannot rescue a child that hides half its time: the parent's clock only adds
    assert not clock_agreement([Block(b.child_s / 2, b.parent_s) for b in blocks], OVERHEAD)["agree"]


def test_the_empty_block_overhead_is_subtracted():
    # a short block dominated by its round trip: without the subtraction an honest child would read 50%
    blocks = [Block(0.002, 0.004)]
    assert clock_agreement(blocks, 0.002)["agree"] and not clock_agreement(blocks, 0.0)["agree"]


def test_bad_measurements_are_errors():
    with pytest.raises(ValueError, match="at least one timed block"):
        clock_agreement([], OVERHEAD)
    with pytest.raises(ValueError, match="overhead"):
        clock_agreement(_blocks(1.0), -1.0)
    assert not clock_agreement([Block(math.nan, 0.05)], 0.0)["agree"]  # a NaN report is never agreement


def test_passes_merge_by_their_sums():
    honest, hiding = clock_agreement(_blocks(1.0), OVERHEAD), clock_agreement(_blocks(0.1), OVERHEAD)
    merged = merge_clock_checks([honest, hiding])
    assert merged["passes"] == 2 and merged["blocks"] == 10 and merged["ratio"] == pytest.approx(0.55)
    assert not merged["agree"] and merge_clock_checks([honest, honest])["agree"]
    out = merge_output_checks([{"applied": True, "rounds": 10, "failed": 0, "worst": ""},
                               {"applied": True, "rounds": 12, "failed": 3, "worst": "round 4: rows 1,2"}])
    assert out["rounds"] == 22 and out["failed"] == 3 and out["worst"] == "round 4: rows 1,2"


def test_every_reason_is_named():
    entry = {"gbps_q1": 500.0, "roofline_gbps_q3": 90.0, "roofline_level": "DRAM",
             "clock_check": clock_agreement(_blocks(1.0), OVERHEAD),
             "output_check": {"applied": True, "rounds": 8, "failed": 8, "worst": "round 0: max abs err 6.4"}}
    reason = untrusted_reason(entry)
    assert "above the DRAM copy roofline" in reason and "differs from the float64 truth in 8 of 8 rounds" in reason
    assert "accounted for" not in reason
    fine = {**entry, "gbps_q1": 50.0, "output_check": {"applied": True, "rounds": 8, "failed": 0}}
    assert untrusted_reason(fine) is None
    # an output check that could not apply (a layout, running state) is said in the record, not an untrusted mark
    assert untrusted_reason({**fine, "output_check": {"applied": False, "reason": "layout"}}) is None


def test_the_replay_clock_hands_pytest_benchmark_the_childs_rounds():
    from normbench.bench.pytest_plugin import ReplayClock

    clock = ReplayClock()
    clock.load([0.5, 0.25, 2.0])
    durations = []
    for _ in range(3):
        start = clock()
        durations.append(clock() - start)
    assert durations == [0.5, 0.25, 2.0]


# -- every publisher marks an untrusted figure and ranks it nowhere ------------------------------------------------

def entry(impl: str, median: float, roofline_pct: float = 50.0) -> dict:
    return {"id": f"layernorm[{impl}-1024x1024-float32-forward]", "family": "layernorm", "implementation": impl,
            "variant": "eager", "shape": [1024, 1024], "dtype": "float32", "pass": "forward", "device": "cpu",
            "baseline": "torch.nn.LayerNorm", "features": 1024, "numel": 2**20, "reduce": "token",
            "median_s": median, "iqr_s": median / 10, "q1_s": median, "q3_s": median, "gbps": 8.0 / median / 1e3,
            "roofline_pct": roofline_pct, "roofline_gbps": 40.0, "roofline_level": "L3", "peak_gbps": None,
            "peak_mem_bytes": 2**22, "build_s": 0.0, "measured_utc": "2026-01-01T00:00:00"}


def _records(untrusted: str | None) -> list[dict]:
    from normbench.store.records import benchmark_record

    forged = entry("cheat.hides_90", 1e-4, roofline_pct=503.0)
    if untrusted:
        forged["untrusted"] = untrusted
    record = benchmark_record("cpu", [entry("torch.nn.LayerNorm", 1e-3), forged],
                              {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    record["machine_id"] = "m1"
    return [record]


def test_the_leaderboard_marks_and_never_ranks_an_untrusted_figure(tmp_path):
    from normbench.board.build import build_leaderboard
    from normbench.publish import publish_all
    from normbench.publish.badges import badge_files

    reason = "the implementation's process accounted for 10% of the parent's clock"
    board = build_leaderboard(_records(reason))
    ranking = board.table("ranking")
    rows = {r[ranking.headers.index("implementation")]: r for r in ranking.rows}
    first = [r for r in ranking.rows if r[0] == 1][0]
    assert first[ranking.headers.index("implementation")] == "torch.nn.LayerNorm"  # 503% would have ranked first
    cheat = rows["cheat.hides_90"]
    assert "1 untrusted benchmark figure, not ranked" in cheat[ranking.headers.index("conformance")]
    roof_col = next(i for i, h in enumerate(ranking.headers) if h.startswith("geomean % roofline"))
    assert cheat[roof_col] is None
    perf = board.table("performance-layernorm")
    col = next(i for i, h in enumerate(perf.headers) if h.startswith("untrusted"))
    marks = {r[0]: r[col] for r in perf.rows}
    assert marks["cheat.hides_90"] == f"UNTRUSTED: {reason}" and marks["torch.nn.LayerNorm"] is None
    svgs = dict(badge_files(board)["cheat.hides_90"])
    assert "untrusted benchmark" in svgs["cheat.hides_90-roofline.svg"]
    publish_all(board, tmp_path, ["md", "csv"])
    assert f"UNTRUSTED: {reason}" in (tmp_path / "LEADERBOARD.md").read_text()
    assert f"UNTRUSTED: {reason}" in (tmp_path / "csv" / "performance-layernorm.csv").read_text()
    # the control: the same figure, trusted, ranks first and its badge carries its number
    trusted_board = build_leaderboard(_records(None))
    first = [r for r in trusted_board.table("ranking").rows if r[0] == 1][0]
    assert first[ranking.headers.index("implementation")] == "cheat.hides_90"
    assert "% roofline" in dict(badge_files(trusted_board)["cheat.hides_90"])["cheat.hides_90-roofline.svg"]


def test_the_terminal_summary_marks_an_untrusted_figure():
    from normbench.publish.terminal import bench_summary_lines

    lines = bench_summary_lines([entry("torch.nn.LayerNorm", 1e-3), {**entry("cheat.hides_90", 1e-4),
                                                                     "untrusted": "clock"}], 120)
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["cheat.hides_90"][2] == "UNTRUSTED(1)" and rows["torch.nn.LayerNorm"][2] == "-"
