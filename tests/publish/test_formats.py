"""Every publisher renders the same leaderboard: markdown, CSV, static HTML, PNG plots with the roofline."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from factories.records import records

from normbench.board.build import build_leaderboard
from normbench.board.model import Leaderboard
from normbench.publish import PUBLISHERS, publish_all, write_leaderboard
from normbench.publish._format import cell
from normbench.publish.terminal import TerminalPublisher, summary_lines, totals_line
from normbench.store.write import store_record


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    board = build_leaderboard(records("m1") + records("m2", speed=2.0))
    return out, board, publish_all(board, out)


def test_every_publisher_has_a_name_and_writes_files(published):
    out, _, written = published
    # in the order they run: plots before the pages that link them, badges before the site that shows them
    assert [p.name for p in PUBLISHERS] == ["png", "md", "csv", "html", "badges", "site", "terminal", "ecosystem"]
    assert [p.name for p in PUBLISHERS if p.default] == ["png", "md", "csv", "html", "badges", "site"]
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


class _Stray:
    """A publisher that writes a file it does not declare among its outputs."""

    name, outputs, default = "stray", ("stray/*.txt",), True

    def __init__(self, file: str) -> None:
        self.file = file

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        path = out_dir / self.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        return [path]


def test_a_publisher_writing_outside_its_outputs_is_refused(tmp_path):
    board = build_leaderboard(records("m1"))
    assert publish_all(board, tmp_path, publishers=(_Stray("stray/ok.txt"),)) == [tmp_path / "stray" / "ok.txt"]
    with pytest.raises(ValueError, match=r"publisher 'stray' wrote .*LEADERBOARD.md, outside its outputs"):
        publish_all(board, tmp_path, publishers=(_Stray("LEADERBOARD.md"),))


def test_every_default_publisher_writes_only_its_outputs(published):
    # the fixture ran publish_all, which checks each file against its publisher's outputs; every output is used
    out, _, written = published
    names = [p.relative_to(out).as_posix() for p in written]
    for publisher in PUBLISHERS:
        if publisher.default:
            assert all(any(Path(n).match(glob) for n in names) for glob in publisher.outputs), publisher.name


def test_terminal_and_ecosystem_run_only_where_named(tmp_path, capsys, monkeypatch):
    board = build_leaderboard(records("m1") + records("m2"))
    publish_all(board, tmp_path)
    assert not (tmp_path / "ECOSYSTEM.md").exists() and capsys.readouterr().out == ""
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((100, 40)))
    assert publish_all(board, tmp_path, ["terminal"]) == []
    # per machine: its description, then the rows and the totals a run prints for the same outcomes
    expected = []
    for machine in board.machines:
        outcomes = board.outcomes[machine.machine_id]
        expected += [f"{machine.label} {machine.machine_id}: {machine.description}", *summary_lines(outcomes, 100),
                     totals_line(outcomes)]
    assert capsys.readouterr().out.splitlines() == expected
    assert "fast.broken" in "\n".join(expected) and expected[0].startswith("M1 m1: ")
    assert TerminalPublisher().lines(build_leaderboard([]), 100) == ["no conformance items were judged"]
