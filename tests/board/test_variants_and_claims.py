"""Variants and the claims lab's figures in the leaderboard: a variant column, × eager, the bounding level, the
claim plots drawn as PNGs and linked beside the claims table."""

from __future__ import annotations

from normbench.board.build import build_leaderboard
from normbench.publish import publish_all
from normbench.store.records import benchmark_record, claims_record


def entry(impl: str, variant: str, median: float, level: str = "L3") -> dict:
    suffix = "" if variant == "eager" else f"-{variant}"
    return {"id": f"layernorm[{impl}-1024x1024-float32-forward{suffix}]", "family": "layernorm",
            "implementation": impl, "variant": variant, "shape": [1024, 1024], "dtype": "float32", "pass": "forward",
            "device": "cpu", "baseline": "torch.nn.LayerNorm", "features": 1024, "numel": 2**20, "reduce": "token",
            "median_s": median, "iqr_s": median / 10, "q1_s": median, "q3_s": median, "gbps": 8.0 / median / 1e3,
            "roofline_pct": 50.0, "roofline_gbps": 40.0, "roofline_level": level, "peak_gbps": None,
            "peak_mem_bytes": 2**22, "build_s": 5.0 if variant != "eager" else 0.0,
            "measured_utc": "2026-01-01T00:00:00"}


def board_records() -> list[dict]:
    bench = benchmark_record("cpu", [entry("torch.nn.LayerNorm", "eager", 2e-3),
                                     entry("torch.nn.LayerNorm", "compile", 1e-3),
                                     entry("torch.nn.LayerNorm", "onnxruntime", 4e-3)],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28,
                              "levels": [{"name": "L3", "capacity_bytes": 2**25, "working_set_bytes": 2**24,
                                          "copy_gbps": 40.0, "copy_gbps_q1": 35.0, "copy_gbps_q3": 45.0},
                                         {"name": "DRAM", "capacity_bytes": None, "working_set_bytes": 2**29,
                                          "copy_gbps": 10.0, "copy_gbps_q1": 9.0, "copy_gbps_q3": 11.0}]},
                             threads=2)
    plot = {"x_label": "layer", "y_label": "grad norm", "log_y": True,
            "panels": {"encoder": {"Post-LN": [[1, 1.0], [2, 2.0]], "Pre-LN": [[1, 1.0], [2, 1.0]]}}}
    claims = claims_record([{"id": "prenorm_postnorm_gradients", "claim": "Post-LN grows", "source": "Xiong 2020",
                             "measured": "2x", "verdict": "holds here", "device": "cpu",
                             "details": {"plot": plot}},
                            {"id": "rmsnorm_vs_layernorm[compile]", "claim": "RMSNorm faster", "source": "Zhang",
                             "measured": "compiled: 1.3x", "verdict": "holds here", "device": "cpu", "details": {}}])
    for r in (bench, claims):
        r["machine_id"] = "m1"
    return [bench, claims]


def test_variants_are_a_column_with_their_speed_over_eager():
    perf = build_leaderboard(board_records()).table("performance-layernorm")
    h = perf.headers
    rows = {r[h.index("variant")]: r for r in perf.rows}
    # side by side, eager first; the entry stored as onnxruntime (export's older name) reads as export
    assert list(rows) == ["eager", "compile", "export"]
    assert rows["compile"][h.index("× eager")] == 2.0 and rows["export"][h.index("× eager")] == 0.5
    assert rows["eager"][h.index("× eager")] is None and rows["compile"][h.index("build s")] == 5.0
    assert rows["eager"][h.index("bound by")] == "L3"
    # × baseline compares within a variant: the compiled baseline is what a compiled kernel must beat
    assert rows["compile"][h.index("× baseline")] == 1.0


def test_the_rooflines_table_lists_every_level():
    table = build_leaderboard(board_records()).table("rooflines")
    assert [r[table.headers.index("level")] for r in table.rows] == ["L3", "DRAM"]


def test_claim_plots_are_drawn_and_linked(tmp_path):
    board = build_leaderboard(board_records())
    (plot,) = board.claim_plots
    assert plot.name == "claim-prenorm_postnorm_gradients-m1" and plot.log_y
    assert board.table("claims").plots == [plot.name]
    written = publish_all(board, tmp_path)
    assert tmp_path / "plots" / f"{plot.name}.png" in written
    assert f"plots/{plot.name}.png" in (tmp_path / "LEADERBOARD.md").read_text()
    assert "rmsnorm_vs_layernorm[compile]" not in [p.name for p in board.claim_plots]  # no figure recorded


def test_the_session_summary_shows_every_implementations_time_gbps_and_speedup():
    # the summary once named only the case closest to the roofline, never the user's own implementation's time
    from normbench.publish.terminal import bench_summary_lines

    mine = "mykernels.AVeryLongFusedLayerNormNameThatGoesOnAndOnForTheWholeWidth"
    entries = [entry("torch.nn.LayerNorm", "eager", 2e-3), entry(mine, "eager", 1e-3), entry(mine, "compile", 4e-3),
               {**entry("roofline", "eager", 1e-3), "family": "roofline"}]
    lines = bench_summary_lines(entries, 120)
    assert max(map(len, lines)) <= 120
    text = "\n".join(lines)
    assert "median ms" in text and "GB/s" in text and "× baseline" in text
    assert not any(line.startswith("roofline") for line in lines)  # the harness copy is not an implementation
    rows = {line.split()[0][:20]: line.split() for line in lines[2:5]}
    assert rows["torch.nn.LayerNorm"][-1] == "1.00x" and rows["torch.nn.LayerNorm"][-4] == "2"
    eager, compiled = (line.split() for line in lines[2:5] if line.startswith("mykernels"))  # eager first
    assert eager[1] == "eager" and eager[-1] == "2.00x" and eager[-3] == "8.0"  # 8 GB/s at 1 ms
    # compiled against the compiled baseline only, which this session did not time
    assert compiled[1] == "compile" and compiled[-1] == "-" and "was not timed in this session" in text
