"""Every publisher renders the same leaderboard: markdown, CSV, static HTML, PNG plots with the roofline."""

from __future__ import annotations

import csv

import pytest
from factories.records import records

from normbench.board.build import build_leaderboard
from normbench.publish import PUBLISHERS, publish_all, write_leaderboard
from normbench.publish._format import cell
from normbench.store.write import store_record


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    board = build_leaderboard(records("m1") + records("m2", speed=2.0))
    return out, board, publish_all(board, out)


def test_every_publisher_has_a_name_and_writes_files(published):
    out, _, written = published
    assert set(PUBLISHERS) == {"png", "md", "csv", "html", "badges", "site"}
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"LEADERBOARD.md", "LEADERBOARD.html", "csv/ranking.csv", "csv/performance-layernorm.csv",
            "plots/layernorm-cpu-m1.png", "plots/layernorm-cpu-m2.png"} <= names


def test_markdown_has_the_tables_and_links_the_plots(published):
    out, _, _ = published
    text = (out / "LEADERBOARD.md").read_text()
    for heading in ("## Combined ranking", "## Accuracy against the float64 truth", "## Performance: layernorm",
                    "## Claims lab", "## Machines"):
        assert heading in text
    assert "(plots/layernorm-cpu-m1.png)" in text and "| slow.correct" in text


def test_csv_keeps_raw_numbers(published):
    out, board, _ = published
    with (out / "csv" / "performance-layernorm.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == board.table("performance-layernorm").headers
    assert "4.0" in rows[1] + rows[2] + rows[3] + rows[4]


def test_html_is_one_static_page(published):
    out, _, _ = published
    page = (out / "LEADERBOARD.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "<img src='plots/layernorm-cpu-m1.png'" in page and "<table>" in page


def test_png_is_a_real_image(published):
    out, _, _ = published
    assert (out / "plots" / "layernorm-cpu-m1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_choice_and_unknown_format(tmp_path):
    board = build_leaderboard(records("m1"))
    assert [p.name for p in publish_all(board, tmp_path, ["md"])] == ["LEADERBOARD.md"]
    with pytest.raises(ValueError, match="unknown leaderboard format"):
        publish_all(board, tmp_path, ["pdf"])


def test_write_leaderboard_lists_refused_records(tmp_path):
    for record in records("m1"):
        store_record(tmp_path, record)
    (tmp_path / "raw" / "m1" / "future.json").write_text('{"api_version": 7, "kind": "benchmark"}')
    text = write_leaderboard(tmp_path).read_text()
    assert "## Refused records" in text and "api_version 7" in text and "## Combined ranking" in text


def test_cells():
    assert [cell(None), cell(3), cell(1234.56), cell(12.345), cell(0.012345), cell("x")] == \
        ["", "3", "1235", "12.3", "0.0123", "x"]
