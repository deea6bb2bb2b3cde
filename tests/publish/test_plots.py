"""The performance plots the site shows: the median with its IQR as error bars, from the stored
gbps_q1 / gbps_q3; an untrusted timing drawn apart and named in the legend; one legend below the panels, where it
covers no line; the machine named by what it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import pytest
from factories.records import records

from normbench.board.build import build_leaderboard
from normbench.publish.bench_entries import bench_entries
from normbench.publish.machine_labels import machine_labels
from normbench.publish.plots import PlotPublisher, plot_title, point_stats
from normbench.store.scan import scan_records
from normbench.store.write import store_record

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    shutil.copytree(ROOT / "results" / "raw", out / "raw")
    board = build_leaderboard(scan_records(out)[0])
    return board, bench_entries(board, out)


def _stats(board, entries, family: str):
    (spec,) = [p for p in board.plots if p.name.startswith(f"{family}-cpu-")]
    machine = board.machines[0]
    return spec, machine, point_stats(spec, machine.machine_id, entries[machine.machine_id])


def test_every_point_finds_its_stored_spread(committed):
    board, entries = committed
    for family in ("layernorm", "batchnorm"):  # per token (hidden size) and per channel (element count)
        spec, _, stats = _stats(board, entries, family)
        points = [(p, s, x, y) for p, series in spec.panels.items() for s in series for x, y in s.points]
        assert points
        for pass_name, s, x, y in points:
            found = stats[(pass_name, s.implementation, s.dtype, s.variant, float(x), float(y))]
            assert found.q1 is not None and found.q1 <= y <= found.q3


def test_error_bars_and_one_legend_below_every_panel(committed):
    import matplotlib.pyplot as plt

    board, entries = committed
    spec, machine, stats = _stats(board, entries, "layernorm")
    fig = PlotPublisher().figure(spec, stats, plot_title(spec, machine, machine_labels(board.machines)))
    try:
        fig.canvas.draw()
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 4 and all(ax.get_legend() is None for ax in axes)  # no legend over the lines
        (legend,) = fig.legends
        lowest = min(ax.get_window_extent().y0 for ax in axes)
        assert legend.get_window_extent().y1 <= lowest  # below every panel, outside the axes
        for ax in axes:
            bars = [c for c in ax.containers if c.has_yerr]
            assert bars and any(len(seg) for c in bars for seg in [c.lines[2][0].get_segments()])
        assert fig._suptitle.get_text() == "layernorm on cpu · AMD EPYC · 2 cores · torch 2.13.0+cpu"
        texts = [t.get_text() for t in legend.get_texts()]
        assert "torch.nn.LayerNorm float32" in texts and "untrusted timing (not ranked)" not in texts
    finally:
        plt.close(fig)


def test_an_untrusted_timing_is_drawn_apart_and_named(tmp_path):
    import matplotlib.pyplot as plt

    recs = records("m1")
    for e in recs[1]["results"].values():
        if e["implementation"] == "fast.broken":
            e["untrusted"] = "timed faster than the parent's clock allows"
    for r in recs:
        store_record(tmp_path, r)
    board = build_leaderboard(scan_records(tmp_path)[0])
    board.bench = {}  # read from raw/, as a board that keeps no entries
    (spec,) = board.plots
    machine = board.machines[0]
    stats = point_stats(spec, machine.machine_id, bench_entries(board, tmp_path)[machine.machine_id])
    assert [k[1] for k, v in stats.items() if v.untrusted] == ["fast.broken"]
    fig = PlotPublisher().figure(spec, stats)
    try:
        assert "untrusted timing (not ranked)" in [t.get_text() for t in fig.legends[0].get_texts()]
    finally:
        plt.close(fig)
    written = PlotPublisher().publish(board, tmp_path)
    assert written and written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
